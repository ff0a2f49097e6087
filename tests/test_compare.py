"""``hardattn compare``: the matrix, its outputs, resumability, config checks."""

from __future__ import annotations

import csv
import json
import time

import pytest

OVERRIDES = ("core_hidden=32", "glimpse_hidden=32", "what_hidden=16", "where_hidden=16",
             "fc_hidden=32", "feature_channels=8", "log_every=1", "image_every=3")


def for_agents(overrides: tuple, agents: str) -> tuple:
    """``overrides`` without the fields no agent of ``agents`` reads (compare refuses those)."""
    from hardattn.config import AGENT_FIELDS

    names = agents.split(",")
    return tuple(o for o in overrides if o.split("=")[0] not in AGENT_FIELDS
                 or set(AGENT_FIELDS[o.split("=")[0]]) & set(names))


def tiny(tmp_path, **kw):
    from hardattn.agents.compare import CompareConfig

    base = dict(preset="mnist28", agents="reinforce,soft-glimpse", seeds=2,
                budget_images=16 * 6, batch_size=16, eval_every=3, checkpoint_every=3,
                eval_size=100, test_size=100, eval_batch=100, overrides=OVERRIDES,
                device="cpu", progress=False, show=3, out=str(tmp_path / "cmp"))
    base.update(kw)
    if base["agents"]:
        base["overrides"] = for_agents(base["overrides"], base["agents"])
    return CompareConfig(**base)


def snapshot(folder) -> dict:
    """Every event file and report of the runs, with its size and mtime."""
    files = list(folder.rglob("events.out.tfevents.*")) + list(folder.rglob("report.json")) \
        + list(folder.rglob("*.pt"))
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in files}


def test_compare_writes_every_output_and_a_second_call_trains_nothing(data_root, tmp_path):
    from hardattn.agents.compare import compare
    from hardattn.agents.compare_report import CSV_COLUMNS

    cfg = tiny(tmp_path)
    t0 = time.perf_counter()
    summary = compare(cfg)
    first_s = time.perf_counter() - t0
    out = tmp_path / "cmp"
    assert summary["trained"] == 4
    for name in ("results.md", "results.csv", "learning_curves.png", "error_vs_glimpses.png",
                 "attention.png"):
        assert (out / name).stat().st_size > 300, name
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r["agent"] for r in rows] == ["reinforce", "soft-glimpse"]
    for r in rows:
        assert r["runs"] == "2" and r["images"] == "96" and r["glimpses"] == "6"
        assert r["pixels_read_per_image"] == str(6 * 64)  # 6 glimpses x 1 scale x 8 x 8
        assert int(r["macs_per_image"]) > 0 and int(r["params"]) > 0
        assert len(r["test_error_pct_per_seed"].split(";")) == 2
        assert float(r["wall_s_mean"]) > 0 and float(r["images_per_s_mean"]) > 0
    md = (out / "results.md").read_text()
    assert "| reinforce |" in md and "| soft-glimpse |" in md and "attention.png" in md
    assert "Overrides: `core_hidden=32`, `glimpse_hidden=32`" in md  # what the runs changed
    from hardattn.benchmarking import run_commit

    sha = (run_commit(out / "reinforce__seed0") or "unknown")[:8]
    assert f"reinforce {sha};" in md  # one commit for both seeds: listed once
    # One TensorBoard folder: every run is a subfolder of --out with its own events.
    for agent in ("reinforce", "soft-glimpse"):
        for seed in (0, 1):
            run = out / f"{agent}__seed{seed}"
            assert list(run.glob("events.out.tfevents.*")) and (run / "report.json").exists()
            analysis = json.loads((run / "compare_analysis.json").read_text())
            report = json.loads((run / "report.json").read_text())
            # Anytime read-out after the trained number of glimpses = the validation error
            # of the selected model: the hard adapter reproduces the env's evaluation.
            assert len(analysis["val_error_by_glimpses"]) == 9
            assert analysis["val_error_by_glimpses"][5] == pytest.approx(report["val_error_pct"])

    before = snapshot(out)
    t0 = time.perf_counter()
    again = compare(cfg)
    second_s = time.perf_counter() - t0
    assert again["trained"] == 0
    assert snapshot(out) == before  # no new event file, report or checkpoint
    assert again["rows"] == summary["rows"]
    print(f"compare: first call {first_s:.1f} s, second call {second_s:.1f} s")
    assert second_s < max(0.6 * first_s, 5.0), (first_s, second_s)


