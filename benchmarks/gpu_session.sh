#!/usr/bin/env bash
# The GPU measurements of the speed and compare benchmarks, for a session that is lent a GPU
# machine with no network (the `device` tool: torch, CUDA and tensorboard installed; our
# other dependencies and MNIST are not). Each stage fits one 10-minute device call.
#
# Here, once per session (network to the package registries, ../shared beside the repo):
#   bash benchmarks/gpu_session.sh prepare
#     -> .whl/     the wheels the device image lacks, and hardattn's own (git-ignored)
#     -> .gpudata/ MNIST's four official files, gzip'd (git-ignored; never committed)
# There, one stage per call, carrying .whl and .gpudata:
#   bash benchmarks/gpu_session.sh check      # CUDA visible, the test suite on the GPU machine
#   bash benchmarks/gpu_session.sh speed      # hardattn bench --device cuda -> $OUT/speed_cuda.json
#   bash benchmarks/gpu_session.sh compare60  # the cluttered60 matrix; resumable: call again
#                                             # while the machine is warm until it says done
# Copy what comes back under files_at into benchmarks/results/ and commit it with the device
# named. A stage's figures are what it measured: nothing here is written by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
stage="${1:-}"
OUT="${OUT:-/tmp/hardattn_out}"
# The device image lacks these (KINDS.md of the device tool; its numpy, torch, tensorboard,
# matplotlib, tqdm, cloudpickle and typing-extensions are used as they are).
WHEELS=(gymnasium==1.4.0 farama-notifications==0.0.6 tyro==1.0.17 docstring-parser==0.18.0
        typeguard==4.6.0 stable-baselines3==2.9.2 sb3-contrib==2.9.2)

REPO="$(pwd)"
setup_device() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
  mkdir -p /tmp/data/MNIST/raw
  for f in .gpudata/*.gz; do
    gunzip -c "$f" > "/tmp/data/MNIST/raw/$(basename "$f" .gz)"
  done
  export HARDATTN_DATA=/tmp/data PYTHONUNBUFFERED=1
  mkdir -p "$OUT" /tmp/work
  # Outside the checkout: its hardattn/ (without envs/ and agents/, which setuptools maps in)
  # would shadow the installed package for `python3 -m ...`.
  cd /tmp/work
}

case "$stage" in
  prepare)
    rm -rf .whl .gpudata && mkdir -p .whl .gpudata
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
      -d .whl "${WHEELS[@]}"
    python3 -m pip wheel -q --no-deps -w .whl .
    for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte \
             t10k-labels-idx1-ubyte; do
      gzip -c "../shared/data/MNIST/raw/$f" > ".gpudata/$f.gz"
    done
    du -sh .whl .gpudata
    ;;
  check)
    setup_device
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    python3 -c "import torch, hardattn.envs; print('torch', torch.__version__, 'cuda',
                torch.cuda.is_available() and torch.cuda.get_device_name())"
    # PYTEST_ARGS narrows the run (a rehearsal of this script on a CPU machine).
    python3 -m pytest -q -p no:cacheprovider -c "$REPO/pyproject.toml" ${PYTEST_ARGS:-} \
      "$REPO/tests" 2>&1 | tee "$OUT/pytest_gpu.log" | tail -15
    ;;
  speed)
    setup_device
    # The CPU run's presets and variants; time to accuracy capped at 150 s per variant so that
    # the stage ends inside one call (the GPU reaches 97 % long before).
    python3 -m hardattn bench --device cuda --presets mnist28,cluttered60,cluttered100 \
      --precisions fp32,bf16 --repeats 15 --updates 10 --time-to-accuracy-s 150 \
      --time-to-accuracy-variants default scales=2,augment_shift=2 \
      scales=2,augment_shift=2,precision=bf16 --out "$OUT" 2>&1 | tail -40
    ;;
  compare60)
    setup_device
    # Resumable: a finished run is skipped, an interrupted one resumes from its checkpoint.
    # Stopped before the 10-minute limit so that the last checkpoint is written.
    # 8 runs share the GPU (a batch-128 run leaves most of it idle), 2 CPU threads each.
    timeout --signal=INT -k 40 540 python3 "$REPO/benchmarks/compare_cluttered60.py" --seeds 3 \
      --device cuda --jobs 8 --threads 2 --runs "$REPO/runs/compare-cluttered60-gpu" \
      --results "$OUT" \
      --overrides reinforce.std=0.25 actor-critic.std=0.25 soft-cnn.attention_dim=64 \
      2>&1 | tail -30 || echo "compare60: not finished; call this stage again"
    ;;
  *)
    echo "usage: bash benchmarks/gpu_session.sh prepare|check|speed|compare60" >&2
    exit 2
    ;;
esac
