"""``hardattn eval``: score a checkpoint on the fixed validation or test canvases."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hardattn import checkpoint as ckpt
from hardattn import data
from hardattn.config import MEMORY_AGENTS, SOFT_AGENTS, TrainConfig

from .ram_common import Evaluator, glimpse_paths_image, make_env, make_model
from .run import resolve_device


@dataclass(frozen=True)
class EvalConfig:
    """Evaluate a checkpoint (deterministic policy unless --mc-samples > 1)."""

    checkpoint: str
    """A checkpoint file (best.pt, ckpt_*.pt) or a run folder (its best.pt)."""
    split: Literal["val", "test"] = "test"
    """Fixed canvases to score: val (model selection) or test (the report)."""
    mc_samples: int = 1
    """M > 1 averages class probabilities over M stochastic glimpse paths (labelled)."""
    n: int = 10_000
    """Number of canvases: the fixed set of that size (10000, the default: every digit of the
    split once; a smaller n is a set of its own, of distinct digits, not the first n)."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    out: str | None = None
    """Folder for eval_<split>.json and the glimpse-path PNG (default: the run folder)."""
    eval_T: int | None = None
    """CopyMemory runs: score at this delay instead of the trained one (transfer to longer
    sequences, SAB's table); writes eval_<split>_T<eval_T>.json."""


def evaluate(cfg: EvalConfig) -> dict:
    """Score the checkpoint; print the error, write a JSON and a PNG of glimpse paths."""
    if cfg.mc_samples < 1:
        raise ValueError(f"--mc-samples={cfg.mc_samples} must be >= 1")
    if not 1 <= cfg.n <= 10_000:
        raise ValueError(f"--n={cfg.n} must be in [1, 10000]")
    device = resolve_device(cfg.device)  # a bad --device fails before any reading
    if cfg.out is not None and Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise ValueError(f"--out={cfg.out!r} is a file; give a folder for the JSON and PNG")
    path = Path(cfg.checkpoint)
    sb3 = (f"{str(path)!r} is a Stable-Baselines3 run's; its report.json holds the "
           f"validation-selected test error (hardattn eval scores the agents' own .pt models)")
    if path.is_dir():
        if (path / "checkpoints" / "best.zip").exists():
            raise ValueError(sb3)
        path = path / "checkpoints" / "best.pt"
    if path.name.endswith(".zip"):
        raise ValueError(sb3)
    state = ckpt.load_checkpoint(path)
    if "model" not in state:  # an SB3 run's periodic .pt holds its trainer state, no model
        raise ValueError(sb3)
    train_cfg = TrainConfig.from_dict(state["config"])
    if cfg.eval_T is not None and not (train_cfg.agent in MEMORY_AGENTS
                                       and "CopyMemory" in train_cfg.env_id):
        raise ValueError(f"--eval-T={cfg.eval_T} is for CopyMemory runs of the memory agents; "
                         f"{str(path)!r} is --agent {train_cfg.agent} on {train_cfg.env_id}: "
                         f"leave --eval-T out")
    if cfg.eval_T is not None and (isinstance(cfg.eval_T, bool) or cfg.eval_T < 1):
        raise ValueError(f"--eval-T={cfg.eval_T!r} must be an integer >= 1")
    if train_cfg.agent in SOFT_AGENTS:
        return _evaluate_backprop(cfg, path, state, train_cfg)
    if train_cfg.agent in MEMORY_AGENTS:
        batch = min(train_cfg.eval_batch, cfg.n)
        if cfg.n % batch:  # its episodes are drawn batch by batch from the seeded env
            raise ValueError(f"--n={cfg.n} must be a multiple of {batch} for this memory run "
                             f"(its evaluation batch, --eval-batch of training); use "
                             f"--n {cfg.n // batch * batch or batch}")
        return _evaluate_memory(cfg, path, state, train_cfg)
    train_cfg = TrainConfig.from_dict({**train_cfg.to_dict(),
                                       "eval_batch": min(train_cfg.eval_batch, cfg.n)})
    model = make_model(train_cfg, make_env(train_cfg, device, 1)).to(device)
    model.load_state_dict(state["model"])
    evaluator = Evaluator(train_cfg, device, cfg.split, cfg.n)
    std = float(model.location.log_std.exp().mean()) if model.location.learn_std else \
        train_cfg.std_end if train_cfg.std_schedule == "linear" else train_cfg.std
    res = evaluator(model, mc_samples=cfg.mc_samples, std=std)
    img = glimpse_paths_image(evaluator.images[:8], res["locs"], evaluator.env.cfg)
    return _report(cfg, path, state, res, img)