def test_compare_resumes_an_interrupted_run_and_retrains_only_it(data_root, tmp_path):
    from hardattn import checkpoint as ckpt
    from hardattn.agents.compare import compare

    cfg = tiny(tmp_path, agents="soft-glimpse,cnn", seeds=1)
    compare(cfg)
    run = tmp_path / "cmp" / "cnn__seed0"
    report = json.loads((run / "report.json").read_text())
    weights = ckpt.load_latest(run)[0]["model"]
    # As if interrupted after update 2: no report, only the checkpoint of update 2.
    best_update = ckpt.load_checkpoint(run / "checkpoints" / "best.pt")["update"]
    for p in (run / "checkpoints").iterdir():
        if p.name != "ckpt_00000002.pt" and not (p.name == "best.pt" and best_update <= 2):
            p.unlink()
    (run / "report.json").unlink()
    summary = compare(cfg)
    assert summary["trained"] == 1
    resumed = json.loads((run / "report.json").read_text())
    assert resumed["test_error_pct"] == report["test_error_pct"]
    again = ckpt.load_latest(run)[0]["model"]
    assert all((weights[k] == again[k]).all() for k in weights)
    assert json.loads((run / "compare_time.json").read_text())["sessions"] == 2


@pytest.mark.parametrize("kw, match", [
    (dict(agents="reinforce,sb3-ppo"), "not comparable"),
    (dict(preset="copy-memory", agents="hard-read,reinforce"),
     "not comparable on --preset copy-memory"),
    (dict(agents="cnn,cnn"), "twice"),
    (dict(overrides=("nope=1",)), "not a TrainConfig field"),
    (dict(overrides=("draw.score=dot",)), "not in --agents"),
    # The shared protocol and budget are compare's own flags, never one agent's override.
    (dict(overrides=("reinforce.total_images=5000000",)), r"total_images.*--budget-images"),
    (dict(overrides=("reinforce.seed=7",)), r"'seed'.*--seeds"),
    (dict(overrides=("test_size=100",)), r"'test_size'.*--test-size"),
    (dict(overrides=("reinforce.samples_per_image=4",)), r"samples_per_image.*canvases"),
    (dict(overrides=("soft-glimpse.lr=0.01",)), r"'lr'.*--lr"),
    (dict(overrides=("mlp.run_dir=/tmp/x",)), r"'run_dir'.*--out"),
    # The learning-rate schedule is shared: for every agent or none (results.md names one).
    (dict(overrides=("mlp.lr_decay=false",)), r"'lr_decay'.*every agent"),
    # Every config is checked up front, env-level checks included: these failed only when
    # that agent's first run started, after the agents before it had trained.
    (dict(agents="reinforce,mlp", overrides=OVERRIDES + ("mlp.augment_shift=28",)),
     "--augment-shift=28"),
    (dict(agents="reinforce,mlp", overrides=OVERRIDES + ("mlp.patch=0",)), "patch=0"),
    (dict(overrides=OVERRIDES + ("baseline=Optimal",)), "--baseline='Optimal'"),
    (dict(seeds=0), "--seeds"),
    (dict(eval_size=150), "eval-size"),
])
def test_bad_compare_configs_fail_before_training(data_root, tmp_path, kw, match):
    from hardattn.agents.compare import compare

    with pytest.raises(ValueError, match=match):
        compare(tiny(tmp_path, **kw))
    assert not (tmp_path / "cmp").exists()


def test_a_run_folder_of_another_config_is_refused(data_root, tmp_path):
    from hardattn.agents.compare import compare

    compare(tiny(tmp_path, agents="mlp", seeds=1))
    with pytest.raises(ValueError, match="lr=0.001 \\(asked: 0.01\\)"):
        compare(tiny(tmp_path, agents="mlp", seeds=1, lr=0.01))


def test_cli_parses_compare_flags():
    import tyro

    from hardattn.agents.compare import CompareConfig
    from hardattn.cli import COMMANDS

    assert COMMANDS["compare"][:3] == ("hardattn.agents.compare", "CompareConfig", "compare")
    cfg = tyro.cli(CompareConfig, args=["--preset", "cluttered100", "--agents", "draw,cnn",
                                        "--seeds", "3", "--budget-images", "1000",
                                        "--overrides", "core_hidden=64", "draw.draw_grid=8"])
    assert cfg.agent_list() == ["draw", "cnn"] and cfg.seeds == 3
    assert cfg.out_dir().name == "compare-cluttered100"
    t = cfg.train_config("draw", 2)
    assert (t.agent, t.seed, t.total_images, t.core_hidden, t.draw_grid) == \
        ("draw", 2, 1000, 64, 8)
    assert cfg.train_config("cnn", 0).draw_grid is None


