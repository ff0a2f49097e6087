"""``hardattn compare --jobs N``: train up to N runs of the matrix at once, one process each.

Every run is seeded on its own and trains in a fresh process (``python -m
hardattn.agents.compare_jobs CONFIG``: ``ensure_run`` there), so the results are those of
``--jobs 1``. Signals: each child runs in its own session, out of the terminal's reach, and
the parent passes every SIGINT/SIGTERM it receives on to each running child, so each stops
after its current update with a checkpoint (``Run``), as a lone ``hardattn train`` does; a
second Ctrl-C stops them at once. Then the parent raises ``TrainingInterrupted``, and the same
command resumes every unfinished run. When a run fails, the others are stopped the same way
(nothing trained is lost) and ``ChildProcessError`` names it; its own error is on stderr.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hardattn.config import TrainConfig

from .run import TrainingInterrupted


def _for_child(signum: int) -> int:
    """The signal passed on: SIGHUP as SIGTERM, which a run answers with a checkpoint."""
    return signal.SIGTERM if signum == signal.SIGHUP else signum


def train_parallel(configs: dict, jobs: int) -> set:
    """Train the runs of ``configs`` (``{key: TrainConfig}``), ``jobs`` at a time, in the order
    given; a finished run is skipped (``ensure_run``). Returns the keys of the runs that had no
    ``report.json`` before (trained or resumed here).

    Raises:
        TrainingInterrupted: after SIGINT/SIGTERM, once every running run has checkpointed.
        ChildProcessError: a run failed (the others checkpointed first).
    """
    pending = list(configs.items())
    running: dict = {}  # key -> Popen
    trained: set = set()
    stop: list[int] = []  # signals received, in order
    signalled: set = set()  # keys of the runs a signal was passed on to
    failed: list[str] = []

    def pass_on(key, signum: int) -> None:
        signalled.add(key)
        running[key].send_signal(_for_child(signum))

    def on_signal(signum, frame) -> None:
        stop.append(signum)
        for key, proc in running.items():
            if proc.poll() is None:
                pass_on(key, signum)

    # SIGHUP too: a closed terminal ends the parent, and its children must stop with it.
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    env = {**os.environ, PARENT_ENV: str(os.getpid())}
    stopped = {128 + s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)} | \
        {-s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    # Each child trains without a progress bar (N bars would garble one terminal): the
    # parent says when a run starts and ends, with the matrix's count.
    t0, total, ended = time.perf_counter(), len(pending), 0

    def say(what: str, key) -> None:
        try:
            print(f"hardattn compare: {what} {key[0]} seed {key[1]} ({ended}/{total} done, "
                  f"{len(running)} running, {time.perf_counter() - t0:.0f} s)", flush=True)
        except OSError:  # stdout gone (`| tee` killed by the same Ctrl-C): the runs matter more
            pass

    try:
        while running or (pending and not stop and not failed):
            while pending and len(running) < jobs and not stop and not failed:
                key, cfg = pending.pop(0)
                if (Path(cfg.run_dir) / "report.json").exists():
                    ended += 1
                    continue  # finished: ensure_run reuses it
                trained.add(key)
                proc = subprocess.Popen(
                    [sys.executable, "-m", "hardattn.agents.compare_jobs", cfg.to_json()],
                    start_new_session=True, env=env)  # a terminal's Ctrl-C reaches the parent
                running[key] = proc
                say("started", key)
                if stop:  # a signal landed while it started, before on_signal could see it
                    pass_on(key, stop[-1])
            time.sleep(0.2)
            for key, proc in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                del running[key]
                ended += rc == 0
                # 128 + n: stopped by Run with a checkpoint; -n: killed before training; a
                # signal during the interpreter's own start (site, numpy) makes exit code 1
                interrupted = rc in stopped or (key in signalled and rc != RUN_ERROR_EXIT)
                say("finished" if rc == 0 else f"stopped (exit code {rc})", key)
                if rc != 0 and not (stop and interrupted):
                    failed.append(f"run {configs[key].run_dir!r} failed with exit code {rc}")
                    if not stop:  # stop the others: they checkpoint, nothing is lost
                        on_signal(signal.SIGTERM, None)
    finally:
        for key, proc in running.items():  # only if the loop itself raised: stop, then wait
            if proc.poll() is None and key not in signalled:
                pass_on(key, signal.SIGTERM)
        for s, h in old.items():
            signal.signal(s, h)
        for proc in running.values():
            proc.wait()
    if failed:
        raise ChildProcessError(f"{failed[0]} (its error is above); the other runs "
                                f"checkpointed: run the same command again to resume")
    if stop:
        name = signal.Signals(stop[0]).name
        msg = (f"hardattn compare: stopped by {name}; every running run checkpointed; run the "
               f"same command again to resume")
        print(msg, file=sys.stderr, flush=True)
        raise TrainingInterrupted(msg, stop[0])
    return trained


PARENT_ENV = "HARDATTN_COMPARE_PARENT"  # the parent's pid, for its children
# A child's exit code for an error it reported itself (a bad run folder, a checkpoint that
# could not be written): a failure even after a signal, unlike the 1 of an interpreter that a
# signal stopped while it started.
RUN_ERROR_EXIT = 3


def _stop_with_parent() -> None:
    """Linux: SIGTERM this child when its parent dies (SIGKILL included), so no run trains
    on unattended; if the parent is already gone, stop now."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's signals alone stop children
        return
    parent = os.environ.get(PARENT_ENV)
    if parent and os.getppid() != int(parent):
        raise SystemExit(128 + signal.SIGTERM)


def main(argv: list[str] | None = None) -> None:
    """A child: ``ensure_run`` of the config given as JSON; errors in one line, exit
    ``RUN_ERROR_EXIT``."""
    from hardattn.benchmarking import process_commit
    from hardattn.checkpoint import CheckpointError

    from .compare import ensure_run

    _stop_with_parent()
    process_commit()  # the code this run trains with
    cfg = TrainConfig.from_dict(json.loads((argv or sys.argv[1:])[0]))
    try:
        ensure_run(cfg)
    except KeyboardInterrupt:  # a second signal: stopped at once
        raise SystemExit(128 + signal.SIGINT) from None
    except (ValueError, FloatingPointError, OSError, CheckpointError) as exc:
        print(f"hardattn compare: run {cfg.run_dir!r}: error: {exc}", file=sys.stderr,
              flush=True)
        raise SystemExit(RUN_ERROR_EXIT) from None


if __name__ == "__main__":
    main()
