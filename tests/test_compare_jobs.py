"""``hardattn compare --jobs N``: runs trained in parallel processes give the results of one at a
time; Ctrl-C checkpoints every running run and the same command resumes; a failing run stops
the others with a checkpoint and is named."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hardattn import checkpoint as ckpt

TINY_NET = ["core_hidden=32", "glimpse_hidden=32", "what_hidden=16", "where_hidden=16",
            "fc_hidden=32", "cnn_channels=4"]


def cli_args(out: Path, updates: int, jobs: int, agents: str = "reinforce,cnn") -> list[str]:
    return ["--preset", "mnist28", "--agents", agents, "--seeds", "1",
            "--budget-images", str(16 * updates), "--batch-size", "16", "--eval-every", "10",
            "--checkpoint-every", "10", "--eval-size", "100", "--test-size", "100",
            "--eval-batch", "100", "--device", "cpu", "--threads", "1", "--jobs", str(jobs),
            "--show", "2", "--no-progress", "--out", str(out), "--overrides", *TINY_NET]


_STARTED: list[subprocess.Popen] = []  # compare parents started by the running test


@pytest.fixture(autouse=True)
def _no_leftovers(tmp_path):
    """A failed assert must not leave a parent or its (maybe SIGSTOPped) children training on
    and slowing every later test."""
    yield
    for proc in _STARTED:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _STARTED.clear()
    for pid in _children(tmp_path):
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def start(args: list[str], workdir: Path) -> tuple[subprocess.Popen, Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    err = workdir / f"err{len(list(workdir.glob('err*')))}.txt"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(err, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "hardattn.cli", "compare", *args],
                                stdout=subprocess.DEVNULL, stderr=f, cwd=workdir, env=env)
    _STARTED.append(proc)
    return proc, err


def reports(out: Path) -> dict:
    return {p.parent.name: json.loads(p.read_text())["test_error_pct"]
            for p in sorted(out.glob("*/report.json"))}


def test_parallel_runs_equal_one_at_a_time_and_are_reused(data_root, tmp_path, capsys):
    from hardattn.agents.compare import compare
    from hardattn.agents.compare_config import CompareConfig

    def cfg(out: str, jobs: int) -> CompareConfig:
        return CompareConfig(preset="mnist28", agents="reinforce,cnn", seeds=2,
                             budget_images=16 * 6, batch_size=16, eval_every=3,
                             checkpoint_every=3, eval_size=100, test_size=100, eval_batch=100,
                             overrides=tuple(TINY_NET), device="cpu", progress=False, show=2,
                             threads=1, jobs=jobs, out=str(tmp_path / out))

    one = compare(cfg("one", 1))
    two = compare(cfg("two", 2))
    said = capsys.readouterr().out  # the children train without bars: the parent reports
    assert said.count("hardattn compare: started") == 4
    assert "finished cnn seed 1" in said and "(4/4 done, 0 running" in said
    assert two["trained"] == one["trained"] == 4
    keep = ("agent", "test_error_pct_mean", "test_error_pct_std", "val_error_pct_mean",
            "test_error_pct_per_seed", "params", "macs_per_image")
    assert [{k: r[k] for k in keep} for r in two["rows"]] == \
        [{k: r[k] for k in keep} for r in one["rows"]]
    for run in ("reinforce__seed0", "cnn__seed1"):  # the same weights, not only the same errors
        a = ckpt.load_latest(tmp_path / "one" / run)[0]["model"]
        b = ckpt.load_latest(tmp_path / "two" / run)[0]["model"]
        assert all((a[k] == b[k]).all() for k in a)
    again = compare(cfg("two", 2))
    assert again["trained"] == 0 and again["rows"] == two["rows"]


def _pid_of(run: Path) -> int | None:
    """PID of the compare_jobs child training ``run`` (its config, on its command line,
    names the run folder)."""
    pids = [pid for pid in _children(run.parent) if f'{run}"' in _cmdline(pid)]
    assert len(pids) <= 1, pids
    return pids[0] if pids else None


def _freeze_at_first_checkpoint(proc: subprocess.Popen, err: Path, runs: list[Path]) -> list[int]:
    """SIGSTOP each run's child as soon as it has a periodic checkpoint; their PIDs."""
    frozen: dict[Path, int] = {}
    deadline = time.monotonic() + 180
    while len(frozen) < len(runs):
        assert proc.poll() is None, err.read_text()
        assert time.monotonic() < deadline, f"no checkpoint in 180 s: {sorted(frozen)}"
        for r in runs:
            if r not in frozen and ckpt.periodic_checkpoints(r / "checkpoints"):
                pid = _pid_of(r)
                assert pid is not None, f"{r} has a checkpoint but no child"
                os.kill(pid, signal.SIGSTOP)
                frozen[r] = pid
        time.sleep(0.02)
    for r in runs:
        assert not (r / "report.json").exists(), f"{r} finished before it was frozen"
    return list(frozen.values())


