"""``report.json`` marks a run finished (compare and ``--resume`` trust it), so it appears whole
or not at all: every trainer writes it atomically, and a run whose report could not be written
resumes and writes it."""

from __future__ import annotations

import errno
import io
import json
import os

import pytest
import torch

from hardattn import checkpoint as ckpt
from hardattn.config import TrainConfig

BASE = dict(device="cpu", batch_size=16, total_images=16 * 4, eval_every=2, eval_size=32,
            test_size=32, eval_batch=32, log_every=1, checkpoint_every=2, progress=False,
            threads=1, glimpse_hidden=32, what_hidden=16, where_hidden=16)
AGENTS = {  # one per trainer: RAM (training.Trainer), backprop (SoftTrainer), memory, SB3
    "reinforce": dict(env="GlimpseMNIST-v0", core_hidden=32, grad_stats_every=0),
    "cnn": dict(env="GlimpseMNIST-v0", cnn_channels=4, fc_hidden=16),
    "hard-read": dict(env="CopyMemory-v0", memory_T=5, core="gru", core_hidden=32,
                      batch_size=8, total_images=32, eval_size=16, test_size=16, eval_batch=8),
    "sb3-ppo": dict(env="GlimpseMNIST-v0", total_images=32, eval_every=1, checkpoint_every=1),
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


class _HalfWritten(io.BytesIO):
    """A file on a disk that fills up half-way through the write."""

    def __init__(self, real) -> None:
        super().__init__()
        self.real = real

    def write(self, data) -> int:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        self.real.write(raw[: len(raw) // 2])
        self.real.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __exit__(self, *exc) -> None:
        self.real.close()


def _fail_report_writes(monkeypatch) -> None:
    """Every open for writing of a file whose name holds 'report.json' fills the disk."""
    import builtins

    real_open = builtins.open

    def fake_open(file, mode="r", *args, **kwargs):
        name = "" if isinstance(file, int) else os.fsdecode(file)
        if "report.json" in name and ("w" in mode or "x" in mode):
            return _HalfWritten(real_open(file, "wb"))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(ckpt, "open", fake_open, raising=False)


@pytest.mark.parametrize("agent", list(AGENTS))
def test_report_is_whole_or_absent_and_the_run_resumes(data_root, tmp_path, monkeypatch, agent):
    from hardattn.agents.run import train

    run_dir = tmp_path / "run"
    cfg = TrainConfig(**{**BASE, **AGENTS[agent], "agent": agent, "run_dir": str(run_dir)})
    with monkeypatch.context() as m:
        _fail_report_writes(m)
        with pytest.raises((OSError, ckpt.CheckpointError)) as err:  # the CLI prints one line
            train(cfg)
    # The message names the report, not a checkpoint.
    assert str(run_dir / "report.json") in str(err.value) and "checkpoint" not in str(err.value)
    report = run_dir / "report.json"
    if report.exists():  # a half-written report would pass for a finished run
        json.loads(report.read_text())
    assert not report.exists()
    done = train(TrainConfig(resume=str(run_dir), progress=False))
    assert json.loads(report.read_text())["test_error_pct"] == done["test_error_pct"]


def test_a_second_ctrl_c_during_a_checkpoint_write_leaves_no_temporary_file(tmp_path,
                                                                             monkeypatch):
    """KeyboardInterrupt (a second Ctrl-C stops at once) in the middle of ``torch.save`` left
    ``.ckpt_*.pt.tmpPID`` behind: only OSError and RuntimeError cleaned up."""
    path = tmp_path / "ckpt_00000001.pt"
    ckpt.save_checkpoint(path, {"update": 1})
    whole = path.read_bytes()

    def save(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.torch, "save", save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(path, {"update": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert path.read_bytes() == whole
