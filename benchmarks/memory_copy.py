"""Memory readers on CopyMemory (`CopyMemory-v0`): last-10 accuracy and CE over seeds, and
transfer to longer delays.

Trains each agent with each seed at each training delay ``T`` through
``hardattn.agents.run.train`` (validation-selected on fixed seeded episodes, argmax reads,
test episodes scored once) and writes ONE ``benchmarks/results/copy_memory.json``: metrics
``last10_accuracy_pct`` (higher is better) and ``last10_ce`` (nats, lower is better), plus
``episodes_per_s`` and ``wall_s``, labelled by ``agent``, ``T`` (training delay) and
``eval_T`` (evaluation delay).

Agents: the memory agents of ``hardattn train`` (``hard-read``, ``hard-read-ac``,
``soft-read``, ``sab``, ``memoryless``) and ``lstm``: the ``memoryless`` agent with an LSTM
core, i.e. the plain recurrent controller trained by full backprop through time, without
reads (labelled ``agent: lstm``, ``core: lstm``); and ``hard-read-noclock``: ``hard-read`` with
``--time-code none`` (no absolute clock, for transfer to longer delays; ``time_code: none``).

Transfer (SAB's table): ``--transfer-T 200,500,1000`` takes the runs trained at
``--transfer-from`` (default: the smallest ``--T``), reloads each seed's validation-selected
model (``best.pt``) and scores it, argmax reads, on the fixed test episodes of
CopyMemory with delay ``eval_T`` (the same seeded test split that ``hardattn eval`` uses; the
model is never selected on the longer delays). ``--transfer-size`` test episodes per
delay; an entry ``T:n`` (``5000:32``) overrides it for that delay (the rollout costs
O(L^2) per episode). Rows: the same metrics with ``eval_T`` > ``T`` and
``labels.eval_episodes``.

Curriculum: ``--curriculum 20`` trains the agents at the warm-up delay 20 from scratch, then
at each ``--T`` in ascending order, each stage initialised (``--init-from``) from the previous
stage's validation-selected model of the same seed: 20 -> 100 -> 200 -> 300. Every stage is
scored like a run from scratch (its own validation and test episodes at its own delay); its
rows carry ``labels.curriculum`` (``"20>100>200"``: the stages up to this one; ``"none"`` for
runs from scratch) and ``labels.episodes_total`` (the episodes of all stages so far). With
``--curriculum-agents`` the ``--agents`` are trained from scratch as well.

Run: ``python benchmarks/memory_copy.py --seeds 3 --T 100,200,300 --agents hard-read,soft-read
--transfer-T 200,500,1000,2000,5000 [--episodes 20000 | --episodes 100:9600,300:3840]
[--device cuda]``. The committed ``copy_memory.json`` (the command is in it): ``--agents
hard-read,soft-read,sab,lstm --curriculum-agents hard-read,soft-read,sab,hard-read-noclock
--curriculum 20 --T 100,200,300 --episodes 20:9600,100:9600,200:5120,300:3200``. The original form
``--T 20 [--eval-T 20]`` (train at T, validate and test at eval-T) still works. Finished runs
(their report.json) are not trained again, interrupted ones resume from their last
checkpoint, and finished transfer scores (``transfer_T<eval_T>_n<n>.json`` in the run
folder) are not recomputed: re-running the same command after an interruption continues.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from hardattn.agents.memory_common import READER_SETTINGS, reader_settings
from hardattn.benchmarking import check_run_settings, result, resume_fields, write_results
from hardattn.config import TrainConfig

REPO = Path(__file__).resolve().parent.parent

# The readers' learning settings (hardattn.agents.memory_common.READER_SETTINGS) plus this
# benchmark's evaluation cadence.
DEFAULTS = dict(READER_SETTINGS, eval_every=50, eval_size=1000, test_size=2000, eval_batch=500,
                log_every=50, image_every=500, checkpoint_every=50, grad_stats_every=0,
                progress=False)
# Benchmark agent names that are a memory agent with other fields.
ALIASES = {"lstm": {"agent": "memoryless", "core": "lstm"},
           "hard-read-noclock": {"agent": "hard-read", "time_code": "none"}}


def agent_fields(agent: str) -> dict:
    """The defaults that apply to ``agent`` (the REINFORCE knobs only to the hard readers);
    an alias (``lstm``) gives its agent and fields."""
    extra = ALIASES.get(agent, {"agent": agent})
    fields = {k: v for k, v in DEFAULTS.items() if k not in READER_SETTINGS}
    return {**fields, **reader_settings(extra["agent"]), **extra}


def int_list(text: str) -> list[int]:
    return [int(x) for x in str(text).split(",") if x.strip()]


def transfer_list(text: str | None, default_n: int) -> list[tuple[int, int]]:
    """``"200,500,5000:32"`` -> ``[(200, default_n), (500, default_n), (5000, 32)]``."""
    out = []
    for item in (text or "").split(","):
        if item.strip():
            T, _, n = item.partition(":")
            out.append((int(T), int(n) if n else default_n))
    return out


def train_seed(base: dict, seed: int, run_dir: Path) -> dict:
    """Train one run (or reuse its report.json; resume it from its last checkpoint)."""
    report_file = run_dir / "report.json"
    fields = {**base, "seed": seed, "run_dir": str(run_dir)}
    check_run_settings(run_dir, TrainConfig(**fields).to_dict())
    if report_file.exists():
        return json.loads(report_file.read_text())
    fields.update(resume_fields(run_dir))  # resume, or start over
    from hardattn.agents.run import train

    return train(TrainConfig(**fields))


def transfer_score(run_dir: Path, eval_T: int, n: int, batch: int, device: str) -> dict:
    """Accuracy and CE (argmax reads) of the run's ``best.pt`` on ``n`` fixed test episodes of
    delay ``eval_T``; cached in ``run_dir/transfer_T<eval_T>_n<n>.json``."""
    cache = run_dir / f"transfer_T{eval_T}_n{n}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    from hardattn import checkpoint as ckpt
    from hardattn.agents import memory_common as mc
    from hardattn.agents import memory_readers as mr
    from hardattn.agents.run import resolve_device

    dev = resolve_device(device)
    state = ckpt.load_checkpoint(run_dir / "checkpoints" / "best.pt", map_location=dev)
    cfg = TrainConfig.from_dict({**state["config"], "eval_T": eval_T,
                                 "eval_batch": min(batch, n)})
    model = mr.make_model(cfg, mc.make_env(cfg, dev, 1)).to(dev)
    model.load_state_dict(state["model"])
    t0 = time.perf_counter()
    res = mc.MemoryEvaluator(cfg, dev, "test", n)(model, mr.rollout)
    out = {"eval_T": eval_T, "n": n, "accuracy_pct": res["accuracy"], "ce": res["ce"],
           "read_accuracy_pct": res.get("read_accuracy"), "update": state.get("update"),
           "wall_s": time.perf_counter() - t0}
    cache.write_text(json.dumps(out, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description="memory readers on CopyMemory: last-10 accuracy")
    p.add_argument("--agents", default="hard-read,hard-read-ac,soft-read,memoryless",
                   help="comma-separated memory agents (and 'lstm': memoryless, LSTM core)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1)")
    p.add_argument("--T", default="20", help="training delay(s) T, comma-separated")
    p.add_argument("--eval-T", type=int, default=None,
                   help="validation and test delay of the training runs (default: each T)")
    p.add_argument("--transfer-T", default=None,
                   help="comma-separated longer delays to score the --transfer-from runs at "
                        "(an entry T:n uses n test episodes)")
    p.add_argument("--transfer-from", type=int, default=None,
                   help="training delay whose runs are transferred (default: smallest --T)")
    p.add_argument("--transfer-size", type=int, default=500,
                   help="test episodes per transfer delay (default 500)")
    p.add_argument("--transfer-batch", type=int, default=100,
                   help="episodes per evaluation batch of the transfer scores")
    p.add_argument("--curriculum", type=int, default=None,
                   help="warm-up delay T0 of a curriculum: the --curriculum-agents train at T0 "
                        "from scratch, then at each --T (ascending), each stage initialised "
                        "from the previous stage's validation-selected model (--init-from); "
                        "rows carry labels.curriculum (e.g. '20>100>200'; 'none' from scratch) "
                        "and labels.episodes_total (all stages)")
    p.add_argument("--curriculum-agents", default=None,
                   help="comma-separated agents trained with the curriculum, while --agents "
                        "train from scratch (default: the --agents, with the curriculum only)")
    p.add_argument("--episodes", default="20000",
                   help="training episodes per run; or per T: 100:9600,300:3840")
    p.add_argument("--eval-size", type=int, default=DEFAULTS["eval_size"],
                   help="validation episodes")
    p.add_argument("--test-size", type=int, default=DEFAULTS["test_size"],
                   help="test episodes (scored once)")
    p.add_argument("--eval-every", type=int, default=DEFAULTS["eval_every"],
                   help="validate every N updates")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: all cores)")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--runs", default=str(REPO / "runs" / "bench"), help="run folders go here")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    Ts = int_list(args.T)
    budgets = transfer_list(args.episodes, 0)
    single = len(budgets) == 1 and budgets[0][1] == 0
    if single:  # one number: every T (and the warm-up delay)
        budgets = [(T, budgets[0][0]) for T in Ts + ([args.curriculum] if args.curriculum
                                                     else [])]
    episodes_at = dict(budgets)
    if any(T not in episodes_at or episodes_at[T] <= 0 for T in Ts):
        p.error(f"--episodes {args.episodes!r} gives no budget for every --T {Ts}")
    transfers = transfer_list(args.transfer_T, args.transfer_size)
    transfer_from = args.transfer_from if args.transfer_from is not None else min(Ts)
    if transfers and transfer_from not in Ts:
        p.error(f"--transfer-from {transfer_from} is not one of --T {Ts}")
    agents = [a for a in args.agents.split(",") if a]
    curriculum_agents = [a for a in (args.curriculum_agents or "").split(",") if a]
    scratch_agents = agents
    if curriculum_agents and args.curriculum is None:
        p.error("--curriculum-agents needs --curriculum T0 (the warm-up delay)")
    if args.curriculum is not None:
        # Without --curriculum-agents, --agents train with the curriculum only.
        scratch_agents = agents if curriculum_agents else []
        curriculum_agents = curriculum_agents or agents
        if not 1 <= args.curriculum < min(Ts):
            p.error(f"--curriculum {args.curriculum} must be a delay >= 1 below every --T {Ts}")
        if args.curriculum not in episodes_at:
            p.error(f"--episodes {args.episodes!r} gives no budget for the warm-up delay "
                    f"--curriculum {args.curriculum}; add {args.curriculum}:N")
    t0 = time.perf_counter()
    rows, device = [], "cpu"

    def add_rows(labels: dict, cfg_dict: dict, acc: list, ce: list) -> None:
        rows.append(result("last10_accuracy_pct", acc, "%", True, labels, cfg_dict))
        rows.append(result("last10_ce", ce, "nats", False, labels, cfg_dict))

    def train_group(agent: str, T: int, prefix: str, init_dirs: list[Path] | None,
                    labels_extra: dict) -> list[Path]:
        """All seeds of ``agent`` at delay ``T`` (each initialised from ``init_dirs[seed]``
        when given); adds their rows and returns their run folders."""
        nonlocal device
        eval_T = args.eval_T or T
        base = {**agent_fields(agent), "env": "CopyMemory-v0",
                "memory_T": T, "eval_T": eval_T, "total_images": episodes_at[T],
                "eval_size": args.eval_size, "test_size": args.test_size,
                "eval_every": args.eval_every,
                "eval_batch": min(DEFAULTS["eval_batch"], args.eval_size, args.test_size),
                "device": args.device, "threads": args.threads}
        run_dirs = [Path(args.runs) / f"copy_memory_{prefix}T{T}__{agent}__{seed}"
                    for seed in range(args.seeds)]
        reports = [train_seed({**base, "init_from": str(init_dirs[seed]) if init_dirs else None},
                              seed, d) for seed, d in enumerate(run_dirs)]
        device = reports[-1]["device"]
        cfg_dict = dataclasses.asdict(TrainConfig(**base))
        episodes = sorted({r["episodes"] for r in reports})
        labels = {"agent": agent, "T": T, "eval_T": eval_T, "core": base["core"],
                  "time_code": base.get("time_code", "absolute"),
                  "episodes": episodes[0] if len(episodes) == 1 else episodes, **labels_extra}
        add_rows(labels, cfg_dict, [r["last10_accuracy_pct"] for r in reports],
                 [r["last10_ce"] for r in reports])
        rows.append(result("episodes_per_s", [r["episodes_per_s"] for r in reports],
                           "episodes/s", True, labels, cfg_dict))
        rows.append(result("wall_s", [r["wall_s"] for r in reports], "s", False, labels,
                           cfg_dict))
        print(f"{agent} T={T} {labels_extra}: "
              f"{[round(r['last10_accuracy_pct'], 2) for r in reports]}", flush=True)
        if T == transfer_from:
            for tT, n in transfers:
                scores = [transfer_score(d, tT, n, args.transfer_batch, args.device)
                          for d in run_dirs]
                add_rows({**labels, "eval_T": tT, "eval_episodes": n}, cfg_dict,
                         [s["accuracy_pct"] for s in scores], [s["ce"] for s in scores])
                print(f"transfer {agent} T={T} -> {tT}: "
                      f"{[round(s['accuracy_pct'], 2) for s in scores]}", flush=True)
        return run_dirs

    for T in Ts:  # from scratch
        for agent in scratch_agents:
            train_group(agent, T, "", None, {"curriculum": "none"})
    for agent in curriculum_agents:  # warm-up delay, then each T from the previous stage
        stages = [args.curriculum] + sorted(Ts)
        prev = None
        for i, T in enumerate(stages):
            episodes_total = sum(episodes_at[s] for s in stages[:i + 1])
            prev = train_group(agent, T, f"cur{args.curriculum}_", prev,
                               {"curriculum": ">".join(str(s) for s in stages[:i + 1]),
                                "episodes_total": episodes_total})
    dev = torch.device("cuda" if device.startswith("cuda") else "cpu")
    return write_results("copy_memory", rows, time.perf_counter() - t0, dev,
                         command="python " + " ".join(sys.argv), out_dir=args.out)


if __name__ == "__main__":
    print(main())
