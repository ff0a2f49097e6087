"""What ``hardattn compare`` makes of finished runs: the trained models behind one interface,
their costs and anytime errors, ``results.csv``/``results.md`` and the three PNGs (see
``agents/compare.py`` for the definitions of every column and picture)."""

from __future__ import annotations

import csv
import json
import statistics
import types
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from hardattn import checkpoint as ckpt
from hardattn import data, sensors
from hardattn.benchmarking import run_commit
from hardattn.config import SOFT_AGENTS, TrainConfig
from hardattn.envs.glimpse_task import GlimpseConfig

from . import soft_common as sc

if TYPE_CHECKING:
    from .compare_config import CompareConfig

CSV_COLUMNS = ("agent", "runs", "images", "test_error_pct_mean", "test_error_pct_std",
               "test_error_pct_per_seed", "val_error_pct_mean", "glimpses",
               "pixels_read_per_image", "macs_per_image", "params", "wall_s_mean",
               "images_per_s_mean")


# ----------------------------------------------------------------------------- trained models


class HardGlimpseAdapter(nn.Module):
    """A trained RAM (reinforce / actor-critic) behind the backprop agents' model interface,
    so the same evaluator, pictures and cost counter serve both families.

    Deterministic policy (location = policy mean, clamped to ``[-1, 1]`` as the env does) and
    the hard retina (``sensors.glimpse(mode="hard")``, the env's sensor), without an env.
    """

    uses_first = True

    def __init__(self, ram: nn.Module, task: GlimpseConfig) -> None:
        super().__init__()
        self.ram, self.task, self.n_steps = ram, task, task.n_glimpses

    def forward(self, images, first, noise=None, std=None, steps=None, anytime=False):
        T = steps or self.n_steps
        state = self.ram.initial_state(images.shape[0], images.device)
        loc, locs, step_logits = first, [], []
        for t in range(T):
            locs.append(loc)
            patches = sensors.glimpse(images, loc, self.task.patch, self.task.scales,
                                      self.task.scale_factor, mode="hard")
            state, h = self.ram.step(patches, loc, state)
            if anytime:
                step_logits.append(self.ram.classify(h))
            if t < T - 1:
                loc = self.ram.location_mean(h).clamp(-1.0, 1.0)
        return sc.SoftOutput(logits=self.ram.classify(h), locs=torch.stack(locs),
                             step_logits=torch.stack(step_logits) if anytime else None)

    def look(self, images, first):
        return sc.Look(locs=self(images, first).locs, boxes=True)

    def pixels_read(self, H: int, W: int) -> int:
        return self.n_steps * self.task.scales * self.task.patch**2

    def extra_macs(self, H: int, W: int) -> int:
        return self.n_steps * sc.retina_macs(self.task, soft=False)


def load_best(run_dir: Path, device: torch.device) -> tuple[TrainConfig, GlimpseConfig, nn.Module]:
    """The validation-selected model of a run (``best.pt``), in eval mode, with its task."""
    state = ckpt.load_checkpoint(run_dir / "checkpoints" / "best.pt", map_location=device)
    cfg = TrainConfig.from_dict(state["config"])
    task = sc.task_config(cfg)
    if cfg.agent in SOFT_AGENTS:
        model = sc.make_model(cfg, task)
        model.load_state_dict(state["model"])
    else:
        from .ram_common import make_model

        ram = make_model(cfg, types.SimpleNamespace(cfg=task))  # sized by the task's sensor
        ram.load_state_dict(state["model"])
        model = HardGlimpseAdapter(ram, task)
    return cfg, task, model.to(device).eval()