def _pending(pid: int, sig: int) -> bool:
    """Whether ``sig`` waits, undelivered, for the (stopped) process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("ShdPnd:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    raise AssertionError(f"no ShdPnd in /proc/{pid}/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_ctrl_c_checkpoints_every_running_run_and_the_same_command_resumes(data_root, tmp_path):
    out = tmp_path / "cmp"
    args = cli_args(out, updates=300, jobs=2)
    proc, err = start(args, tmp_path)
    runs = [out / "reinforce__seed0", out / "cnn__seed0"]
    # Each run is frozen at its first checkpoint. Its 300 updates take a few seconds, and on a
    # busy machine one child can start seconds after the other: without the freeze the fast
    # run (cnn) could finish its budget before the slow one had checkpointed, and the test
    # would interrupt a comparison with one run left.
    pids = _freeze_at_first_checkpoint(proc, err, runs)
    proc.send_signal(signal.SIGINT)  # to the parent alone, as a terminal's Ctrl-C reaches it
    deadline = time.monotonic() + 60
    while not all(_pending(pid, signal.SIGINT) for pid in pids):  # the parent passed it on
        assert time.monotonic() < deadline, "the parent did not pass SIGINT on in 60 s"
        time.sleep(0.02)
    for pid in pids:
        os.kill(pid, signal.SIGCONT)
    rc = proc.wait(timeout=120)
    text = err.read_text()
    assert rc == 128 + signal.SIGINT, text
    assert "Traceback" not in text, text
    assert text.strip().splitlines()[-1].startswith("hardattn compare: stopped by SIGINT"), text
    for r in runs:  # each stopped at its next update with a checkpoint, before the budget
        assert text.count(f"resume with --resume {r}") == 1, text
        assert not (r / "report.json").exists()
        assert ckpt.load_latest(r)[0]["update"] < 299
    proc, err = start(args, tmp_path)
    assert proc.wait(timeout=300) == 0, err.read_text()
    # The resumed runs end where uninterrupted ones do.
    ref = tmp_path / "ref"
    proc, err = start(cli_args(ref, updates=300, jobs=1), tmp_path)
    assert proc.wait(timeout=300) == 0, err.read_text()
    assert reports(out) == reports(ref)
    for r in ("reinforce__seed0", "cnn__seed0"):
        a, b = ckpt.load_latest(out / r)[0]["model"], ckpt.load_latest(ref / r)[0]["model"]
        assert all((a[k] == b[k]).all() for k in a), r


def test_a_failing_run_stops_the_others_with_a_checkpoint_and_is_named(data_root, tmp_path):
    out = tmp_path / "cmp"
    bad = out / "cnn__seed0"
    bad.mkdir(parents=True)
    # A folder of another comparison: ensure_run refuses it (in the child).
    (bad / "config.json").write_text(json.dumps({"agent": "cnn", "batch_size": 32}))
    # A budget the other run cannot finish while the failing child starts, however late.
    proc, err = start(cli_args(out, updates=5000, jobs=2), tmp_path)
    rc = proc.wait(timeout=180)
    text = err.read_text()
    assert rc == 1, text
    assert "Traceback" not in text, text
    assert "was trained with batch_size=32 (asked: 16)" in text, text
    assert text.strip().splitlines()[-1].startswith(
        f"hardattn compare: error: run {str(bad)!r} failed with exit code 3"), text
    # The other run was stopped (with a checkpoint if it had started training): not finished.
    assert not (out / "reinforce__seed0" / "report.json").exists()


@pytest.mark.parametrize("jobs", [0, -1, True])
def test_bad_jobs_fail_before_training(data_root, tmp_path, jobs):
    from hardattn.agents.compare import compare
    from hardattn.agents.compare_config import CompareConfig

    with pytest.raises(ValueError, match=f"--jobs={jobs!r} must be an integer"):
        compare(CompareConfig(preset="mnist28", agents="cnn", jobs=jobs, device="cpu",
                              out=str(tmp_path / "cmp")))
    assert not (tmp_path / "cmp").exists()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:  # it ended
        return ""


def _children(out: Path) -> list[int]:
    """PIDs of the compare_jobs children training into ``out`` (none found without /proc)."""
    if not Path("/proc/self/cmdline").exists():
        return []
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
            and "hardattn.agents.compare_jobs" in (cmd := _cmdline(int(p.name)))
            and str(out) in cmd]


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc")
def test_children_stop_when_the_parent_is_killed(data_root, tmp_path):
    """They run in their own session (out of the terminal's reach): a parent killed outright
    (SIGKILL, or SIGHUP when its terminal closes) must not leave them training on, or the same
    command run again would train the same folders twice."""
    for how in (signal.SIGKILL, signal.SIGHUP):
        out = tmp_path / how.name
        proc, err = start(cli_args(out, updates=5000, jobs=2), tmp_path / how.name)
        deadline = time.monotonic() + 120
        runs = [out / "reinforce__seed0", out / "cnn__seed0"]
        while not all(ckpt.periodic_checkpoints(r / "checkpoints") for r in runs):
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, "no checkpoint in 120 s"
            time.sleep(0.2)
        assert len(_children(out)) == 2
        proc.send_signal(how)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 60
        while _children(out):
            assert time.monotonic() < deadline, f"children outlived the parent ({how.name})"
            time.sleep(0.2)
        for r in runs:
            assert not (r / "report.json").exists()


def _one_cnn_run(out: Path, updates: int) -> dict:
    """``train_parallel``'s input for one tiny cnn run of ``updates`` updates into ``out``."""
    from hardattn.agents.compare_config import CompareConfig

    cfg = CompareConfig(preset="mnist28", agents="cnn", seeds=1, budget_images=16 * updates,
                        batch_size=16, eval_every=10, checkpoint_every=10, eval_size=100,
                        test_size=100, eval_batch=100, overrides=tuple(TINY_NET), device="cpu",
                        progress=False, threads=1, jobs=1, out=str(out))
    return {("cnn", 0): cfg.train_config("cnn", 0)}


def test_a_signal_while_a_child_starts_reaches_it(data_root, tmp_path, monkeypatch):
    """A signal that landed between starting a child and recording it was never passed on:
    that run trained to its end while the others stopped."""
    from hardattn.agents import compare_jobs
    from hardattn.agents.run import TrainingInterrupted

    real = compare_jobs.subprocess.Popen

    def popen(*args, **kwargs):
        child = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # as a Ctrl-C at that moment
        return child

    monkeypatch.setattr(compare_jobs.subprocess, "Popen", popen)
    configs = _one_cnn_run(tmp_path / "cmp", updates=3000)
    t0 = time.monotonic()
    with pytest.raises(TrainingInterrupted):
        compare_jobs.train_parallel(configs, 2)
    assert not (tmp_path / "cmp" / "cnn__seed0" / "report.json").exists()
    assert time.monotonic() - t0 < 60


def _ctrl_c_after_a_fake_child_starts(monkeypatch, on_sigint: str) -> None:
    """``train_parallel`` starts, instead of a run, a child that evaluates the expression
    ``on_sigint`` on SIGINT; once it is ready, a Ctrl-C reaches the parent (which passes it
    on)."""
    from hardattn.agents import compare_jobs

    real = compare_jobs.subprocess.Popen
    child_code = ("import signal, sys, time\n"
                  f"signal.signal(signal.SIGINT, lambda *a: ({on_sigint}))\n"
                  "print('ready', flush=True)\n"
                  "time.sleep(60)\n")

    def popen(args, **kwargs):
        child = real([sys.executable, "-c", child_code], stdout=subprocess.PIPE, **kwargs)
        assert child.stdout.readline() == b"ready\n"
        os.kill(os.getpid(), signal.SIGINT)
        return child

    monkeypatch.setattr(compare_jobs.subprocess, "Popen", popen)


def test_a_run_signalled_while_its_interpreter_starts_counts_as_stopped(data_root, tmp_path,
                                                                       monkeypatch):
    """A SIGINT that reaches a child while Python itself starts (importing site or numpy)
    becomes exit code 1, not 128 + 2: a Ctrl-C at that moment was reported as a failed run.
    The child here exits 1 on SIGINT, as such an interpreter does."""
    from hardattn.agents import compare_jobs
    from hardattn.agents.run import TrainingInterrupted

    _ctrl_c_after_a_fake_child_starts(monkeypatch, "sys.exit(1)")
    with pytest.raises(TrainingInterrupted):
        compare_jobs.train_parallel(_one_cnn_run(tmp_path / "cmp", updates=30), 1)


def test_a_parent_that_fails_stops_its_running_children(data_root, tmp_path, monkeypatch):
    """When the parent's own loop raised (here the second child could not be started), it
    waited, without signalling them, for the running children to train to their end."""
    from hardattn.agents import compare_jobs

    real, started = compare_jobs.subprocess.Popen, []

    def popen(args, **kwargs):
        if started:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        started.append(real([sys.executable, "-c", "import time; time.sleep(60)"], **kwargs))
        return started[-1]

    monkeypatch.setattr(compare_jobs.subprocess, "Popen", popen)
    configs = {**_one_cnn_run(tmp_path / "a", updates=30), **{
        ("cnn", 1): _one_cnn_run(tmp_path / "b", updates=30)[("cnn", 0)]}}
    t0 = time.monotonic()
    with pytest.raises(BlockingIOError):
        compare_jobs.train_parallel(configs, 2)
    assert time.monotonic() - t0 < 30
    assert started[0].poll() == -signal.SIGTERM


def test_a_closed_output_pipe_does_not_turn_a_stop_into_an_error(data_root, tmp_path,
                                                                  monkeypatch):
    """``hardattn compare --jobs 2 | tee log`` and Ctrl-C: tee dies too, the parent's
    'stopped' line hit a broken pipe, and the user got 'Broken pipe' instead of the resume
    message."""
    import builtins

    from hardattn.agents import compare_jobs
    from hardattn.agents.run import TrainingInterrupted

    real_print = builtins.print

    def print_(*args, **kwargs):
        if kwargs.get("file") is None and any("stopped (exit code" in str(a) for a in args):
            raise BrokenPipeError(32, "Broken pipe")
        real_print(*args, **kwargs)

    real = compare_jobs.subprocess.Popen

    def popen(args, **kwargs):
        child = real([sys.executable, "-c", "import time; time.sleep(60)"], **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return child

    monkeypatch.setattr(builtins, "print", print_)
    monkeypatch.setattr(compare_jobs.subprocess, "Popen", popen)
    with pytest.raises(TrainingInterrupted):
        compare_jobs.train_parallel(_one_cnn_run(tmp_path / "cmp", updates=30), 1)


def test_a_run_that_fails_to_checkpoint_when_stopped_is_reported_failed(data_root, tmp_path,
                                                                         monkeypatch):
    """A signalled child counts as stopped whatever its exit code (its interpreter may not
    have started), except the code of an error it reported itself: a stop checkpoint that
    could not be written (full disk) was reported as 'every running run checkpointed'."""
    from hardattn.agents import compare_jobs

    _ctrl_c_after_a_fake_child_starts(  # its stop checkpoint fails
        monkeypatch, f"print('error: could not write checkpoint', file=sys.stderr), "
                     f"sys.exit({compare_jobs.RUN_ERROR_EXIT})")
    with pytest.raises(ChildProcessError, match="failed with exit code"):
        compare_jobs.train_parallel(_one_cnn_run(tmp_path / "cmp", updates=30), 1)
