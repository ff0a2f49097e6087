"""Fault injection on real training processes: signals, SIGKILL, corrupted and unwritable
checkpoints.

Every run here is the same small GlimpseMNIST-v0 config (``train_args``), so each interrupted
and resumed run must end with exactly the weights and the TensorBoard curves of one
uninterrupted run of it (the module's ``reference``). Kill moments come from seeded
``random.Random`` generators.
"""

from __future__ import annotations

import errno
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hardattn import checkpoint as ckpt

B = 16  # canvases per update
N_UPDATES = 100
CKPT_EVERY = 5
# EventAccumulator size guidance: keep every event (0), not a reservoir sample.
SIZE = {"scalars": 0, "images": 0, "histograms": 0, "tensors": 0, "distributions": 0}


def train_args(run_dir: Path, **over) -> list[str]:
    """``hardattn train`` flags of the small config (``over``: flag -> value changes)."""
    flags = {"env": "GlimpseMNIST-v0", "device": "cpu", "seed": 3, "batch-size": B,
             "total-images": B * N_UPDATES, "eval-every": 10, "eval-size": 100,
             "test-size": 100, "eval-batch": 100, "log-every": 1, "image-every": 10,
             "grad-stats-every": 50, "checkpoint-every": CKPT_EVERY, "keep-checkpoints": 100,
             "threads": 1, "core-hidden": 64, "glimpse-hidden": 64, "what-hidden": 32,
             "where-hidden": 32, "run-dir": run_dir, **over}
    return [a for k, v in flags.items() for a in (f"--{k}", str(v))] + ["--no-progress"]


class Proc:
    """A ``python -m hardattn.cli train ...`` subprocess with its output in files."""

    def __init__(self, args: list[str], workdir: Path, cache: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        n = len(list(workdir.glob("out*.txt")))
        self.out_path, self.err_path = workdir / f"out{n}.txt", workdir / f"err{n}.txt"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HARDATTN_CACHE": str(cache)}
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.p = subprocess.Popen([sys.executable, "-m", "hardattn.cli", "train", *args],
                                      stdout=out, stderr=err, cwd=workdir, env=env)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def wait(self, timeout: float = 300) -> int:
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            pytest.fail(f"training did not end in {timeout} s; stderr:\n{self.stderr}")

    def finish(self) -> str:
        rc = self.wait()
        assert rc == 0, f"exit {rc}; stderr:\n{self.stderr}"
        assert "Traceback" not in self.stderr, self.stderr
        return self.stdout

    def wait_until(self, condition, what: str, timeout: float = 180) -> None:
        end = time.monotonic() + timeout
        while not condition():
            if self.p.poll() is not None:
                pytest.fail(f"training ended (exit {self.p.returncode}) before {what}; "
                            f"stderr:\n{self.stderr}")
            if time.monotonic() > end:
                pytest.fail(f"no {what} after {timeout} s; stderr:\n{self.stderr}")
            time.sleep(0.01)


@pytest.fixture
def start(tmp_path_factory):
    """Start training processes; any still running at the end of the test is killed."""
    started: list[Proc] = []
    cache = tmp_path_factory.getbasetemp() / "hardattn_cache"

    def _start(args: list[str], workdir: Path) -> Proc:
        proc = Proc(args, workdir, cache)
        started.append(proc)
        return proc

    yield _start
    for proc in started:
        if proc.p.poll() is None:
            proc.p.kill()
            proc.p.wait()


def periodic(run: Path) -> list[int]:
    """Updates of the periodic checkpoints on disk, newest first."""
    return [int(ckpt.PERIODIC.match(p.name).group(1))
            for p in ckpt.periodic_checkpoints(run / "checkpoints")]


def ckpt_path(run: Path, update: int) -> Path:
    return run / "checkpoints" / f"ckpt_{update:08d}.pt"


def events(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance=SIZE)  # purges orphaned (resumed) steps
    acc.Reload()
    return acc


def scalar_steps(acc, tag: str) -> list[int]:
    return [e.step for e in acc.Scalars(tag)]


def kill_at_random_moment(proc: Proc, run: Path, rng: random.Random, after: int) -> int:
    """SIGKILL once a checkpoint of an update >= ``after`` exists, up to 0.2 s later.

    Returns the newest checkpoint's update on disk once the process is dead.
    """
    proc.wait_until(lambda: periodic(run) and periodic(run)[0] >= after,
                    f"checkpoint of update >= {after}")
    time.sleep(rng.uniform(0.0, 0.2))
    assert proc.p.poll() is None, "the run ended before the kill; lower the kill targets"
    proc.p.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    return periodic(run)[0]


def resumed_from(stdout: str) -> tuple[Path, int]:
    m = re.search(r"^hardattn: resuming from (\S+) \(update (\d+)\)$", stdout, re.MULTILINE)
    assert m, stdout
    return Path(m.group(1)), int(m.group(2))


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory):
    """One uninterrupted run of ``train_args``: its final weights and TensorBoard events."""
    work = tmp_path_factory.mktemp("reference")
    run = work / "run"
    proc = Proc(train_args(run), work, tmp_path_factory.getbasetemp() / "hardattn_cache")
    proc.finish()
    return run


