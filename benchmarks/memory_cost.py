"""Cost of a memory read as the memory grows (CPU): time per env step and cells read per step.

For each agent (default ``hard-read``, ``soft-read``, ``sab``) and each CopyMemory delay ``T``
(the memory holds every past input: ``L = T + 20`` steps, up to ``L`` cells), builds the agent
of ``hardattn train`` (``memory_copy.DEFAULTS``: GRU 64, general read score) with random
weights and times ``--repeats`` training updates on one batch of ``--batch-size`` episodes:
rollout (forward), loss, backward and Adam step, after one untimed warm-up update. Metrics,
labelled ``agent``, ``T`` (and ``batch_size``):

- ``ms_per_step``: the update's wall time divided by the episode length ``L`` (one step of
  the batched env, ``batch_size`` episodes in parallel); median over repeats.
- ``cells_read_per_step``: memory cells whose content enters the controller, per step and
  episode: 1 for the hard reader (the env returns the one cell chosen), the number of cells
  with non-zero weight for the soft reader (all cells written so far: ~L/2 on average) and
  SAB (at most ``sab_k_top`` per attention step).
- ``cells_scored_per_step``: cells the address scores are computed for, per step: the hard
  reader's policy is a softmax over every written cell too, so its compute per step still
  grows with T (O(T) scores, O(1) reads); the soft reader reads and backpropagates through
  all of them.
- ``ratio`` (``labels.of`` / ``labels.to``): ``ms_per_step`` of each agent over the hard
  reader's, per repeat, measured in the same run.

Run: ``python benchmarks/memory_cost.py [--T 100,300,1000,3000] [--batch-size 8]
[--repeats 3] [--threads 1]``. Writes ``benchmarks/results/memory_cost_cpu.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

from hardattn.benchmarking import result, write_results
from hardattn.config import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
import memory_copy as mcb  # noqa: E402  (the CopyMemory benchmark's settings and helpers)


def measure(cfg: TrainConfig, repeats: int) -> dict:
    """Per-repeat ms per step and the cells read / scored per step of one update."""
    from hardattn.agents import memory_readers as mr
    from hardattn.agents.memory_common import cells_per_step, make_env

    dev = torch.device("cpu")
    torch.manual_seed(0)
    env = make_env(cfg, dev, cfg.batch_size)
    model = mr.make_model(cfg, env)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    noise = torch.Generator().manual_seed(1)
    L = env.cfg.episode_len
    times, ro = [], None
    for i in range(repeats + 1):  # the first update is a warm-up
        t0 = time.perf_counter()
        ro = mr.rollout(model, env, noise, seed=i)
        loss = mr.loss_terms(cfg, ro, {})["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append((time.perf_counter() - t0) * 1000.0 / L)
    env.close()
    cells_read, cells_scored = cells_per_step(model, ro, env.cfg.n_cells)
    return {"ms_per_step": times, "cells_read": cells_read, "cells_scored": cells_scored,
            "L": L}


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description="memory readers: ms and cells read per step vs T")
    p.add_argument("--agents", default="hard-read,soft-read,sab", help="comma-separated agents")
    p.add_argument("--T", default="100,300,1000,3000", help="CopyMemory delays")
    p.add_argument("--batch-size", type=int, default=8, help="episodes per update")
    p.add_argument("--repeats", type=int, default=3, help="timed updates (median quoted)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: all cores)")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    agents = args.agents.split(",")
    t0 = time.perf_counter()
    rows = []
    for T in mcb.int_list(args.T):
        per_agent = {}
        for agent in agents:
            fields = {**mcb.agent_fields(agent), "env": "CopyMemory-v0", "memory_T": T,
                      "batch_size": args.batch_size, "device": "cpu",
                      "threads": args.threads}
            cfg = TrainConfig(**fields)
            m = measure(cfg, args.repeats)
            per_agent[agent] = m
            labels = {"agent": agent, "T": T, "batch_size": args.batch_size, "L": m["L"]}
            cfg_dict = dataclasses.asdict(cfg)
            rows.append(result("ms_per_step", m["ms_per_step"], "ms", False, labels, cfg_dict,
                               aggregate="median"))
            rows.append(result("cells_read_per_step", m["cells_read"], "cells", False, labels,
                               cfg_dict, aggregate="median"))
            rows.append(result("cells_scored_per_step", m["cells_scored"], "cells", False,
                               labels, cfg_dict, aggregate="median"))
            print(f"T={T} {agent}: {statistics.median(m['ms_per_step']):.2f} ms/step, "
                  f"{m['cells_read']:.1f} cells read/step", flush=True)
        ref = agents[0]
        for agent in agents[1:]:
            ratio = [a / b for a, b in zip(per_agent[agent]["ms_per_step"],
                                           per_agent[ref]["ms_per_step"])]
            rows.append(result("ratio", ratio, "x", False,
                               {"of": agent, "to": ref, "metric": "ms_per_step", "T": T,
                                "batch_size": args.batch_size}, aggregate="median"))
    return write_results("memory_cost_cpu", rows, time.perf_counter() - t0, "cpu",
                         command="python " + " ".join(sys.argv), out_dir=args.out)


if __name__ == "__main__":
    print(main())
