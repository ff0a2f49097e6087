"""``hardattn compare``: train hard, soft and full-image agents with one budget, compare them.

::

    hardattn compare --preset cluttered60 --agents reinforce,soft-glimpse,cnn --seeds 3 \\
        --budget-images 2000000 --device cuda --out runs/compare-cluttered60

Every (agent, seed) run trains through ``hardattn.agents.run.train`` into
``<out>/<agent>__seed<seed>/`` (so ``tensorboard --logdir <out>`` overlays every curve) with the
same budget of training images, batch size, learning rate, validation cadence and fixed
validation/test canvases. The matrix is resumable: a run with a ``report.json`` is not trained
again, a run with a checkpoint resumes from it (Ctrl-C checkpoints the current update), a run
folder without either starts over. The wall time of every training session of a run is added
up in its ``compare_time.json``. ``--jobs N`` trains N runs at once, one process each
(``compare_jobs``); the results do not depend on N.

The flags and the protocol every run shares: ``hardattn.agents.compare_config``. Then, into
``--results-dir`` (default ``--out``):

- ``results.csv`` and ``results.md``: per agent, the validation-selected test error (mean and
  std over seeds, the test set scored once per run), validation error, glimpses, pixels read per
  image, multiply-adds per image, parameters, wall time and images/s (training images over the
  run's whole wall time, validation included).
- ``learning_curves.png``: validation error vs. training images, mean and a +-1 std band over
  seeds, read from each run's TensorBoard ``eval/error`` scalars.
- ``error_vs_glimpses.png``: *anytime* evaluation of the trained (validation-selected) models on
  the validation canvases: the classifier is read after every glimpse / read step ``t = 1 ..
  1.5 T`` of one pass, without retraining. The classifier was trained on the state after ``T``
  steps only, so the errors at ``t < T`` are upper bounds for a model trained with ``t`` glimpses
  (and ``t > T`` shows whether more glimpses than trained help or hurt). Training one variant
  per glimpse count would multiply the budget; run ``compare`` again with ``--overrides
  n_glimpses=K --out <other folder>`` for that. Full-image agents appear as horizontal lines.
- ``attention.png``: where every agent looks (seed 0) on the same first ``--show`` test
  canvases: glimpse squares and paths (hard and soft glimpse agents), attention heat maps with
  the path of their centre (DRAW, soft-cnn), input-gradient saliency (cnn, mlp). Pictures only;
  no test error is computed from them.

Definitions. *Pixels read per image*: the values the model's input layer receives (the
sensor's bandwidth): ``T x scales x patch^2`` for glimpse agents, ``T x N^2`` for DRAW, ``H x W``
for agents that read the whole canvas (cnn, mlp, soft-cnn). *Multiply-adds per image*: one
deterministic inference pass on one canvas: every Linear/Conv/RNN cell (forward hooks) plus the
sensor (a retina scale area-averages ``(patch k)^2`` pixels: 1 add each, 5 when bilinear), DRAW's
filterbanks and products, and soft-cnn's scores and weighted sums. The hard agents' baseline /
critic heads are not used at inference and not counted in MACs (they are in the parameters).

Memory presets (``--preset copy-memory`` or ``associative-recall``; the delay or the number of
pairs through ``--overrides memory_T=300`` / ``memory_pairs=24``): the same matrix of the memory
readers (``hard-read``, ``hard-read-ac``, ``soft-read``, ``sab``, ``memoryless``), the budget in
episodes, with the readers' learning settings; the tables report accuracy on the scored steps
and memory cells read per step, and ``reads.png`` shows where each reads
(``hardattn.agents.compare_memory``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from hardattn import checkpoint as ckpt
from hardattn.benchmarking import check_run_settings, process_commit, resume_fields
from hardattn.config import TrainConfig

from . import soft_common as sc
from .compare_config import (  # noqa: F401  (CompareConfig: the CLI's and users' import)
    COMPARABLE,
    HARD_AGENTS,
    MEMORY_COMPARABLE,
    MEMORY_PRESETS,
    PRESET_ENVS,
    PROTOCOL_FIELDS,
    CompareConfig,
)
from .compare_report import (
    analyse_run,
    eval_curve,
    load_best,
    plot_attention,
    plot_glimpses,
    plot_learning_curves,
    summarise,
    write_tables,
)

# ----------------------------------------------------------------------------- the matrix


def ensure_run(cfg: TrainConfig) -> dict:
    """Train run ``cfg.run_dir`` unless it finished; resume it when it has a checkpoint.

    Returns:
        ``{"report", "wall_s", "run_dir", "trained"}``; ``wall_s`` adds up every session.
    """
    from .evaluate import rescore_report
    from .run import train

    run_dir = Path(cfg.run_dir)
    check_run_settings(run_dir, cfg.to_dict(), fix="use another --out")
    timing = run_dir / "compare_time.json"
    report_file = run_dir / "report.json"
    trained = False
    if not report_file.exists():
        # Resumed from its checkpoint, or started over (its old timing and analysis go too).
        cfg = dataclasses.replace(cfg, **resume_fields(run_dir))
        t0 = time.perf_counter()
        try:
            train(cfg)
        finally:  # also on Ctrl-C: the time spent so far counts
            if run_dir.is_dir():
                before = _read_timing(timing)
                ckpt.atomic_write_text(timing, json.dumps({
                    "wall_s": before.get("wall_s", 0.0) + time.perf_counter() - t0,
                    "sessions": before.get("sessions", 0) + 1}, indent=2) + "\n")
        trained = True
    # A run scored on older fixed canvases is scored again on today's test set (same model).
    report = rescore_report(run_dir, cfg.device)
    # compare_time.json misses a session killed outright (SIGKILL, power); the report's own
    # wall time counts every session up to its last checkpoint: the larger is the better count.
    wall = max(_read_timing(timing).get("wall_s", 0.0), report["wall_s"])
    return {"report": report, "wall_s": wall, "run_dir": run_dir, "trained": trained}


def _read_timing(path: Path) -> dict:
    """A run's ``compare_time.json``; {} when absent or unreadable (one written by an older
    version, cut short: the report's wall time then counts)."""
    try:
        timing = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return timing if isinstance(timing, dict) else {}