def assert_same_as_reference(run: Path, reference: Path) -> None:
    """Final weights and every TensorBoard step (no duplicates, no gaps) as uninterrupted."""
    last = N_UPDATES - 1
    a = ckpt.load_checkpoint(ckpt_path(run, last))["model"]
    b = ckpt.load_checkpoint(ckpt_path(reference, last))["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"weights {k} differ from the uninterrupted run"
    assert (run / "report.json").exists()

    got, want = events(run), events(reference)
    loss_steps = scalar_steps(got, "train/loss")
    assert len(set(loss_steps)) == len(loss_steps), "duplicated TensorBoard steps"
    assert loss_steps == [B * (u + 1) for u in range(N_UPDATES)]
    assert got.Tags()["scalars"] and set(got.Tags()["scalars"]) == set(want.Tags()["scalars"])
    for tag in want.Tags()["scalars"]:
        g, w = got.Scalars(tag), want.Scalars(tag)
        assert [e.step for e in g] == [e.step for e in w], tag
        if not tag.startswith("time/"):  # wall-clock scalars differ; the rest is determined
            assert [e.value for e in g] == [e.value for e in w], tag
    for kind in ("images", "histograms"):
        assert set(got.Tags()[kind]) == set(want.Tags()[kind]), kind
        for tag in want.Tags()[kind]:
            steps = [e.step for e in getattr(got, kind.capitalize())(tag)]
            assert steps == [e.step for e in getattr(want, kind.capitalize())(tag)], tag


# ---------------------------------------------------------------- SIGINT / SIGTERM


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_checkpoints_flushes_exits_in_one_line_and_resumes(reference, start, tmp_path,
                                                                   sig):
    rng = random.Random(1000 + int(sig))
    run = tmp_path / "run"
    proc = start(train_args(run), tmp_path)
    proc.wait_until(lambda: periodic(run), "first checkpoint")
    time.sleep(rng.uniform(0.0, 0.3))
    proc.p.send_signal(sig)
    rc = proc.wait(timeout=120)

    err = proc.stderr
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    m = re.fullmatch(rf"hardattn: stopped by {sig.name} after update (\d+); checkpoint saved, "
                     rf"resume with --resume {re.escape(str(run))}", lines[-1])
    assert m, err
    assert sum("stopped by" in line for line in lines) == 1, err
    assert rc == 128 + sig, f"exit code {rc}, expected 128 + {sig.name} = {128 + sig}"
    stopped = int(m.group(1))
    assert stopped < N_UPDATES - 1
    assert periodic(run)[0] == stopped
    assert ckpt.load_checkpoint(ckpt_path(run, stopped))["update"] == stopped
    assert not (run / "report.json").exists()

    # The event file is flushed: every update's scalars up to the stop are on disk.
    acc = events(run)
    assert scalar_steps(acc, "train/loss") == [B * (u + 1) for u in range(stopped + 1)]

    out = start(["--resume", str(run), "--no-progress"], tmp_path).finish()
    assert resumed_from(out) == (ckpt_path(run, stopped), stopped)
    assert_same_as_reference(run, reference)


# ---------------------------------------------------------------- SIGKILL


def test_sigkill_twice_then_resume_equals_the_uninterrupted_run(reference, start, tmp_path):
    rng = random.Random(20240611)
    run = tmp_path / "run"
    proc = start(train_args(run), tmp_path)
    target = rng.randint(CKPT_EVERY - 1, 25)
    for round_ in range(2):
        newest = kill_at_random_moment(proc, run, rng, after=target)
        # At most one checkpoint interval is lost: the scalars on disk (a lower bound of the
        # progress at the kill) are within one interval of the newest checkpoint.
        logged = scalar_steps(events(run), "train/loss")
        assert logged and logged[-1] // B - 1 - newest <= CKPT_EVERY, (logged[-1], newest)
        proc = start(["--resume", str(run), "--no-progress"], tmp_path)
        proc.wait_until(lambda p=proc: "resuming from" in p.stdout, "resume message")
        assert resumed_from(proc.stdout) == (ckpt_path(run, newest), newest), round_
        target = newest + CKPT_EVERY + rng.randint(0, 25)  # a checkpoint of this process
    proc.finish()
    assert_same_as_reference(run, reference)


# ---------------------------------------------------------------- corrupted checkpoints


def test_truncated_and_corrupted_latest_checkpoints_fall_back(reference, start, tmp_path):
    rng = random.Random(7)
    run = tmp_path / "run"
    proc = start(train_args(run), tmp_path)
    kill_at_random_moment(proc, run, rng, after=3 * CKPT_EVERY - 1)
    newest, second, good = periodic(run)[:3]
    truncated = ckpt_path(run, newest)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    garbage = ckpt_path(run, second)
    garbage.write_bytes(rng.randbytes(garbage.stat().st_size))

    out = start(["--resume", str(run), "--no-progress"], tmp_path).finish()
    for bad in (truncated, garbage):
        lines = [line for line in out.splitlines() if str(bad) in line]
        assert len(lines) == 1, out  # one line naming the bad file
        assert "truncated or corrupted" in lines[0] and "trying the previous" in lines[0]
    assert out.index(str(truncated)) < out.index(str(garbage)) < out.index("resuming from")
    assert resumed_from(out) == (ckpt_path(run, good), good)
    assert_same_as_reference(run, reference)


# ---------------------------------------------------------------- unwritable checkpoints


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def read_only_folders_block_writes(tmp: Path) -> bool:
    """False as root (CAP_DAC_OVERRIDE): chmod 555 does not stop it writing."""
    probe = tmp / "probe"
    probe.mkdir()
    probe.chmod(0o555)
    try:
        (probe / "x").write_bytes(b"")
        return False
    except PermissionError:
        return True
    finally:
        probe.chmod(0o755)


def test_read_only_checkpoint_folder_stops_in_one_line(data_root, start, tmp_path):
    if not read_only_folders_block_writes(tmp_path):
        pytest.skip("read-only folders do not stop this user (root) writing; the /dev/full "
                    "and in-process ENOSPC tests below cover an unwritable checkpoint")
    run = tmp_path / "run"
    proc = start(train_args(run), tmp_path)
    proc.wait_until(lambda: periodic(run), "first checkpoint")
    folder = run / "checkpoints"
    folder.chmod(0o555)
    try:
        before = snapshot(folder)  # nothing can change it from here on
        rc = proc.wait(timeout=120)
        after = snapshot(folder)
    finally:
        folder.chmod(0o755)
    err = proc.stderr
    assert rc == 1 and "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert re.fullmatch(r"hardattn train: error: could not write checkpoint '.*checkpoints/"
                        r"(best|ckpt_\d{8})\.pt': .*Permission denied.*\(the previous "
                        r"checkpoint, if any, is intact\)", line), err
    # A temporary file the run had opened before the chmod may be completed (its rename and
    # removal then fail): the checkpoints themselves must not change.
    assert {k: v for k, v in after.items() if ".tmp" not in k} == \
        {k: v for k, v in before.items() if ".tmp" not in k}