def analyse_run(run: dict, device: torch.device) -> dict:
    """Costs and the anytime error vs. glimpses of a finished run (cached per best model)."""
    run_dir = run["run_dir"]
    cache = run_dir / "compare_analysis.json"
    best = (run_dir / "checkpoints" / "best.pt").stat()
    # Keyed on the model file and the canvases: a retrained run or new fixed sets recompute it.
    key = {"best_update": run["report"]["best_update"], "canvas_set_version":
           data.GENERATOR_VERSION, "best_pt": [best.st_size, best.st_mtime_ns]}
    if cache.exists():
        blob = json.loads(cache.read_text())
        if all(blob.get(k) == v for k, v in key.items()):
            return blob
    cfg, task, model = load_best(run_dir, device)
    blob = {**key, **sc.model_costs(model, task), "glimpses": model.n_steps}
    if model.n_steps:
        T_max = model.n_steps + max(1, model.n_steps // 2)
        res = sc.SoftEvaluator(cfg, task, device, "val", cfg.eval_size)(model, steps=T_max,
                                                                           anytime=True)
        blob["val_error_by_glimpses"] = res["error_by_step"]
    cache.write_text(json.dumps(blob, indent=2) + "\n")
    return blob


def eval_curve(run_dir: Path) -> tuple[list[int], list[float]]:
    """``eval/error`` of a run's TensorBoard events: (training images, error %)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 1,
                                                         "histograms": 1, "tensors": 1})
    acc.Reload()
    if "eval/error" not in acc.Tags().get("scalars", []):
        return [], []
    last = {}
    for ev in acc.Scalars("eval/error"):  # a resumed run's later events win
        last[ev.step] = ev.value
    steps = sorted(last)
    return steps, [last[s] for s in steps]


# ----------------------------------------------------------------------------- outputs


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def summarise(agent: str, runs: list[dict], analyses: list[dict]) -> dict:
    """One row of results.csv."""
    tests = [r["report"]["test_error_pct"] for r in runs]
    m, s = _mean_std(tests)
    walls = [r["wall_s"] for r in runs]
    images = runs[0]["report"]["images"]
    a = analyses[0]
    return {"agent": agent, "runs": len(runs), "images": images,
            "test_error_pct_mean": m, "test_error_pct_std": s,
            "test_error_pct_per_seed": ";".join(f"{t:.2f}" for t in tests),
            "val_error_pct_mean": statistics.fmean(r["report"]["val_error_pct"] for r in runs),
            "glimpses": a["glimpses"] or "", "pixels_read_per_image": a["pixels_read_per_image"],
            "macs_per_image": a["macs_per_image"], "params": a["params"],
            "wall_s_mean": statistics.fmean(walls),
            "images_per_s_mean": statistics.fmean(images / w for w in walls)}


def _human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def write_csv(rows: list[dict], columns: tuple[str, ...], path: Path) -> None:
    """``rows`` as CSV with ``columns``; floats to 4 decimals."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})


def _commits(cfg: CompareConfig, agent: str) -> str:
    """The short commits agent's runs were trained at, in seed order, repeats merged."""
    shas = [(run_commit(cfg.out_dir() / f"{agent}__seed{s}") or "unknown")[:8]
            for s in range(cfg.seeds)]
    return ", ".join(dict.fromkeys(shas))


def write_tables(rows: list[dict], cfg: CompareConfig, results: Path, device: str,
                 rescored: dict[str, int] | None = None) -> None:
    """results.csv and results.md; ``rescored``: per agent, the runs whose test error was
    scored again on today's fixed canvases (``hardattn.agents.evaluate.rescore_report``)."""
    write_csv(rows, CSV_COLUMNS, results / "results.csv")
    rescored = {a: n for a, n in (rescored or {}).items() if n}
    # One schedule for all (compare refuses a per-agent lr_decay): read it off a run's config.
    schedule = "cosine decay" if cfg.train_config(rows[0]["agent"], 0).lr_decay else "constant"
    lines = [
        f"# Agent comparison on {cfg.preset}", "",
        f"{cfg.seeds} seed(s) per agent, {rows[0]['images']:,} training canvases per run "
        f"(batch {cfg.batch()}, lr {cfg.learning_rate()}, {schedule}), device {device}. "
        f"Test error: "
        f"the validation-selected model of each run ({cfg.eval_size:,} fixed validation "
        f"canvases), scored once on {cfg.test_size:,} fixed test canvases, deterministic; mean "
        f"+- std over seeds (population std)." + (
            " Overrides: " + ", ".join(f"`{o}`" for o in cfg.overrides) + "."
            if cfg.overrides else ""), "",
        "| agent | test error % | per seed | val error % | glimpses | pixels read / image "
        "| MACs / image | params | wall time | images/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['agent']} | {r['test_error_pct_mean']:.2f} +- {r['test_error_pct_std']:.2f} "
            f"| {r['test_error_pct_per_seed'].replace(';', ', ')} | "
            f"{r['val_error_pct_mean']:.2f} | {r['glimpses'] or '-'} | "
            f"{r['pixels_read_per_image']:,} | {_human(r['macs_per_image'])} | "
            f"{_human(r['params'])} | {r['wall_s_mean']:.0f} s | {r['images_per_s_mean']:.0f} |")
    lines += [
        "", "- *pixels read / image*: values the input layer receives (glimpses: T x scales x "
        "patch^2; DRAW: T x N^2; cnn, mlp, soft-cnn: the whole canvas H x W).",
        "- *MACs / image*: one inference pass on one canvas: layers (hooks) plus sensor, "
        "filterbank and attention products (see `hardattn.agents.compare`).",
        "- *wall time*: all training sessions of a run (validation included); images/s = "
        "training canvases / wall time.",
        "- *trained at*: the commit recorded in each run's `meta.json` (finished runs are "
        "reused, so runs can be older than these results): "
        + "; ".join(f"{r['agent']} {_commits(cfg, r['agent'])}" for r in rows) + ".",
        f"- *test canvases*: fixed set version {data.GENERATOR_VERSION} (a full set holds every "
        "official test digit once)." + (
            " Re-scored on it, the same validation-selected model, because version 1 (digits "
            "drawn with replacement) scored them at the end of training: " + ", ".join(
                f"{a} {n} run(s)" for a, n in rescored.items()) + "; their validation error and "
            "learning curves are on version-1 validation canvases." if rescored else ""), "",
        "![learning curves](learning_curves.png)", "",
        "![error vs glimpses](error_vs_glimpses.png)", "",
        "Error vs. glimpses: the trained models read out after every step of one pass on the "
        "validation canvases (not retrained per glimpse count; the dotted line marks the "
        "trained T).", "",
        "![where they look](attention.png)", "",
    ]
    (results / "results.md").write_text("\n".join(lines))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _error_scale(ax) -> None:
    """Log scale when the errors span more than a factor of 4 (small errors stay readable)."""
    lo, hi = ax.get_ylim()
    if lo > 0 and hi / lo > 4:
        ax.set_yscale("log")


def plot_learning_curves(curves: dict[str, list[tuple[list, list]]], path: Path,
                         unit: str = "images") -> None:
    """Validation error vs. training ``unit`` (images or episodes): mean and a +-1 std band
    over seeds, one line per agent."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for agent, per_seed in curves.items():
        by_step: dict[int, list[float]] = {}
        for steps, errors in per_seed:
            for s, e in zip(steps, errors):
                by_step.setdefault(s, []).append(e)
        if not by_step:
            continue
        x = np.array(sorted(by_step))
        m = np.array([np.mean(by_step[s]) for s in x])
        sd = np.array([np.std(by_step[s]) for s in x])
        (line,) = ax.plot(x, m, label=agent, marker="." if len(x) < 30 else None)
        ax.fill_between(x, m - sd, m + sd, color=line.get_color(), alpha=0.2)
    ax.set_xlabel(f"training {unit}")
    ax.set_ylabel("validation error (%)")
    _error_scale(ax)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"validation error vs. training {unit} (mean +- std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_glimpses(per_agent: dict[str, list[dict]], val_errors: dict[str, list[float]],
                  path: Path) -> None:
    plt = _plt()
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (agent, analyses) in enumerate(per_agent.items()):
        colour = colours[i % len(colours)]
        curves = [a["val_error_by_glimpses"] for a in analyses if "val_error_by_glimpses" in a]
        if not curves:  # whole-canvas agents: one error, drawn across
            ax.axhline(float(np.mean(val_errors[agent])), linestyle="--", linewidth=1,
                       color=colour, label=f"{agent} (whole canvas)")
            continue
        c = np.array(curves)
        t = np.arange(1, c.shape[1] + 1)
        ax.plot(t, c.mean(0), marker="o", markersize=3, color=colour, label=agent)
        ax.fill_between(t, c.mean(0) - c.std(0), c.mean(0) + c.std(0), color=colour, alpha=0.2)
        ax.axvline(analyses[0]["glimpses"], color=colour, linestyle=":", linewidth=1)
    ax.set_xlabel("glimpses / read steps (classifier read after step t)")
    ax.set_ylabel("validation error (%)")
    _error_scale(ax)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("error vs. number of glimpses (trained models, anytime read-out)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_attention(rows: dict[str, np.ndarray], path: Path) -> None:
    plt = _plt()
    width = max(r.shape[1] for r in rows.values())
    height = sum(r.shape[0] for r in rows.values())
    fig, axes = plt.subplots(len(rows), 1, squeeze=False,
                             figsize=(min(18, width / 60 + 1.5), height / 60 + 0.4 * len(rows)))
    for ax, (agent, img) in zip(axes[:, 0], rows.items()):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(agent, loc="left", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("where each agent looks (seed 0, same test canvases)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=100)
    plt.close(fig)
