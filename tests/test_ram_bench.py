"""``benchmarks/ram_bench.py``: the RAM accuracy benchmarks' driver (tiny runs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from ram_bench import main  # noqa: E402

TINY = {"core_hidden": 16, "glimpse_hidden": 16, "what_hidden": 8, "where_hidden": 8,
        "eval_every": 2, "eval_size": 50, "test_size": 50, "eval_batch": 50, "log_every": 1,
        "image_every": 100, "grad_stats_every": 0, "checkpoint_every": 2, "progress": False}


def _run(tmp_path, *extra: str) -> dict:
    argv = ["--agents", "reinforce", "--seeds", "1", "--epochs", "0.0004", "--batch-size", "4",
            "--threads", "1", "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs"),
            *extra]
    path = main("mnist28", "GlimpseMNIST-v0", TINY, argv)
    return json.loads(Path(path).read_text())


def test_writes_test_error_over_seeds_and_reuses_finished_runs(data_root, tmp_path):
    first = _run(tmp_path)
    rows = {r["metric"]: r for r in first["results"]}
    assert set(rows) >= {"test_error_pct", "val_error_pct", "images_per_s", "wall_s"}
    err = rows["test_error_pct"]
    assert err["labels"] == {"agent": "reinforce", "preset": "mnist28", "glimpses": 6,
                             "epochs": 0.0004, "augment_shift": 0, "std": 0.15,
                             "lr": 0.001, "scales": 1}
    assert len(err["per_seed"]) == 1 and 0.0 <= err["value"] <= 100.0
    meta = json.loads((tmp_path / "runs" / "ram_mnist28__reinforce__0" / "meta.json").read_text())
    assert err["config"]["trained_at_commits"] == [meta["git_commit"]]
    report = tmp_path / "runs" / "ram_mnist28__reinforce__0" / "report.json"
    stamp = report.stat().st_mtime_ns
    again = _run(tmp_path)  # same settings: the finished run is read back, not retrained
    assert report.stat().st_mtime_ns == stamp
    assert again["results"][0]["per_seed"] == err["per_seed"]


def test_a_finished_run_with_other_settings_is_not_reported_as_this_budget(data_root, tmp_path):
    _run(tmp_path)
    # Regression: a run folder trained for another budget or batch was reused silently and
    # its error reported under the new --epochs label.
    stale = r"epochs=0\.0004 \(asked: 0\.0008\).*--runs"
    with pytest.raises(ValueError, match=stale):
        _run(tmp_path, "--epochs", "0.0008")
    with pytest.raises(ValueError, match="batch_size"):
        _run(tmp_path, "--batch-size", "8")


def test_merge_keeps_the_rows_of_other_settings_with_their_source(data_root, tmp_path):
    first = _run(tmp_path)
    # Another augmentation in other run folders: without --merge the file holds only it.
    shifted = _run(tmp_path, "--augment-shift", "2", "--runs", str(tmp_path / "runs2"))
    assert {r["labels"]["augment_shift"] for r in shifted["results"]} == {2}
    assert shifted["results"][0]["config"]["augment_shift"] == 2
    wider = _run(tmp_path, "--std", "0.25", "--lr", "0.002", "--runs", str(tmp_path / "runs3"))
    assert wider["results"][0]["labels"]["std"] == wider["results"][0]["config"]["std"] == 0.25
    assert wider["results"][0]["labels"]["lr"] == wider["results"][0]["config"]["lr"] == 0.002
    report = json.loads((tmp_path / "runs3" / "ram_mnist28__reinforce__0" / "config.json")
                        .read_text())
    assert report["std"] == 0.25 and report["lr"] == 0.002
    two = _run(tmp_path, "--scales", "2", "--runs", str(tmp_path / "runs4"))
    assert two["results"][0]["labels"]["scales"] == two["results"][0]["config"]["scales"] == 2
    assert json.loads((tmp_path / "runs4" / "ram_mnist28__reinforce__0" / "config.json")
                      .read_text())["scales"] == 2
    # Put the first file back, as an older one without the augment_shift label.
    out = tmp_path / "out" / "ram_mnist28.json"
    for row in first["results"]:
        del row["labels"]["augment_shift"], row["labels"]["std"], row["labels"]["lr"]
        del row["labels"]["scales"]
    out.write_text(json.dumps(first))
    merged = _run(tmp_path, "--augment-shift", "2", "--runs", str(tmp_path / "runs2"),
                  "--merge")
    by = {(r["metric"], r["labels"]["augment_shift"]): r for r in merged["results"]}
    assert len(by) == len(merged["results"]) == 8
    old = by[("test_error_pct", 0)]
    assert old["labels"]["scales"] == 1  # the older row gets its preset's default back
    assert old["per_seed"] == first["results"][0]["per_seed"]
    assert old["source"]["command"] == first["command"]
    assert "source" not in by[("test_error_pct", 2)]
    # Merging again replaces this call's rows instead of repeating them.
    again = _run(tmp_path, "--augment-shift", "2", "--runs", str(tmp_path / "runs2"), "--merge")
    assert len(again["results"]) == 8