def test_full_disk_in_a_training_process_stops_in_one_line(data_root, start, tmp_path):
    """A real ENOSPC from the kernel: the run's temporary checkpoint names after the first
    checkpoint are links to /dev/full (the name is ``.<file>.tmp<pid>``)."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    run = tmp_path / "run"
    proc = start(train_args(run, **{"eval-every": 7}), tmp_path)
    folder = run / "checkpoints"
    folder.mkdir(parents=True)
    for u in range(2 * CKPT_EVERY - 1, N_UPDATES, CKPT_EVERY):
        (folder / f".ckpt_{u:08d}.pt.tmp{proc.p.pid}").symlink_to("/dev/full")
    first = ckpt_path(run, CKPT_EVERY - 1)
    proc.wait_until(first.exists, "first checkpoint")
    first_bytes = first.read_bytes()  # complete: it appears by an atomic rename
    rc = proc.wait(timeout=120)
    err = proc.stderr
    assert rc == 1 and "Traceback" not in err, err
    failed = ckpt_path(run, 2 * CKPT_EVERY - 1)
    assert err.strip().splitlines()[-1] == (
        f"hardattn train: error: could not write checkpoint {str(failed)!r}: [Errno 28] No "
        f"space left on device (the previous checkpoint, if any, is intact)"), err
    assert first.read_bytes() == first_bytes
    assert periodic(run) == [CKPT_EVERY - 1]
    assert not failed.exists() and not (run / "report.json").exists()
    left = [p.name for p in folder.iterdir() if ".tmp" in p.name and not p.is_symlink()]
    assert not left and not (folder / f".{failed.name}.tmp{proc.p.pid}").exists()
    assert ckpt.load_checkpoint(first)["update"] == CKPT_EVERY - 1


class _FailingWrites:
    """Makes ``hardattn.checkpoint`` fail like a full disk after ``allowed`` good checkpoints.

    ``how="write"``: the write of the temporary file fails half-way; ``how="replace"``: the
    rename over the final name fails. ``before`` is the folder as it was when the first
    failing save started.
    """

    def __init__(self, monkeypatch, how: str, allowed: int, folder: Path | None = None) -> None:
        import builtins

        self.how, self.allowed, self.folder = how, allowed, folder
        self.saves, self.failed, self.before = 0, [], None
        real_open, real_os = builtins.open, os
        spy = self

        class FullFile:
            def __init__(self, f) -> None:
                self.f, self.written = f, 0

            def write(self, data) -> int:
                if self.written > 64:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self.written += len(data)
                return self.f.write(data)

            def __getattr__(self, name):
                return getattr(self.f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

        def fake_open(file, mode="r", *args, **kwargs):
            # Checkpoints (.pt) only: the run's JSON records are written atomically too.
            if "w" not in mode or ".pt.tmp" not in os.fsdecode(file):
                return real_open(file, mode, *args, **kwargs)
            spy.saves += 1
            if spy.saves <= spy.allowed:
                return real_open(file, mode, *args, **kwargs)
            spy._failing(Path(file).parent / Path(file).name[1:].split(".tmp")[0])
            f = real_open(file, mode, *args, **kwargs)
            return FullFile(f) if spy.how == "write" else f

        class OsProxy:
            def __getattr__(self, name):
                return getattr(real_os, name)

            @staticmethod
            def replace(src, dst):
                if spy.how == "replace" and spy.saves > spy.allowed and \
                        os.fsdecode(dst).endswith(".pt"):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
                return real_os.replace(src, dst)

        monkeypatch.setattr(ckpt, "open", fake_open, raising=False)
        monkeypatch.setattr(ckpt, "os", OsProxy())

    def _failing(self, target: Path) -> None:
        self.failed.append(target)
        if self.before is None:
            self.before = snapshot(self.folder or target.parent)


@pytest.mark.parametrize("how", ["write", "replace", "dev-full"])
def test_full_disk_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch, how):
    path = tmp_path / "ckpt_00000004.pt"
    ckpt.save_checkpoint(path, {"model": {"w": torch.arange(4.0)}, "update": 4})
    old = path.read_bytes()
    if how == "dev-full":  # a real ENOSPC: the temporary file is a link to /dev/full
        if not os.path.exists("/dev/full"):
            pytest.skip("no /dev/full on this system")
        (tmp_path / f".{path.name}.tmp{os.getpid()}").symlink_to("/dev/full")
    else:
        fail = _FailingWrites(monkeypatch, how, allowed=0)
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.save_checkpoint(path, {"model": {"w": torch.zeros(10_000)}, "update": 9})
    msg = str(info.value)
    assert "\n" not in msg and repr(str(path)) in msg
    assert "previous checkpoint, if any, is intact" in msg
    if how != "write":  # (a failing write inside torch.save comes back rewrapped by torch)
        assert "[Errno 28] No space left on device" in msg
    if how != "dev-full":
        assert fail.failed == [path]
    assert path.read_bytes() == old  # bytes equal: the old checkpoint survives
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    monkeypatch.undo()
    assert ckpt.load_checkpoint(path)["update"] == 4


@pytest.mark.parametrize("how", ["write", "replace"])
def test_full_disk_during_training_stops_in_one_line(data_root, tmp_path, monkeypatch, how):
    from hardattn.cli import main

    run = tmp_path / "run"
    # update 4: best.pt then ckpt_00000004.pt; the next checkpoint write fails.
    fail = _FailingWrites(monkeypatch, how, allowed=2, folder=run / "checkpoints")
    args = ["train", *train_args(run, **{"total-images": B * 15, "eval-every": 5,
                                         "grad-stats-every": 0})]
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as info:
            main(args)
    finally:
        for s, h in handlers.items():  # the run's handlers must not outlive the test
            signal.signal(s, h)
    msg = str(info.value.code)
    assert "\n" not in msg and msg.startswith("hardattn train: error: could not write checkpoint")
    assert fail.failed and repr(str(fail.failed[0])) in msg
    assert "the previous checkpoint, if any, is intact" in msg
    assert fail.before is not None and "ckpt_00000004.pt" in fail.before
    assert snapshot(run / "checkpoints") == fail.before  # unchanged, no temporary file
    assert not (run / "report.json").exists()


def test_checkpoint_is_fsynced_before_the_rename_and_its_folder_after(tmp_path, monkeypatch):
    """A power cut after the rename must find the new file's bytes and its name on disk: the
    full-disk and SIGKILL tests above cannot see a missing fsync."""
    import stat

    calls = []

    class Spy:
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def fsync(fd):
            calls.append(("fsync", "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
            return os.fsync(fd)

        @staticmethod
        def replace(a, b):
            calls.append(("replace",))
            return os.replace(a, b)

    monkeypatch.setattr(ckpt, "os", Spy())
    ckpt.save_checkpoint(tmp_path / "ckpt_00000001.pt", {"w": torch.zeros(3)})
    assert calls == [("fsync", "file"), ("replace",), ("fsync", "dir")], calls


def test_a_repeated_sigterm_still_checkpoints():
    """SIGTERM asks for a graceful stop, and a service manager or `hardattn compare --jobs`
    may deliver it twice (to the process group and passed on by the parent): only a second
    Ctrl-C (SIGINT) stops at once, without a checkpoint."""
    from types import SimpleNamespace

    from hardattn.agents.run import Run

    run = SimpleNamespace(stop_signal=None)
    try:
        Run._on_signal(run, signal.SIGTERM, None)
        Run._on_signal(run, signal.SIGTERM, None)  # no KeyboardInterrupt: the checkpoint comes
    except KeyboardInterrupt:
        pytest.fail("a second SIGTERM stopped the run without its checkpoint")
    assert run.stop_signal == signal.SIGTERM
    with pytest.raises(KeyboardInterrupt):  # a human's Ctrl-C after it: stop now
        Run._on_signal(run, signal.SIGINT, None)