def test_memory_compare_writes_its_outputs_and_a_second_call_trains_nothing(tmp_path):
    from hardattn.agents.compare import MEMORY_COMPARABLE, compare
    from hardattn.agents.compare_memory import CSV_COLUMNS

    cfg = tiny(tmp_path, preset="copy-memory", agents=None, seeds=1, budget_images=16,
               batch_size=8, eval_every=2, checkpoint_every=2, eval_size=8, test_size=8,
               eval_batch=8, show=2, overrides=("memory_T=5", "core_hidden=8", "log_every=1"))
    assert cfg.agent_list() == list(MEMORY_COMPARABLE)  # the preset's agents by default
    summary = compare(cfg)
    out = tmp_path / "cmp"
    assert summary["trained"] == len(MEMORY_COMPARABLE)
    for name in ("results.md", "results.csv", "learning_curves.png", "reads.png"):
        assert (out / name).stat().st_size > 300, name
    with open(out / "results.csv") as f:
        rows = {r["agent"]: r for r in csv.DictReader(f)}
    assert tuple(next(iter(rows.values()))) == CSV_COLUMNS
    assert list(rows) == list(MEMORY_COMPARABLE)
    L = 5 + 20  # CopyMemory: 10 symbols, T - 1 blanks, a marker, 10 outputs
    for r in rows.values():
        assert r["runs"] == "1" and r["episodes"] == "16" and r["task"] == "T=5"
        assert 0.0 <= float(r["test_accuracy_pct_mean"]) <= 100.0
        assert float(r["test_accuracy_pct_per_seed"]) == float(r["test_accuracy_pct_mean"])
        assert int(r["params"]) > 0 and float(r["episodes_per_s_mean"]) > 0
    assert float(rows["hard-read"]["cells_read_per_step"]) == 1.0
    assert float(rows["memoryless"]["cells_read_per_step"]) == 0.0
    # Soft reads weigh every cell written so far: (1 + 2 + ... + L) / L on average.
    assert float(rows["soft-read"]["cells_read_per_step"]) == pytest.approx((L + 1) / 2)
    assert float(rows["sab"]["cells_read_per_step"]) <= 5.0  # k_top = 5
    # The memory settings apply: GRU controller, lr 3e-3 constant, the hard readers' entropy.
    stored = json.loads((out / "hard-read__seed0" / "config.json").read_text())
    assert (stored["core"], stored["lr"], stored["lr_decay"], stored["entropy_coef"],
            stored["memory_T"]) == ("gru", 3e-3, False, 2.0, 5)
    assert "| soft-read |" in (out / "results.md").read_text()
    before = snapshot(out)
    assert compare(cfg)["trained"] == 0
    assert snapshot(out) == before


def test_a_report_scored_on_older_canvases_is_rescored_once_with_the_same_model(
        data_root, tmp_path, monkeypatch):
    # Version-1 fixed sets drew digits with replacement; a reused run gets today's test error.
    from hardattn import data
    from hardattn.agents import evaluate as ev
    from hardattn.agents.compare import compare

    cfg = tiny(tmp_path, seeds=1)
    compare(cfg)
    out = tmp_path / "cmp"
    fresh = {}
    for agent in ("reinforce", "soft-glimpse"):
        report_file = out / f"{agent}__seed0" / "report.json"
        report = json.loads(report_file.read_text())
        assert report["canvas_set_version"] == data.GENERATOR_VERSION  # every new report says
        fresh[agent] = report["test_error_pct"]
        del report["canvas_set_version"]  # what a report of version 1 looks like
        report["test_error_pct"] = 123.0
        report_file.write_text(json.dumps(report))
    before = snapshot(out)
    summary = compare(cfg)
    assert summary["trained"] == 0
    for agent in ("reinforce", "soft-glimpse"):
        report = json.loads((out / f"{agent}__seed0" / "report.json").read_text())
        # The same best.pt on today's canvases: the figure training itself reported.
        assert report["test_error_pct"] == pytest.approx(fresh[agent])
        assert report["test_error_pct_by_canvas_set"] == {
            "1": 123.0, str(data.GENERATOR_VERSION): report["test_error_pct"]}
        assert report["canvas_set_version"] == data.GENERATOR_VERSION
        assert report["val_canvas_set_version"] == 1
    rows = {r["agent"]: r for r in csv.DictReader(open(out / "results.csv"))}
    assert float(rows["reinforce"]["test_error_pct_mean"]) == pytest.approx(fresh["reinforce"])
    assert "reinforce 1 run(s), soft-glimpse 1 run(s)" in (out / "results.md").read_text()
    assert {k: v for k, v in snapshot(out).items() if k.endswith(".pt")} == \
        {k: v for k, v in before.items() if k.endswith(".pt")}, "rescoring touched a checkpoint"

    def no_evaluation(*a, **k):
        raise AssertionError("a current report was evaluated again")

    monkeypatch.setattr(ev, "evaluate", no_evaluation)
    compare(cfg)  # current now: nothing is scored again


def test_rescore_leaves_memory_reports_alone(tmp_path):
    from hardattn.agents.evaluate import rescore_report

    report = {"agent": "hard-read", "test_error_pct": 12.5, "test_size": 64}
    (tmp_path / "report.json").write_text(json.dumps(report))
    assert rescore_report(tmp_path) == report