# ----------------------------------------------------------------------------- the command


def compare(cfg: CompareConfig) -> dict:
    """Train (or reuse) every run, then write results.csv/.md and the PNGs; returns a summary
    ``{"out", "results_dir", "rows", "trained", "wall_s", "runs", "run_wall_s"}`` (``runs``:
    per agent, the run folders; ``run_wall_s``: their wall times, as results.md counts them)."""
    from .run import preflight, resolve_device

    process_commit()  # the code of every run this process trains, whatever lands meanwhile
    cfg.validate()
    agents = cfg.agent_list()
    configs = {(a, s): preflight(cfg.train_config(a, s))
               for a in agents for s in range(cfg.seeds)}  # every config checked up front
    out = cfg.out_dir()
    results = Path(cfg.results_dir) if cfg.results_dir else out
    out.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    fresh = set()
    if cfg.jobs > 1:  # train in child processes; below, every run is then reused
        from .compare_jobs import train_parallel
        from .run import check_data

        check_data(next(iter(configs.values())))  # one MNIST download, not one per child
        fresh = train_parallel(configs, cfg.jobs)
    done = {key: ensure_run(c) for key, c in configs.items()}
    for key in fresh:
        done[key]["trained"] = True
    runs = {a: [done[a, s] for s in range(cfg.seeds)] for a in agents}
    n_trained = sum(r["trained"] for rs in runs.values() for r in rs)

    device = resolve_device(cfg.device)
    if cfg.is_memory():
        from .compare_memory import memory_report

        rows = memory_report(cfg, runs, results, device)
        return _finish(cfg, out, results, runs, rows, n_trained, t0, "test_accuracy_pct",
                       "test accuracy")
    analyses = {a: [analyse_run(r, device) for r in rs] for a, rs in runs.items()}
    rows = [summarise(a, runs[a], analyses[a]) for a in agents]
    rescored = {a: sum("val_canvas_set_version" in r["report"] for r in rs)
                for a, rs in runs.items()}
    devices = sorted({str(r["report"]["device"]) for rs in runs.values() for r in rs})
    write_tables(rows, cfg, results, " and ".join(devices), rescored)  # runs can mix devices
    plot_learning_curves({a: [eval_curve(r["run_dir"]) for r in rs] for a, rs in runs.items()},
                         results / "learning_curves.png")
    plot_glimpses(analyses, {a: [r["report"]["val_error_pct"] for r in rs]
                             for a, rs in runs.items()}, results / "error_vs_glimpses.png")
    pictures = {}
    for a in agents:
        train_cfg, task, model = load_best(runs[a][0]["run_dir"], device)
        test = sc.SoftEvaluator(train_cfg, task, device, "test", cfg.show)
        pictures[a] = test.picture(model, cfg.show)
    plot_attention(pictures, results / "attention.png")
    return _finish(cfg, out, results, runs, rows, n_trained, t0, "test_error_pct", "test error")


def _finish(cfg: CompareConfig, out: Path, results: Path, runs: dict, rows: list[dict],
            n_trained: int, t0: float, metric: str, name: str) -> dict:
    """Print the summary lines; the summary ``compare`` returns."""
    reused = sum(map(len, runs.values())) - n_trained
    print(f"hardattn compare: {n_trained} run(s) trained, {reused} reused; results in "
          f"{results / 'results.md'}; TensorBoard: tensorboard --logdir {out}")
    for r in rows:
        print(f"  {r['agent']:<16} {name} {r[metric + '_mean']:6.2f} +- "
              f"{r[metric + '_std']:.2f} %  ({r['runs']} seed(s))")
    return {"out": str(out), "results_dir": str(results), "rows": rows, "trained": n_trained,
            "wall_s": time.perf_counter() - t0,
            "runs": {a: [str(r["run_dir"]) for r in rs] for a, rs in runs.items()},
            "run_wall_s": {a: [r["wall_s"] for r in rs] for a, rs in runs.items()}}