def _report(cfg: EvalConfig, path: Path, state: dict, res: dict, picture) -> dict:
    out_dir = Path(cfg.out) if cfg.out else path.parent.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"checkpoint": str(path), "split": cfg.split, "n": cfg.n,
              "mc_samples": cfg.mc_samples, "error_pct": res["error"],
              "accuracy_pct": res["accuracy"], "update": state.get("update")}
    if "ce" in res:
        report["ce"] = res["ce"]
    name = f"eval_{cfg.split}"
    if cfg.eval_T is not None:
        report["eval_T"] = cfg.eval_T
        name += f"_T{cfg.eval_T}"
    (out_dir / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if picture is not None:  # memory readers have no picture
        plt.imsave(out_dir / f"eval_{cfg.split}_glimpses.png", picture)
    policy = "deterministic policy" if cfg.mc_samples == 1 else \
        f"stochastic policy, class probabilities averaged over {cfg.mc_samples} paths"
    what = "canvases" if picture is not None else "episodes" + (
        f" of delay T={cfg.eval_T}" if cfg.eval_T is not None else "")
    print(f"hardattn eval: {cfg.split} error {res['error']:.2f}% on {cfg.n} {what} "
          f"({policy}); wrote {out_dir / f'{name}.json'}")
    return report


def _evaluate_backprop(cfg: EvalConfig, path: Path, state: dict, train_cfg: TrainConfig) -> dict:
    """The soft and full-image baselines: deterministic, the same fixed canvases."""
    from . import soft_common as sc

    if cfg.mc_samples != 1:
        raise ValueError(f"--mc-samples={cfg.mc_samples}: the backprop agent "
                         f"{train_cfg.agent!r} is deterministic; use --mc-samples 1")
    device = resolve_device(cfg.device)
    task = sc.task_config(train_cfg)
    model = sc.make_model(train_cfg, task)
    model.load_state_dict(state["model"])
    model = model.to(device).eval()
    batch_cfg = TrainConfig.from_dict({**train_cfg.to_dict(),
                                       "eval_batch": min(train_cfg.eval_batch, cfg.n)})
    evaluator = sc.SoftEvaluator(batch_cfg, task, device, cfg.split, cfg.n)
    return _report(cfg, path, state, evaluator(model), evaluator.picture(model))


def _evaluate_memory(cfg: EvalConfig, path: Path, state: dict, train_cfg: TrainConfig) -> dict:
    """Memory readers: greedy (argmax) reads on the fixed seeded val or test episodes."""
    from . import memory_common as mc
    from . import memory_readers as mr

    if cfg.mc_samples != 1:
        raise ValueError(f"--mc-samples={cfg.mc_samples}: memory readers are scored with argmax "
                         f"reads; use --mc-samples 1")
    device = resolve_device(cfg.device)
    over = {"eval_T": cfg.eval_T} if cfg.eval_T is not None else {}
    batch_cfg = TrainConfig.from_dict({**train_cfg.to_dict(),
                                       "eval_batch": min(train_cfg.eval_batch, cfg.n), **over})
    model = mr.make_model(batch_cfg, mc.make_env(batch_cfg, device, 1)).to(device)
    model.load_state_dict(state["model"])
    res = mc.MemoryEvaluator(batch_cfg, device, cfg.split, cfg.n)(model, mr.rollout)
    return _report(cfg, path, state, res, None)


def rescore_report(run_dir: str | Path, device: str = "auto") -> dict:
    """A finished run's ``report.json``, its test error scored again if older canvases scored it.

    Reports carry ``canvas_set_version`` (``hardattn.data.GENERATOR_VERSION``); those without it
    are version 1, whose fixed sets drew their digits with replacement, so a full test set
    missed about a third of the official test digits. Such a report gets the test error of the
    same ``best.pt`` on today's test set, with the same evaluation as at the end of training;
    the earlier figure stays under ``test_error_pct_by_canvas_set``. The selection is kept: it
    read only validation canvases (of the earlier version, as ``val_error_pct`` does).
    Memory-task reports, Stable-Baselines3 runs and current reports are returned unchanged.
    """
    run_dir = Path(run_dir)
    report_file = run_dir / "report.json"
    report = json.loads(report_file.read_text())
    version = report.get("canvas_set_version", 1)
    best = run_dir / "checkpoints" / "best.pt"
    if (version == data.GENERATOR_VERSION or report.get("agent") in MEMORY_AGENTS
            or not best.is_file()):
        return report
    with tempfile.TemporaryDirectory() as scratch:  # the eval JSON and PNG are not kept
        res = evaluate(EvalConfig(checkpoint=str(best), split="test", n=report["test_size"],
                                  device=device, out=scratch))
    by_set = dict(report.get("test_error_pct_by_canvas_set", {}))
    by_set.setdefault(str(version), report["test_error_pct"])
    by_set[str(data.GENERATOR_VERSION)] = res["error_pct"]
    report.update(test_error_pct=res["error_pct"], canvas_set_version=data.GENERATOR_VERSION,
                  test_error_pct_by_canvas_set=by_set,
                  val_canvas_set_version=report.get("val_canvas_set_version", version))
    tmp = report_file.with_suffix(f".json.tmp{os.getpid()}")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, report_file)  # atomic: a crash leaves the old report or the new one
    return report