def test_wall_time_survives_a_session_whose_timing_was_never_written(data_root, tmp_path):
    # A SIGKILL skips compare's own timing; the report counts training time up to its end.
    from hardattn.agents.compare import compare

    cfg = tiny(tmp_path, agents="mlp", seeds=1)
    compare(cfg)
    run = tmp_path / "cmp" / "mlp__seed0"
    report_wall = json.loads((run / "report.json").read_text())["wall_s"]
    (run / "compare_time.json").write_text(json.dumps({"wall_s": 1e-6, "sessions": 1}))
    compare(cfg)
    rows = list(csv.DictReader(open(tmp_path / "cmp" / "results.csv")))
    assert float(rows[0]["wall_s_mean"]) == pytest.approx(report_wall, abs=1e-3)  # csv: 4 d.p.


def test_results_name_the_learning_rate_schedule(data_root, tmp_path):
    from hardattn.agents.compare import compare

    compare(tiny(tmp_path, agents="mlp", seeds=1, overrides=OVERRIDES + ("lr_decay=false",)))
    md = (tmp_path / "cmp" / "results.md").read_text()
    assert "lr 0.001, constant)" in md and "cosine" not in md


def test_benchmark_json_reports_the_wall_time_of_results_md(data_root, tmp_path):
    # Regression: results.md took max(compare_time.json, report), the JSON compare_time.json
    # alone, so a session lost to SIGKILL halved the JSON's wall time (and doubled images/s).
    from hardattn.agents.compare import benchmark

    argv = ["--agents", "mlp", "--seeds", "1", "--budget-images", "256", "--eval-every", "1",
            "--eval-size", "100", "--test-size", "100", "--threads", "1",
            "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "res"),
            "--overrides", "fc_hidden=16"]
    benchmark("mnist28", 256, argv)
    run = tmp_path / "runs" / "mlp__seed0"
    report_wall = json.loads((run / "report.json").read_text())["wall_s"]
    (run / "compare_time.json").write_text(json.dumps({"wall_s": 1e-6, "sessions": 1}))
    benchmark("mnist28", 256, argv)
    rows = json.loads((tmp_path / "res" / "compare_mnist28.json").read_text())["results"]
    wall = next(r for r in rows if r["metric"] == "wall_s")
    ips = next(r for r in rows if r["metric"] == "images_per_s")
    assert wall["value"] == pytest.approx(report_wall)
    assert ips["value"] == pytest.approx(256 / report_wall)
    md_rows = list(csv.DictReader(open(tmp_path / "res" / "compare_mnist28" / "results.csv")))
    assert float(md_rows[0]["wall_s_mean"]) == pytest.approx(wall["value"], abs=1e-3)


def test_a_global_override_goes_to_the_agents_that_read_it(data_root, tmp_path):
    """``feature_channels`` is soft-cnn's: given for all, the other agents keep their config
    (validate refuses it on them); given where no agent reads it, compare refuses it."""
    cfg = tiny(tmp_path, agents="reinforce,soft-cnn")
    assert "feature_channels=8" in cfg.overrides
    assert cfg.train_config("soft-cnn", 0).feature_channels == 8
    assert cfg.train_config("reinforce", 0).feature_channels == 64  # its default: unused
    with pytest.raises(ValueError, match=r"'feature_channels' is read by --agent soft-cnn"):
        from hardattn.agents.compare import CompareConfig

        CompareConfig(preset="mnist28", agents="reinforce", overrides=("feature_channels=8",),
                      device="cpu").validate()


def test_run_records_and_timing_are_written_atomically(data_root, tmp_path, monkeypatch):
    """config.json, meta.json and compare_time.json were plain writes: one cut short (a kill, a
    second Ctrl-C, a full disk) failed every later compare on that folder with a bare JSON
    error. They are written whole or not at all, and a timing file that cannot be read (from
    an older version) counts as no time."""
    from hardattn import checkpoint as ckpt
    from hardattn.agents.compare import compare

    written, real = [], ckpt.atomic_write_text

    def atomic_write_text(path, text):
        written.append(str(path))
        return real(path, text)

    monkeypatch.setattr(ckpt, "atomic_write_text", atomic_write_text)
    cfg = tiny(tmp_path, agents="cnn", seeds=1)
    compare(cfg)
    run = tmp_path / "cmp" / "cnn__seed0"
    for name in ("config.json", "meta.json", "compare_time.json"):
        assert str(run / name) in written, name
    (run / "report.json").unlink()  # as if stopped: the next call resumes it
    (run / "compare_time.json").write_text('{"wall_s": 1')  # cut short by an older version
    compare(cfg)
    assert json.loads((run / "compare_time.json").read_text())["sessions"] == 1