# ----------------------------------------------------------------------------- benchmarks


def benchmark(preset: str, budget_images: int, argv: list[str] | None = None) -> Path:
    """Driver of ``benchmarks/compare_<preset>.py``: the full matrix through ``compare``, then
    ``benchmarks/results/compare_<preset>.json`` in the format of ``../shared/BENCHMARKS.md``
    (metric ``test_error_pct`` labelled by ``agent``, plus ``pixels_read_per_image``,
    ``images_per_s``, ``macs_per_image``, ``params``, ``val_error_pct``, ``wall_s``) and
    ``results.md`` / CSV / PNGs in ``benchmarks/results/compare_<preset>/``. Resumable: run it
    again after an interruption (finished runs are reused, interrupted ones resume)."""
    import argparse
    import sys

    from hardattn.benchmarking import RESULTS_DIR, result, run_commit, write_results

    p = argparse.ArgumentParser(description=f"hard vs. soft vs. full-image agents on {preset}")
    p.add_argument("--agents", default=",".join(COMPARABLE), help="comma-separated agents")
    p.add_argument("--seeds", type=int, default=3, help="seeds per agent (0..N-1)")
    p.add_argument("--budget-images", type=int, default=budget_images,
                   help=f"training canvases per run (default {budget_images:,})")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--runs", default=str(RESULTS_DIR.parent.parent / "runs" / f"compare-{preset}"),
                   help="folder of the runs (default <repo>/runs/compare-<preset>)")
    p.add_argument("--results", default=str(RESULTS_DIR),
                   help="folder of compare_<preset>.json and compare_<preset>/")
    p.add_argument("--eval-size", type=int, default=10_000, help="validation canvases")
    p.add_argument("--test-size", type=int, default=10_000, help="test canvases")
    p.add_argument("--eval-every", type=int, default=1000, help="validate every N updates")
    p.add_argument("--overrides", nargs="*", default=[], help="FIELD=VALUE or AGENT.FIELD=VALUE")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads per run (0: all cores, divided among --jobs)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at once, one process each (results do not depend on it)")
    args = p.parse_args(argv)
    name = f"compare_{preset}"
    cfg = CompareConfig(preset=preset, agents=args.agents, seeds=args.seeds,
                        budget_images=args.budget_images, device=args.device, out=args.runs,
                        results_dir=str(Path(args.results) / name), eval_size=args.eval_size,
                        test_size=args.test_size, eval_batch=min(1000, args.eval_size,
                                                                 args.test_size),
                        eval_every=args.eval_every, checkpoint_every=min(500, args.eval_every),
                        overrides=tuple(args.overrides), progress=False,
                        threads=args.threads, jobs=args.jobs)
    t0 = time.perf_counter()
    summary = compare(cfg)
    rows, device = [], "cpu"
    for row in summary["rows"]:
        agent = row["agent"]
        reports = [json.loads((Path(d) / "report.json").read_text())
                   for d in summary["runs"][agent]]
        walls = summary["run_wall_s"][agent]  # as results.md counts them (ensure_run)
        device = reports[0]["device"]
        labels = {"agent": agent, "preset": preset, "glimpses": row["glimpses"] or None,
                  "budget_images": cfg.budget_images}
        config = {**cfg.train_config(agent, 0).to_dict(),
                  "trained_at_commits": [run_commit(d) for d in summary["runs"][agent]],
                  # the fixed canvases of the test error; "rescored": seeds scored again on them
                  "canvas_set_version": sorted({r.get("canvas_set_version", 1)
                                                for r in reports}),
                  "rescored_seeds": [i for i, r in enumerate(reports)
                                     if "val_canvas_set_version" in r]}
        rows += [
            result("test_error_pct", [r["test_error_pct"] for r in reports], "%", False, labels,
                   config),
            result("val_error_pct", [r["val_error_pct"] for r in reports], "%", False, labels,
                   config),
            result("pixels_read_per_image", row["pixels_read_per_image"], "pixels", False,
                   labels, config),
            result("macs_per_image", row["macs_per_image"], "MACs", False, labels, config),
            result("params", row["params"], "parameters", False, labels, config),
            result("images_per_s", [r["images"] / w for r, w in zip(reports, walls)],
                   "images/s", True, labels, config),
            result("wall_s", walls, "s", False, labels, config),
        ]
    dev = torch.device("cuda" if device.startswith("cuda") else "cpu")
    return write_results(name, rows, time.perf_counter() - t0, dev,
                         command="python " + " ".join(sys.argv), out_dir=args.results)
