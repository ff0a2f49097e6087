"""Memory readers on CopyMemory (`CopyMemory-v0`): last-10 accuracy and CE over seeds.

Trains each agent (hard-read, hard-read-ac, soft-read, memoryless) with each seed through
``hardattn.agents.run.train`` (validation-selected on fixed seeded episodes, argmax reads,
test episodes scored once) and writes ``benchmarks/results/copy_memory.json``: metrics
``last10_accuracy_pct`` (higher is better) and ``last10_ce`` (nats, lower is better), plus
``episodes_per_s`` and ``wall_s``, labelled by ``agent``, ``T`` (training delay) and
``eval_T`` (evaluation delay).

Run: ``python benchmarks/memory_copy.py --seeds 3 --T 20 [--eval-T 20] [--episodes 20000]
[--device cuda]``. Finished runs (their report.json) are not trained again; interrupted ones
resume from their last checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from hardattn.benchmarking import result, write_results
from hardattn.config import TrainConfig

REPO = Path(__file__).resolve().parent.parent

# The settings under which the hard reader learns CopyMemory (see tests/test_memory_readers.py):
# causal next-step reward (gamma 0), normalised advantages, a strong entropy bonus.
DEFAULTS = dict(core="gru", core_hidden=64, batch_size=64, lr=3e-3, lr_decay=False,
                gamma=0.0, normalize_advantages=True, entropy_coef=2.0, read_score="general",
                baseline="learned", eval_every=50, eval_size=1000, test_size=2000,
                eval_batch=500, log_every=50, image_every=500, checkpoint_every=50,
                grad_stats_every=0, progress=False)
AGENT_ONLY = {"entropy_coef": ("hard-read", "hard-read-ac"),
              "normalize_advantages": ("hard-read", "hard-read-ac")}


def agent_fields(agent: str) -> dict:
    """The defaults that apply to ``agent`` (the REINFORCE knobs only to the hard readers)."""
    return {k: v for k, v in DEFAULTS.items() if agent in AGENT_ONLY.get(k, (agent,))}


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description="memory readers on CopyMemory: last-10 accuracy")
    p.add_argument("--agents", default="hard-read,hard-read-ac,soft-read,memoryless",
                   help="comma-separated memory agents")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1)")
    p.add_argument("--T", type=int, default=20, help="training delay T")
    p.add_argument("--eval-T", type=int, default=None, help="evaluation delay (default --T)")
    p.add_argument("--episodes", type=int, default=20_000, help="training episodes per run")
    p.add_argument("--eval-size", type=int, default=DEFAULTS["eval_size"])
    p.add_argument("--test-size", type=int, default=DEFAULTS["test_size"])
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: all cores)")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--runs", default=str(REPO / "runs" / "bench"), help="run folders go here")
    args = p.parse_args(argv)
    eval_T = args.eval_T or args.T
    t0 = time.perf_counter()
    rows, device = [], "cpu"
    for agent in args.agents.split(","):
        base = {**agent_fields(agent), "agent": agent, "env": "CopyMemory-v0",
                "memory_T": args.T, "eval_T": eval_T, "total_images": args.episodes,
                "eval_size": args.eval_size, "test_size": args.test_size,
                "eval_batch": min(DEFAULTS["eval_batch"], args.eval_size, args.test_size),
                "device": args.device, "threads": args.threads}
        reports = []
        for seed in range(args.seeds):
            run_dir = Path(args.runs) / f"copy_memory_T{args.T}__{agent}__{seed}"
            report_file = run_dir / "report.json"
            if report_file.exists():
                reports.append(json.loads(report_file.read_text()))
                continue
            fields = {**base, "seed": seed, "run_dir": str(run_dir)}
            ckpts = run_dir / "checkpoints"
            if ckpts.is_dir() and any(ckpts.glob("ckpt_*.pt")):
                fields["resume"] = str(run_dir)
            from hardattn.agents.run import train

            reports.append(train(TrainConfig(**fields)))
        device = reports[-1]["device"]
        cfg_dict = dataclasses.asdict(TrainConfig(**base))
        labels = {"agent": agent, "T": args.T, "eval_T": eval_T, "episodes": args.episodes}
        rows.append(result("last10_accuracy_pct", [r["last10_accuracy_pct"] for r in reports],
                           "%", True, labels, cfg_dict))
        rows.append(result("last10_ce", [r["last10_ce"] for r in reports], "nats", False,
                           labels, cfg_dict))
        rows.append(result("episodes_per_s", [r["episodes_per_s"] for r in reports],
                           "episodes/s", True, labels, cfg_dict))
        rows.append(result("wall_s", [r["wall_s"] for r in reports], "s", False, labels,
                           cfg_dict))
    dev = torch.device("cuda" if device.startswith("cuda") else "cpu")
    return write_results("copy_memory", rows, time.perf_counter() - t0, dev,
                         command="python " + " ".join(sys.argv), out_dir=args.out)


if __name__ == "__main__":
    print(main())
