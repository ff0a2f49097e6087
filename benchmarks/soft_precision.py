"""``--precision bf16`` for the backprop feature extractors: training images/s against float32.

For each agent (default ``soft-cnn``, ``cnn``, ``mlp``; the networks of ``hardattn train``,
``soft-cnn`` with ``--attention-dim 64`` as in the compare benchmarks) and each preset
(default ``cluttered60``, ``cluttered100``), times the training update of
``hardattn train --agent <agent>`` (forward in the precision, float32 cross-entropy, backward,
gradient clipping, fused Adam) on fixed canvases of one batch, the two precisions interleaved
repeat by repeat so that a load change on the shared machine hits both. Metrics, labelled
``agent``, ``preset``, ``precision`` (and ``batch_size``):

- ``images_per_s``: batch size x updates / wall seconds of a repeat; median over repeats;
- ``ratio`` (``labels.of = bf16``, ``labels.to = fp32``): bf16 images/s over fp32 images/s of
  the same repeat.

The speed-up needs bfloat16 matrix units (AVX512-BF16 or AMX on the CPU, tensor cores on a
GPU); elsewhere bf16 is emulated and slower, and the JSON says so. Whether training in bf16
reaches the same error is a learning question, not timed here (README: a one-seed check).

Run: ``python benchmarks/soft_precision.py [--agents soft-cnn,cnn,mlp]
[--presets cluttered60,cluttered100] [--batch-size 128] [--repeats 7] [--updates 3]
[--threads 1] [--device cpu]``. Writes ``benchmarks/results/soft_precision_<cpu|cuda>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from hardattn.benchmarking import cpu_has_bf16_matmul, result, write_results
from hardattn.config import TrainConfig

PRESETS = {"mnist28": "GlimpseMNIST-v0", "cluttered60": "GlimpseCluttered60-v0",
           "cluttered100": "GlimpseCluttered100-v0"}
AGENT_FIELDS = {"soft-cnn": {"attention_dim": 64}, "cnn": {}, "mlp": {}}


def make_update(agent: str, preset: str, precision: str, batch: int, device: torch.device):
    """``(update, cfg)``: one training update of the agent on a fixed batch, as ``train``."""
    from hardattn.agents.baselines_cnn import make_model as make_baseline
    from hardattn.agents.ram_common import make_optimizer, safe_step
    from hardattn.agents.soft_cnn import make_model as make_soft_cnn
    from hardattn.agents.soft_common import (
        CanvasStream,
        classification_losses,
        task_config,
        train_autocast,
    )

    cfg = TrainConfig(agent=agent, env=PRESETS[preset], batch_size=batch, precision=precision,
                      device=device.type, **AGENT_FIELDS[agent]).validate()
    task = task_config(cfg)
    torch.manual_seed(0)
    model = (make_soft_cnn if agent == "soft-cnn" else make_baseline)(cfg, task).to(device)
    optimizer = make_optimizer(model, cfg)
    images, labels = CanvasStream(task, device, 0).sample(batch)

    def update() -> None:
        with train_autocast(cfg, device):
            out = model(images)
        safe_step(classification_losses(out, labels), model, optimizer, cfg)

    return update, cfg


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description="backprop agents: bf16 vs fp32 training images/s")
    p.add_argument("--agents", default="soft-cnn,cnn,mlp", help="comma-separated agents")
    p.add_argument("--presets", default="cluttered60,cluttered100", help="comma-separated")
    p.add_argument("--batch-size", type=int, default=128, help="canvases per update")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats (median quoted)")
    p.add_argument("--updates", type=int, default=3, help="updates per repeat")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: all cores)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = p.parse_args(argv)
    for name in ("batch_size", "repeats", "updates"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 1")
    from hardattn.agents.bench_impls import sync_device
    from hardattn.agents.run import resolve_device

    device = resolve_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows = []
    for preset in [s for s in args.presets.split(",") if s]:
        for agent in [s for s in args.agents.split(",") if s]:
            impls = {prec: make_update(agent, preset, prec, args.batch_size, device)
                     for prec in ("fp32", "bf16")}
            ips: dict[str, list[float]] = {"fp32": [], "bf16": []}
            for fn, _ in impls.values():  # warm-up: allocator, oneDNN kernels
                fn()
            for _ in range(args.repeats):
                for prec, (fn, _) in impls.items():  # interleaved, repeat by repeat
                    sync_device(device)
                    start = time.perf_counter()
                    for _ in range(args.updates):
                        fn()
                    sync_device(device)
                    ips[prec].append(args.batch_size * args.updates
                                     / (time.perf_counter() - start))
            for prec, (_, cfg) in impls.items():
                labels = {"agent": agent, "preset": preset, "precision": prec,
                          "batch_size": args.batch_size}
                rows.append(result("images_per_s", ips[prec], "images/s", True, labels,
                                   {**cfg.to_dict(), "updates_per_repeat": args.updates,
                                    "torch_threads": torch.get_num_threads(),
                                    "cpu_bf16_matmul": cpu_has_bf16_matmul()},
                                   aggregate="median"))
            ratio = [b / f for b, f in zip(ips["bf16"], ips["fp32"])]
            rows.append(result("ratio", ratio, "x", True,
                               {"of": "bf16", "to": "fp32", "agent": agent, "preset": preset,
                                "batch_size": args.batch_size}, aggregate="median"))
            print(f"{preset} {agent}: fp32 {statistics.median(ips['fp32']):.0f}, bf16 "
                  f"{statistics.median(ips['bf16']):.0f} images/s, bf16/fp32 "
                  f"{statistics.median(ratio):.2f}x", flush=True)
    return write_results(f"soft_precision_{device.type}", rows, time.perf_counter() - t0,
                         device, command="python " + " ".join(sys.argv), out_dir=args.out)


if __name__ == "__main__":
    print(main())
