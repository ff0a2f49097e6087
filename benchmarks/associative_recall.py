"""Memory readers on AssociativeRecall (`AssociativeRecall-v0`): test accuracy vs N.

``N`` key -> value pairs are shown, then a query key; the agent must read the slot holding
the key and emit its value (the env's ``n_pairs`` argument, ``envs/memory.py``). Trains each
agent (default ``hard-read`` and ``soft-read``) with each seed at each ``N`` through
``hardattn.agents.run.train`` (validation-selected on fixed seeded episodes, argmax reads,
test episodes scored once) and writes ``benchmarks/results/associative_recall.json``: metric
``accuracy_pct`` (the answer step, %, higher is better; chance is 10% for the 10 values) and,
for the hard readers, ``read_accuracy_pct`` (% of answers whose read held the value),
labelled by ``agent`` and ``N``.

Settings: those of the CopyMemory benchmark (``memory_copy.DEFAULTS``: GRU 64, batch 64,
lr 3e-3, gamma 0, normalised advantages and entropy bonus 2 for the hard reader) with the
``dot`` read score (content-based lookup: tests/test_memory_readers.py solves N=8 with it).

Curriculum: ``--curriculum`` also trains the ``--curriculum-agents`` (default: ``--agents``) on
the ``--N`` in ascending order, each N initialised (``--init-from``) from the same seed's
validation-selected model at the previous N (the first N is the run from scratch): rows with
``labels.curriculum`` ``"6>12"``, ``"6>12>24"`` (``"none"``: from scratch) and
``labels.episodes_total`` (all stages). The reader's weights do not depend on N.

Run: ``python benchmarks/associative_recall.py --seeds 3 --N 6,12,24 [--episodes 19200]
[--curriculum]``.
Finished runs (report.json) are reused, interrupted ones resume from their last checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

from hardattn.benchmarking import result, write_results
from hardattn.config import TrainConfig, used_by

sys.path.insert(0, str(Path(__file__).resolve().parent))
import memory_copy as mcb  # noqa: E402  (the CopyMemory benchmark's settings and helpers)

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description="memory readers on AssociativeRecall: accuracy vs N")
    p.add_argument("--agents", default="hard-read,soft-read", help="comma-separated agents")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1)")
    p.add_argument("--N", default="6,12,24", help="numbers of key -> value pairs")
    p.add_argument("--episodes", type=int, default=19_200, help="training episodes per run")
    p.add_argument("--read-score", default="dot", help="read score of the readers")
    p.add_argument("--curriculum", action="store_true",
                   help="also train each N (ascending) from the previous N's model")
    p.add_argument("--curriculum-agents", default=None,
                   help="comma-separated agents of the curriculum (default: --agents)")
    p.add_argument("--eval-size", type=int, default=1000, help="validation episodes")
    p.add_argument("--test-size", type=int, default=2000, help="test episodes (scored once)")
    p.add_argument("--eval-every", type=int, default=50, help="validate every N updates")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: all cores)")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--runs", default=str(REPO / "runs" / "bench"), help="run folders go here")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows, device = [], "cpu"
    Ns = mcb.int_list(args.N)

    def train_group(agent: str, N: int, init_dirs: list[Path] | None, prefix: str,
                    labels_extra: dict) -> list[Path]:
        """Every seed of ``agent`` at ``N`` (from ``init_dirs[seed]`` when given); adds its
        rows and returns the run folders."""
        nonlocal device
        fields = mcb.agent_fields(agent)  # an alias (lstm) names its agent
        base = {**fields, "env": "AssociativeRecall-v0", "memory_pairs": N,
                **used_by(fields["agent"], {"read_score": args.read_score}),
                "total_images": args.episodes,
                "eval_size": args.eval_size, "test_size": args.test_size,
                "eval_every": args.eval_every,
                "eval_batch": min(500, args.eval_size, args.test_size),
                "device": args.device, "threads": args.threads}
        dirs = [Path(args.runs) / f"associative_recall_{prefix}N{N}__{agent}__{seed}"
                for seed in range(args.seeds)]
        reports = [mcb.train_seed({**base, **({"init_from": str(init_dirs[seed])}
                                             if init_dirs else {})}, seed, d)
                   for seed, d in enumerate(dirs)]
        device = reports[-1]["device"]
        cfg_dict = dataclasses.asdict(TrainConfig(**base))
        episodes = sorted({r["episodes"] for r in reports})
        labels = {"agent": agent, "N": N,
                  "episodes": episodes[0] if len(episodes) == 1 else episodes, **labels_extra}
        rows.append(result("accuracy_pct", [r["test_accuracy_pct"] for r in reports], "%",
                           True, labels, cfg_dict))
        if all("test_read_accuracy_pct" in r for r in reports):
            rows.append(result("read_accuracy_pct",
                               [r["test_read_accuracy_pct"] for r in reports], "%", True,
                               labels, cfg_dict))
        rows.append(result("test_ce", [r["test_ce"] for r in reports], "nats", False,
                           labels, cfg_dict))
        rows.append(result("wall_s", [r["wall_s"] for r in reports], "s", False, labels,
                           cfg_dict))
        print(f"{agent} N={N} {labels_extra}: "
              f"{[round(r['test_accuracy_pct'], 2) for r in reports]}", flush=True)
        return dirs

    agents = [a for a in args.agents.split(",") if a]
    scratch = {(agent, N): train_group(agent, N, None, "", {"curriculum": "none"})
               for N in Ns for agent in agents}
    if args.curriculum:
        order = sorted(Ns)
        for agent in [a for a in (args.curriculum_agents or args.agents).split(",") if a]:
            # Stage 1 is the run from scratch at the smallest N (trained here if not above).
            prev = scratch.get((agent, order[0])) or train_group(
                agent, order[0], None, "", {"curriculum": "none"})
            for i, N in enumerate(order[1:], start=1):
                prev = train_group(agent, N, prev, f"cur{order[0]}_",
                                   {"curriculum": ">".join(str(n) for n in order[:i + 1]),
                                    "episodes_total": args.episodes * (i + 1)})
    dev = torch.device("cuda" if device.startswith("cuda") else "cpu")
    return write_results("associative_recall", rows, time.perf_counter() - t0, dev,
                         command="python " + " ".join(sys.argv), out_dir=args.out)


if __name__ == "__main__":
    print(main())
