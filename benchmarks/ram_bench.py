"""Shared driver of the RAM benchmarks (``ram_mnist28.py``, ``ram_cluttered60.py``, ...).

Trains each agent with each seed through ``hardattn.agents.run.train`` (validation-selected,
deterministic policy, official test set scored once, no Monte-Carlo averaging) and writes
``benchmarks/results/ram_<preset>.json`` in the format of ``../shared/BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from hardattn.benchmarking import (
    check_run_settings,
    result,
    resume_fields,
    run_commit,
    write_results,
)
from hardattn.config import TrainConfig
from hardattn.envs.glimpse_task import PRESET_DEFAULTS

REPO = Path(__file__).resolve().parent.parent
# Labels added after results were first written, with the value older runs had.
LABEL_DEFAULTS = {"augment_shift": 0, "std": TrainConfig.std, "lr": TrainConfig.lr}


def main(preset: str, env: str, defaults: dict, argv: list[str] | None = None) -> Path:
    """Parse the command line, train the agent x seed matrix, write the results JSON."""
    p = argparse.ArgumentParser(description=f"RAM on {env}: test error over seeds")
    p.add_argument("--agents", default="reinforce,actor-critic",
                   help="comma-separated agents (reinforce, actor-critic)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1)")
    p.add_argument("--epochs", type=float, default=defaults.get("epochs", 100.0),
                   help="training budget per run, in epochs of 50,000 canvases")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--batch-size", type=int, default=defaults.get("batch_size", 128),
                   help="canvases per update (64 learns faster per image on CPU than 128)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: all cores; 1 is faster on a loaded machine)")
    p.add_argument("--augment-shift", type=int, default=0,
                   help="random shift of the training canvases, pixels (TrainConfig field)")
    p.add_argument("--std", type=float, default=TrainConfig.std,
                   help="location-policy std (RAM on cluttered 60x60 explores better at 0.25)")
    p.add_argument("--lr", type=float, default=TrainConfig.lr, help="Adam learning rate")
    p.add_argument("--scales", type=int, default=None,
                   help="glimpse scales (default: the preset's, e.g. 1 on mnist28)")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--merge", action="store_true",
                   help="keep the existing file's rows whose labels this call does not produce "
                        "(another budget or augmentation); each kept row records its source")
    p.add_argument("--runs", default=str(REPO / "runs" / "bench"), help="run folders go here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)  # also what the results' device line reports
    t0 = time.perf_counter()
    rows, device, train_wall = [], None, 0.0
    for agent in args.agents.split(","):
        reports = []
        # The settings every seed shares: written once, used for the runs and the JSON config.
        shared = {**{k: v for k, v in defaults.items() if k != "epochs"},
                  "agent": agent, "env": env, "epochs": args.epochs, "device": args.device,
                  "threads": args.threads, "batch_size": args.batch_size,
                  "augment_shift": args.augment_shift, "std": args.std, "lr": args.lr,
                  "scales": args.scales}
        for seed in range(args.seeds):
            run_dir = Path(args.runs) / f"ram_{preset}__{agent}__{seed}"
            report_file = run_dir / "report.json"
            fields = {**shared, "seed": seed, "run_dir": str(run_dir)}
            check_run_settings(run_dir, TrainConfig(**fields).to_dict())
            if report_file.exists():  # resumable: finished runs are not trained again
                # ... but one scored on older fixed canvases is scored again (same best.pt).
                from hardattn.agents.evaluate import rescore_report

                reports.append(rescore_report(run_dir, args.device))
                continue
            fields.update(resume_fields(run_dir))  # resume, or start over
            cfg = TrainConfig(**fields)
            from hardattn.agents.run import train

            reports.append(train(cfg))
        device = reports[-1]["device"]
        train_wall += sum(r["wall_s"] for r in reports)
        # Runs may be older than the file's commit (reused, resumed or trained in parallel):
        # each seed's own commit, from its run folder, says which code trained it.
        cfg_dict = {**dataclasses.asdict(TrainConfig(**shared)),
                    "trained_at_commits": [run_commit(Path(args.runs) / f"ram_{preset}__{agent}__"
                                                      f"{seed}") for seed in range(args.seeds)],
                    # The fixed canvases that scored the test error (rows without it: version 1).
                    "canvas_set_version": sorted({r.get("canvas_set_version", 1)
                                                  for r in reports})}
        labels = {"agent": agent, "preset": preset,
                  "glimpses": defaults.get("n_glimpses") or {"mnist28": 6}.get(preset, 8),
                  "epochs": args.epochs, "augment_shift": args.augment_shift, "std": args.std,
                  "lr": args.lr, "scales": scales_label(preset, args.scales)}
        rows.append(result("test_error_pct", [r["test_error_pct"] for r in reports], "%", False,
                           labels, cfg_dict))
        rows.append(result("val_error_pct", [r["val_error_pct"] for r in reports], "%", False,
                           labels, cfg_dict))
        rows.append(result("images_per_s", [r["images_per_s"] for r in reports], "images/s",
                           True, labels, cfg_dict))
        rows.append(result("wall_s", [r["wall_s"] for r in reports], "s", False, labels,
                           cfg_dict))
    if args.merge:
        rows += kept_rows(Path(args.out or REPO / "benchmarks" / "results") /
                          f"ram_{preset}.json", rows)
    dev = torch.device("cuda" if device and device.startswith("cuda") else "cpu")
    # wall_s: the summed training time of every run (runs may come from earlier, resumed or
    # parallel invocations; this call's own time would undercount them).
    del t0
    return write_results(f"ram_{preset}", rows, train_wall, dev,
                         command="python " + " ".join(sys.argv), out_dir=args.out)


def scales_label(preset: str, scales: int | None) -> int:
    """The glimpse scales a run used: its ``--scales``, else the preset's sensor default."""
    return scales if scales is not None else PRESET_DEFAULTS[preset]["scales"]


def kept_rows(path: Path, new_rows: list[dict]) -> list[dict]:
    """The rows of an earlier results file that ``new_rows`` do not replace (same metric and
    labels), each with ``source`` (that file's commit, date, command and device)."""
    if not path.exists():
        return []
    old = json.loads(path.read_text())
    source = {k: old.get(k) for k in ("commit", "date", "command", "device")}
    new = {(r["metric"], json.dumps(r["labels"], sort_keys=True)) for r in new_rows}
    out = []
    for row in old["results"]:
        row = {**row, "labels": dict(row["labels"])}
        # Rows from before a label existed: their config says what they ran with.
        for key in LABEL_DEFAULTS:
            row["labels"].setdefault(key, row.get("config", {}).get(key, LABEL_DEFAULTS[key]))
        row["labels"].setdefault(
            "scales", scales_label(row["labels"]["preset"], row.get("config", {}).get("scales")))
        if (row["metric"], json.dumps(row["labels"], sort_keys=True)) not in new:
            row.setdefault("source", source)
            out.append(row)
    return out
