"""Bad input fails before any work, in one line that names the bad value and the fix, and
leaves nothing behind; flags that would be silently ignored are refused.

Found by an audit of the command line: each case here was a traceback, a late failure, a
leftover run folder or a flag dropped without a word.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import pytest
import torch

from hardattn import checkpoint as ckpt
from hardattn.config import TrainConfig

TINY = dict(agent="reinforce", env="GlimpseMNIST-v0", device="cpu", batch_size=16,
            total_images=16 * 3, eval_every=3, eval_size=100, test_size=100, eval_batch=100,
            log_every=1, image_every=3, grad_stats_every=0, checkpoint_every=3, progress=False,
            threads=1, core_hidden=32, glimpse_hidden=32, what_hidden=16, where_hidden=16)


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hardattn.cli", *args], capture_output=True,
                          text=True, cwd=cwd)


def one_line_error(out: subprocess.CompletedProcess, *named: str) -> None:
    assert out.returncode != 0, out.stdout
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    for n in named:
        assert n in lines[0], (n, lines[0])


# ----------------------------------------------------------------------------- config fields
@pytest.mark.parametrize("kw, flag", [
    (dict(gamma=1.5), "--gamma=1.5"), (dict(gae_lambda=-0.1), "--gae-lambda=-0.1"),
    (dict(ema_decay=1.0), "--ema-decay=1.0"), (dict(std=0.0), "--std=0.0"),
    (dict(std_end=3.0), "--std-end=3.0"), (dict(max_grad_norm=-1.0), "--max-grad-norm=-1.0"),
    (dict(value_coef=-1.0), "--value-coef"), (dict(reinforce_coef=-1.0), "--reinforce-coef"),
    (dict(n_glimpses=1), "--n-glimpses=1"), (dict(epochs=0.0, total_images=None), "--epochs=0.0"),
    # Wrong types: they failed late with a TypeError, or trained with the string.
    (dict(std="abc"), "--std='abc' must be a number"),
    (dict(lr_decay="maybe"), "--lr-decay='maybe' must be true or false"),
    (dict(batch_size=16.0), "--batch-size=16.0 must be an integer"),
    (dict(core_hidden=True), "--core-hidden=True must be an integer"),
    (dict(run_dir=3), "--run-dir=3 must be a string"),
    (dict(seed=-1), "--seed=-1 must be an integer >= 0"),
    (dict(total_images=10), "--total-images=10 is less than one batch (--batch-size=16)"),
])
def test_bad_fields_name_the_flag(kw, flag):
    from hardattn.agents.run import registered_ids

    with pytest.raises(ValueError, match=flag.replace(".", r"\.").replace("(", r"\(")
                       .replace(")", r"\)")):
        TrainConfig(**{**TINY, **kw}).validate(registered_ids())


def test_a_negative_seed_leaves_no_run_folder(data_root, tmp_path):
    out = cli("train", "--seed", "-1", "--device", "cpu", "--run-dir", str(tmp_path / "run"),
              "--no-progress")
    one_line_error(out, "--seed=-1")
    assert not (tmp_path / "run").exists()


def test_compare_refuses_an_override_of_the_wrong_type_before_training(data_root, tmp_path):
    out = cli("compare", "--preset", "mnist28", "--agents", "reinforce", "--seeds", "1",
              "--device", "cpu", "--out", str(tmp_path / "cmp"), "--overrides",
              "reinforce.std=abc")
    one_line_error(out, "--std='abc'")
    assert not list((tmp_path / "cmp").glob("*/config.json"))


# ----------------------------------------------------------------------------- flags a run drops
def finished_run(tmp_path):
    from hardattn.agents.run import train

    cfg = TrainConfig(**{**TINY, "total_images": 16 * 6, "run_dir": str(tmp_path / "run")})
    train(cfg)
    return cfg


@pytest.mark.parametrize("extra, named", [
    (dict(lr=0.5), "--lr=0.5"),
    (dict(total_images=1000), "--total-images=1000"),
    (dict(agent="draw"), "--agent='draw'"),
    (dict(init_from="X"), "--init-from"),
    (dict(from_run="X"), "--from-run"),
])
def test_resume_refuses_flags_it_would_ignore(data_root, tmp_path, extra, named):
    from hardattn.agents.run import train

    cfg = finished_run(tmp_path)
    for p in (tmp_path / "run" / "checkpoints").glob("ckpt_00000005.pt"):
        p.unlink()  # unfinished: resumable from update 2
    (tmp_path / "run" / "report.json").unlink()
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        train(TrainConfig(resume=str(tmp_path / "run"), progress=False, **extra))
    # The same config, or only the flags that may change, resume.
    train(dataclasses.replace(cfg, resume=str(tmp_path / "run"), threads=1))


@pytest.mark.parametrize("extra, named", [
    (dict(seed=5), "--seed=5"), (dict(init_from="X"), "--init-from"),
])
def test_from_run_refuses_flags_it_would_ignore(data_root, tmp_path, extra, named):
    from hardattn.agents.run import train

    finished_run(tmp_path)
    with pytest.raises(ValueError, match=named):
        train(TrainConfig(from_run=str(tmp_path / "run"), run_dir=str(tmp_path / "again"),
                          progress=False, **extra))
    assert not (tmp_path / "again").exists()


def test_init_from_weights_that_do_not_fit_leave_no_run_folder(data_root, tmp_path):
    from hardattn.agents.run import train

    finished_run(tmp_path)
    new = tmp_path / "new"
    bad = TrainConfig(**{**TINY, "core_hidden": 64, "run_dir": str(new),
                         "init_from": str(tmp_path / "run")})
    with pytest.raises(ValueError, match="do not fit"):
        train(bad)
    assert not new.exists()
    # The same folder then takes the corrected command.
    train(dataclasses.replace(bad, core_hidden=32))
    assert (new / "report.json").exists()


def test_runs_started_in_the_same_second_get_their_own_folders(data_root, tmp_path, monkeypatch):
    from hardattn.agents import run as run_mod

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run_mod, "run_name", lambda *a, **k: "GlimpseMNIST-v0__reinforce__0__t")
    a = run_mod.train(TrainConfig(**TINY))
    b = run_mod.train(TrainConfig(**TINY))
    assert a["run_dir"] != b["run_dir"]
    assert json.loads((tmp_path / a["run_dir"] / "report.json").read_text())["run_dir"] == \
        a["run_dir"]


# ----------------------------------------------------------------------------- eval and bench
def test_eval_names_an_sb3_checkpoint(data_root, tmp_path):
    from hardattn.agents.run import train

    train(TrainConfig(agent="sb3-ppo", env="GlimpseMNIST-v0", device="cpu", batch_size=16,
                      total_images=32, eval_every=1, eval_size=100, test_size=100,
                      eval_batch=100, log_every=1, checkpoint_every=1, progress=False, threads=1,
                      glimpse_hidden=32, what_hidden=32, where_hidden=32,
                      run_dir=str(tmp_path / "sb3")))
    for target in (tmp_path / "sb3", ckpt.periodic_checkpoints(tmp_path / "sb3" /
                                                               "checkpoints")[-1]):
        one_line_error(cli("eval", "--checkpoint", str(target), "--device", "cpu"),
                       "Stable-Baselines3", "report.json")


@pytest.mark.parametrize("cmd", ["eval", "bench"])
def test_an_unknown_device_is_named(tmp_path, cmd):
    args = ["--checkpoint", str(tmp_path)] if cmd == "eval" else ["--presets", "mnist28"]
    one_line_error(cli(cmd, *args, "--device", "tpu"), "--device='tpu'", "auto, cpu, cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_without_cuda_is_named(tmp_path):
    one_line_error(cli("bench", "--presets", "mnist28", "--device", "cuda"),
                   "CUDA is not available")


@pytest.mark.parametrize("args, named", [
    (["--threads", "-1"], "--threads=-1"),
    (["--updates", "0"], "--updates=0"),
    (["--repeats", "0"], "--repeats=0"),
    (["--presets", "mnist28,foo"], "'foo'"),
    (["--out", "AFILE"], "--out"),
])
def test_bench_checks_its_flags_before_timing(tmp_path, args, named):
    (tmp_path / "AFILE").write_text("x")
    out = cli("bench", "--device", "cpu", "--repeats", "1", "--updates", "1", "--no-profile",
              *args, cwd=tmp_path)
    one_line_error(out, named)
    assert "images/s" not in out.stdout  # nothing was timed


def test_a_logger_without_a_folder_writes_nothing(tmp_path, monkeypatch):
    """torchrun ranks > 0 log into it (they left a temporary folder of events per run)."""
    from hardattn.logger import Logger

    monkeypatch.chdir(tmp_path)
    log = Logger(None)
    log.record("a/b", 1.0)
    assert log.dump(3) == {"a/b": 1.0}
    log.image("i", torch.zeros(4, 4, 3, dtype=torch.uint8).numpy(), 3)
    log.histogram("h", torch.zeros(3), 3)
    log.text("t", "x")
    log.hparams({"x": 1}, {"y": 2.0})
    log.flush()
    log.close()
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("kw, named", [
    (dict(score="dot"), "--score='dot' is for --agent soft-cnn"),
    (dict(feature_channels=8), "--feature-channels=8 is for --agent soft-cnn"),
    (dict(draw_grid=4), "--draw-grid=4 is for --agent draw"),
    (dict(cnn_channels=4), "--cnn-channels=4 is for --agent cnn"),
    (dict(fc_hidden=32), "--fc-hidden=32 is for --agent cnn, mlp"),
    (dict(read_score="dot"), "--read-score='dot' is for --agent hard-read"),
    (dict(sab_k_top=3), "--sab-k-top=3 is for --agent sab"),
    (dict(agent="hard-read", env="AssociativeRecall-v0", memory_T=50),
     "--memory-T=50 is for --env CopyMemory-v0"),
    (dict(agent="hard-read", env="AssociativeRecall-v0", eval_T=999),
     "--eval-T=999 is for --env CopyMemory-v0"),
])
def test_flags_of_other_agents_or_envs_are_refused(kw, named):
    """They were accepted and ignored (SB3 alone refused what it does not use)."""
    from hardattn.agents.run import registered_ids

    cfg = TrainConfig(**{**TINY, **kw})
    with pytest.raises(ValueError, match=re.escape(named)):
        cfg.validate(registered_ids(cfg.agent))


def test_a_memory_env_for_a_glimpse_agent_names_the_memory_agents():
    from hardattn.agents.run import preflight

    with pytest.raises(ValueError, match=r"CopyMemory-v0.* memory env.*--agent hard-read"):
        preflight(TrainConfig(**{**TINY, "env": "CopyMemory-v0"}))


def test_resume_of_a_missing_path_says_it_does_not_exist(tmp_path):
    one_line_error(cli("train", "--resume", str(tmp_path / "nope"), "--device", "cpu"),
                   str(tmp_path / "nope"), "does not exist")


def test_a_finished_run_dir_names_init_from_not_resume(data_root, tmp_path):
    from hardattn.agents.run import train

    cfg = finished_run(tmp_path)
    with pytest.raises(ValueError, match=r"finished.*--init-from") as err:
        train(dataclasses.replace(cfg, seed=1))
    assert "--resume" not in str(err.value)


def test_data_help_lists_the_data_commands():
    out = cli("data", "--help")
    assert out.returncode == 0, out.stderr
    assert "data preview" in out.stdout


@pytest.mark.parametrize("cmd", ["compare", "eval"])
def test_an_out_folder_that_is_a_file_is_named(data_root, tmp_path, cmd):
    (tmp_path / "afile").write_text("x")
    if cmd == "compare":
        args = ["compare", "--preset", "mnist28", "--agents", "cnn", "--seeds", "1",
                "--device", "cpu", "--out", str(tmp_path / "afile")]
    else:

        cfg = finished_run(tmp_path)
        args = ["eval", "--checkpoint", cfg.run_dir, "--device", "cpu", "--n", "100",
                "--out", str(tmp_path / "afile")]
    one_line_error(cli(*args), "--out", "is a file")


# ----------------------------------------------------------------------------- review findings
def test_a_run_started_with_init_from_resumes_with_it(data_root, tmp_path):
    """The memory benchmarks' curriculum stages resume with their --init-from (a regression
    of the ignored-flags check); another --init-from is still refused."""
    from hardattn.agents.run import train

    cfg = finished_run(tmp_path)
    stage = TrainConfig(**{**TINY, "total_images": 16 * 6, "run_dir": str(tmp_path / "stage"),
                           "init_from": cfg.run_dir})
    train(stage)
    (tmp_path / "stage" / "report.json").unlink()
    for p in (tmp_path / "stage" / "checkpoints").glob("ckpt_00000005.pt"):
        p.unlink()
    with pytest.raises(ValueError, match=r"--init-from='elsewhere'"):
        train(dataclasses.replace(stage, resume=str(tmp_path / "stage"), init_from="elsewhere"))
    train(dataclasses.replace(stage, resume=str(tmp_path / "stage")))
    assert (tmp_path / "stage" / "report.json").exists()


def test_the_default_budget_below_one_batch_names_the_epoch():
    with pytest.raises(ValueError, match=r"default budget.*1 epoch.*50000.*--total-images"):
        TrainConfig(**{**TINY, "total_images": None, "batch_size": 65536}).validate()


def test_bench_takes_a_batch_larger_than_an_epoch(tmp_path, monkeypatch):
    """Its checks before timing validated the time-to-accuracy config with the default
    one-epoch budget, so a batch above 50,000 was refused with a flag bench does not have."""
    from hardattn.agents import bench

    class Timed(Exception):
        pass

    def measure(*args, **kwargs):
        raise Timed

    monkeypatch.setattr(bench, "measure_preset", measure)
    with pytest.raises(Timed):  # every check passed: timing began
        bench.bench(bench.BenchConfig(batch_size=65536, presets="mnist28", device="cpu",
                                      threads=1, out=str(tmp_path)))


def test_numpy_scalars_from_a_sweep_are_plain_numbers(data_root, tmp_path):
    """Sweeps (numpy grids, Ray Tune) hand numpy scalars: they were refused as "not an
    integer", and before that check they broke config.json."""
    import numpy as np

    from hardattn.agents.run import train

    cfg = TrainConfig(**{**TINY, "seed": np.int64(1), "lr": np.float32(2e-3),
                         "batch_size": np.int32(16), "run_dir": str(tmp_path / "run")})
    assert type(cfg.seed) is int and type(cfg.lr) is float and type(cfg.batch_size) is int
    assert cfg.lr == pytest.approx(2e-3)
    train(cfg)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["seed"] == 1
