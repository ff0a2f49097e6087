"""``hardattn compare --preset copy-memory | associative-recall``: the memory readers side by side.

The runs are trained by ``hardattn.agents.compare.compare`` exactly as for the canvas presets
(one budget of training episodes per run, the same batch, validation cadence and fixed seeded
validation/test episodes; resumable; one TensorBoard folder) with the readers' learning
settings (``hardattn.agents.memory_common.READER_SETTINGS``); this module writes what is
compared, into ``--results-dir``:

- ``results.csv`` and ``results.md``: per agent, the validation-selected test accuracy on the
  scored steps (CopyMemory: the last ``payload`` outputs; AssociativeRecall: the answer; mean
  and std over seeds, argmax reads, scored once per run), the test cross-entropy there, the
  validation accuracy, *cells read per step* (cells whose content enters the controller: 1
  for the hard readers, the cells of non-zero weight for soft-read and SAB, 0 for the
  memoryless control), *cells scored per step* (cells an address score is computed for),
  parameters, wall time and episodes/s.
- ``learning_curves.png``: validation error (100 - accuracy) vs. training episodes, mean and
  a +-1 std band over seeds.
- ``reads.png``: where every agent reads (seed 0) on the same first test episode: one row per
  step, one column per memory cell, the read weight (hard readers: the argmax cell, 1), the
  scored steps marked.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import torch

from hardattn import checkpoint as ckpt
from hardattn.config import TrainConfig

from .compare_report import _mean_std, _plt, eval_curve, plot_learning_curves, write_csv

CSV_COLUMNS = ("agent", "runs", "episodes", "task", "test_accuracy_pct_mean",
               "test_accuracy_pct_std", "test_accuracy_pct_per_seed", "test_ce_mean",
               "val_accuracy_pct_mean", "cells_read_per_step", "cells_scored_per_step", "params",
               "wall_s_mean", "episodes_per_s_mean")


def analyse_reads(run_dir: Path, device: torch.device, n: int) -> dict:
    """Parameters, cells read / scored per step and the read map of test episode 0 of a run's
    validation-selected model (argmax reads on the first ``n`` fixed test episodes)."""
    from . import memory_readers as mr
    from .memory_common import TEST_SEED, cells_per_step, make_env

    state = ckpt.load_checkpoint(Path(run_dir) / "checkpoints" / "best.pt", map_location=device)
    cfg = TrainConfig.from_dict(state["config"])
    env = make_env(cfg, device, n, T=cfg.eval_T or cfg.memory_T)
    model = mr.make_model(cfg, env).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    with torch.no_grad():
        ro = mr.rollout(model, env, None, greedy=True, seed=TEST_SEED)
    L, n_cells = env.cfg.episode_len, env.cfg.n_cells
    read, scored = cells_per_step(model, ro, n_cells)
    task = f"T={env.cfg.T}" if hasattr(env.cfg, "T") else f"N={env.cfg.n_pairs}"
    grid = np.zeros((L, n_cells), dtype=np.float32)  # (L steps, cells) read weights, episode 0
    if model.mode == "hard":
        for t in range(1, L):  # step 0 has one cell and no decision
            grid[t, int(ro.addresses[t, 0])] = 1.0
    elif model.mode in ("soft", "sab"):
        att_steps = range(0, L, model.k_att) if model.mode == "sab" else range(L)
        for t, w in zip(att_steps, ro.weights):  # w: (B, M_t)
            grid[t, :w.shape[1]] = w[0].float().cpu().numpy()
    env.close()
    return {"params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "cells_read": read,
            "task": task,
            "cells_scored": scored, "grid": grid,
            "scored_steps": ro.scored.nonzero()[:, 0].tolist()}


def summarise(agent: str, runs: list[dict], analysis: dict) -> dict:
    """One row of results.csv."""
    reports = [r["report"] for r in runs]
    m, s = _mean_std([r["test_accuracy_pct"] for r in reports])
    walls = [r["wall_s"] for r in runs]
    episodes = reports[0]["episodes"]
    return {"agent": agent, "runs": len(runs), "episodes": episodes, "task": analysis["task"],
            "test_accuracy_pct_mean": m, "test_accuracy_pct_std": s,
            "test_accuracy_pct_per_seed": ";".join(f"{r['test_accuracy_pct']:.2f}"
                                                   for r in reports),
            "test_ce_mean": statistics.fmean(r["test_ce"] for r in reports),
            "val_accuracy_pct_mean": statistics.fmean(r["val_accuracy_pct"] for r in reports),
            "cells_read_per_step": analysis["cells_read"],
            "cells_scored_per_step": analysis["cells_scored"], "params": analysis["params"],
            "wall_s_mean": statistics.fmean(walls),
            "episodes_per_s_mean": statistics.fmean(episodes / w for w in walls)}


def write_tables(rows: list[dict], cfg, results: Path, device: str) -> None:
    write_csv(rows, CSV_COLUMNS, results / "results.csv")
    lines = [
        f"# Memory readers on {cfg.preset} ({rows[0]['task']})", "",
        f"{cfg.seeds} seed(s) per agent, {rows[0]['episodes']:,} training episodes per run "
        f"(batch {cfg.batch()}, lr {cfg.learning_rate()}), device {device}. Accuracy on the "
        f"scored steps: the validation-selected model of each run ({cfg.eval_size:,} fixed "
        f"validation episodes), scored once on {cfg.test_size:,} fixed test episodes with "
        f"argmax reads and outputs; mean +- std over seeds (population std).", "",
        "| agent | test accuracy % | per seed | CE (nats) | val accuracy % | cells read / step "
        "| cells scored / step | params | wall time | episodes/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['agent']} | {r['test_accuracy_pct_mean']:.2f} +- "
            f"{r['test_accuracy_pct_std']:.2f} | "
            f"{r['test_accuracy_pct_per_seed'].replace(';', ', ')} | {r['test_ce_mean']:.3f} | "
            f"{r['val_accuracy_pct_mean']:.2f} | {r['cells_read_per_step']:.1f} | "
            f"{r['cells_scored_per_step']:.1f} | {r['params']:,} | {r['wall_s_mean']:.0f} s | "
            f"{r['episodes_per_s_mean']:.0f} |")
    lines += [
        "", "- *cells read / step*: memory cells whose content enters the controller, per step "
        "(hard readers 1; soft-read and SAB: cells of non-zero weight; memoryless 0).",
        "- *cells scored / step*: cells an address score is computed for (the hard policy too "
        "scores every written cell before it picks one).",
        "- *wall time*: all training sessions of a run (validation included).", "",
        "![learning curves](learning_curves.png)", "",
        "![where they read](reads.png)", "",
    ]
    (results / "results.md").write_text("\n".join(lines))


def plot_reads(analyses: dict[str, dict], path: Path) -> None:
    """One panel per agent: read weight of every (step, cell) on test episode 0."""
    plt = _plt()
    n = len(analyses)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.0 * rows), squeeze=False)
    for ax, (agent, a) in zip(axes.flat, analyses.items()):
        ax.imshow(a["grid"], aspect="auto", cmap="magma", vmin=0.0, vmax=1.0,
                  interpolation="nearest")
        for t in a["scored_steps"]:
            ax.axhline(t, color="cyan", lw=0.4, alpha=0.5)
        ax.set_title(f"{agent} ({a['cells_read']:.1f} cells read / step)", fontsize=9)
        ax.set_xlabel("memory cell (input of step i)")
        ax.set_ylabel("step")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("where each agent reads (seed 0, test episode 0; cyan: scored steps)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def memory_report(cfg, runs: dict[str, list[dict]], results: Path,
                  device: torch.device) -> list[dict]:
    """results.csv/.md, learning_curves.png and reads.png of a memory comparison; the rows."""
    analyses = {a: analyse_reads(rs[0]["run_dir"], device, max(cfg.show, 8))
                for a, rs in runs.items()}
    rows = [summarise(a, rs, analyses[a]) for a, rs in runs.items()]
    devices = sorted({str(r["report"]["device"]) for rs in runs.values() for r in rs})
    write_tables(rows, cfg, results, " and ".join(devices))  # runs can mix devices
    plot_learning_curves({a: [eval_curve(r["run_dir"]) for r in rs] for a, rs in runs.items()},
                         results / "learning_curves.png", unit="episodes")
    plot_reads(analyses, results / "reads.png")
    return rows
