"""The memory-reader benchmarks (benchmarks/memory_copy.py, associative_recall.py,
memory_cost.py) run end to end with tiny settings and write rows with the right labels."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def rows_of(path) -> list[dict]:
    blob = json.loads(Path(path).read_text())
    assert blob["wall_s"] >= 0 and blob["device"].startswith("cpu")
    assert blob["device"].endswith(f"torch {torch.__version__}")  # builds differ in speed
    return blob["results"]


def test_memory_copy_several_T_and_transfer(tmp_path):
    bench = load("memory_copy")
    argv = ["--agents", "hard-read,soft-read,lstm", "--seeds", "2", "--T", "3,4",
            "--episodes", "3:64,4:128", "--eval-size", "8", "--test-size", "8", "--device", "cpu",
            "--transfer-T", "6,9:4", "--transfer-batch", "4", "--threads", "1",
            "--out", str(tmp_path / "results"), "--runs", str(tmp_path / "runs")]
    out = bench.main(argv)
    assert Path(out).name == "copy_memory.json"
    rows = rows_of(out)
    keys = {(r["metric"], r["labels"]["agent"], r["labels"]["T"], r["labels"]["eval_T"])
            for r in rows}
    for agent in ("hard-read", "soft-read", "lstm"):
        for T in (3, 4):
            assert ("last10_accuracy_pct", agent, T, T) in keys
            assert ("last10_ce", agent, T, T) in keys
        for eval_T in (6, 9):  # transfer of the T=3 runs only
            assert ("last10_accuracy_pct", agent, 3, eval_T) in keys
            assert ("last10_ce", agent, 3, eval_T) in keys
            assert ("last10_accuracy_pct", agent, 4, eval_T) not in keys
    eps = {r["labels"]["T"]: r["labels"]["episodes"] for r in rows}
    assert eps == {3: 64, 4: 128}  # per-T budgets (whole batches of 64)
    transfer = [r for r in rows if r["labels"]["eval_T"] == 9]
    assert all(r["labels"]["eval_episodes"] == 4 and len(r["per_seed"]) == 2 for r in transfer)
    lstm = next(r for r in rows if r["labels"]["agent"] == "lstm")
    assert lstm["config"]["agent"] == "memoryless" and lstm["config"]["core"] == "lstm"
    assert all(0.0 <= r["value"] <= 100.0 for r in rows if r["metric"] == "last10_accuracy_pct")
    assert (tmp_path / "runs" / "copy_memory_T3__hard-read__1" / "transfer_T9_n4.json").exists()
    # Resumable: everything finished is reused, the file is written again identically.
    again = rows_of(bench.main(argv))
    assert [(r["metric"], r["labels"], r["per_seed"]) for r in again] == \
        [(r["metric"], r["labels"], r["per_seed"]) for r in rows]



def test_memory_copy_curriculum_chains_the_stages(tmp_path):
    bench = load("memory_copy")
    runs = tmp_path / "runs"
    argv = ["--agents", "lstm", "--curriculum-agents", "hard-read", "--curriculum", "2",
            "--seeds", "1", "--T", "3,4", "--episodes", "2:64,3:64,4:128", "--eval-size", "8",
            "--test-size", "8", "--device", "cpu", "--threads", "1",
            "--out", str(tmp_path / "results"), "--runs", str(runs)]
    rows = [r for r in rows_of(bench.main(argv)) if r["metric"] == "last10_accuracy_pct"]
    got = {(r["labels"]["agent"], r["labels"]["T"], r["labels"]["curriculum"],
            r["labels"].get("episodes_total")) for r in rows}
    assert got == {("lstm", 3, "none", None), ("lstm", 4, "none", None),
                   ("hard-read", 2, "2", 64), ("hard-read", 3, "2>3", 128),
                   ("hard-read", 4, "2>3>4", 256)}
    # Each stage starts from the validation-selected model of the stage before (same seed).
    stage = json.loads((runs / "copy_memory_cur2_T4__hard-read__0" / "config.json").read_text())
    assert stage["init_from"] == str(runs / "copy_memory_cur2_T3__hard-read__0")
    first = json.loads((runs / "copy_memory_cur2_T2__hard-read__0" / "config.json").read_text())
    assert first["init_from"] is None
    # A second call trains nothing new: every stage's report is reused.
    before = {p: p.stat().st_mtime for p in runs.glob("*/report.json")}
    bench.main(argv)
    assert {p: p.stat().st_mtime for p in runs.glob("*/report.json")} == before


def test_memory_copy_curriculum_needs_a_warm_up_budget_below_every_T(tmp_path):
    bench = load("memory_copy")
    base = ["--agents", "hard-read", "--T", "3,4", "--out", str(tmp_path), "--runs",
            str(tmp_path)]
    with pytest.raises(SystemExit):
        bench.main(base + ["--curriculum", "3", "--episodes", "64"])
    with pytest.raises(SystemExit):
        bench.main(base + ["--curriculum", "2", "--episodes", "3:64,4:64"])
    with pytest.raises(SystemExit):
        bench.main(base + ["--curriculum-agents", "hard-read", "--episodes", "64"])

def test_associative_recall_rows(tmp_path):
    bench = load("associative_recall")
    out = bench.main(["--seeds", "1", "--N", "3,5", "--episodes", "64", "--eval-size", "8",
                      "--test-size", "8", "--device", "cpu", "--threads", "1",
                      "--out", str(tmp_path / "results"), "--runs", str(tmp_path / "runs")])
    assert Path(out).name == "associative_recall.json"
    rows = rows_of(out)
    acc = {(r["labels"]["agent"], r["labels"]["N"]) for r in rows
           if r["metric"] == "accuracy_pct"}
    assert acc == {(a, n) for a in ("hard-read", "soft-read") for n in (3, 5)}
    assert all(r["config"]["memory_pairs"] == r["labels"]["N"] for r in rows)
    # The run folder records N: its config rebuilds the env with N pairs (hardattn eval).
    from hardattn import checkpoint as ckpt
    from hardattn.agents.memory_common import make_env
    from hardattn.config import TrainConfig

    state, _ = ckpt.load_latest(tmp_path / "runs" / "associative_recall_N5__hard-read__0")
    assert state["config"]["env"] == "AssociativeRecall-v0"
    env = make_env(TrainConfig(**state["config"]), torch.device("cpu"), 1)
    assert env.cfg.n_pairs == 5 and env.cfg.episode_len == 7



def test_associative_recall_takes_an_agent_without_a_read_score(tmp_path):
    """--read-score (default dot) went to every agent; memoryless reads no memory."""
    bench = load("associative_recall")
    out = bench.main(["--agents", "memoryless", "--seeds", "1", "--N", "3", "--episodes",
                      "64", "--eval-size", "8", "--test-size", "8", "--device", "cpu",
                      "--threads", "1", "--out", str(tmp_path / "results"), "--runs",
                      str(tmp_path / "runs")])
    assert {r["labels"]["agent"] for r in rows_of(out)} == {"memoryless"}


def test_associative_recall_curriculum_over_N(tmp_path):
    bench = load("associative_recall")
    runs = tmp_path / "runs"
    out = bench.main(["--agents", "hard-read", "--seeds", "1", "--N", "5,3,7", "--episodes", "64",
                      "--eval-size", "8", "--test-size", "8", "--device", "cpu", "--threads",
                      "1", "--curriculum", "--out", str(tmp_path / "results"), "--runs",
                      str(runs)])
    acc = {(r["labels"]["N"], r["labels"]["curriculum"], r["labels"].get("episodes_total"))
           for r in rows_of(out) if r["metric"] == "accuracy_pct"}
    assert acc == {(3, "none", None), (5, "none", None), (7, "none", None),
                   (5, "3>5", 128), (7, "3>5>7", 192)}
    stage = json.loads((runs / "associative_recall_cur3_N7__hard-read__0" / "config.json")
                       .read_text())
    assert stage["init_from"] == str(runs / "associative_recall_cur3_N5__hard-read__0")
    first = json.loads((runs / "associative_recall_cur3_N5__hard-read__0" / "config.json")
                       .read_text())
    assert first["init_from"] == str(runs / "associative_recall_N3__hard-read__0")

def test_memory_cost_rows(tmp_path):
    bench = load("memory_cost")
    out = bench.main(["--T", "5,20", "--batch-size", "2", "--repeats", "2", "--threads", "1",
                      "--out", str(tmp_path)])
    assert Path(out).name == "memory_cost_cpu.json"
    rows = rows_of(out)
    ms = {(r["labels"]["agent"], r["labels"]["T"]): r for r in rows
          if r["metric"] == "ms_per_step"}
    assert set(ms) == {(a, T) for a in ("hard-read", "soft-read", "sab") for T in (5, 20)}
    assert all(r["value"] > 0 and len(r["per_repeat"]) == 2 for r in ms.values())
    read = {(r["labels"]["agent"], r["labels"]["T"]): r["value"] for r in rows
            if r["metric"] == "cells_read_per_step"}
    assert read[("hard-read", 5)] == read[("hard-read", 20)] == 1.0
    assert read[("soft-read", 20)] > read[("soft-read", 5)] > 1.0  # grows with the memory
    assert read[("sab", 20)] <= 5.0  # at most k_top = 5 cells
    ratios = [r for r in rows if r["metric"] == "ratio"]
    assert {(r["labels"]["of"], r["labels"]["T"]) for r in ratios} == \
        {(a, T) for a in ("soft-read", "sab") for T in (5, 20)}
