"""Resume equals uninterrupted training for every agent family and the REINFORCE variants
(baselines, learned std, augmentation), and a signal checkpoints the backprop and memory
trainers as it does the RAM ones. ``test_agents`` covers reinforce itself, ``test_sb3`` SB3."""

from __future__ import annotations

import dataclasses
import importlib
import shutil
import signal

import pytest
import torch

from hardattn import checkpoint as ckpt
from hardattn.config import TrainConfig, used_by

RAM = dict(env="GlimpseMNIST-v0", device="cpu", batch_size=16, total_images=16 * 6, eval_every=3,
           eval_size=100, test_size=100, eval_batch=100, log_every=1, image_every=3,
           grad_stats_every=0, checkpoint_every=3, progress=False, core_hidden=64,
           glimpse_hidden=64, what_hidden=32, where_hidden=32, threads=1)
SOFT = dict(RAM, fc_hidden=64, feature_channels=16)
MEM = dict(env="CopyMemory-v0", memory_T=5, core="gru", core_hidden=16, batch_size=8,
           total_images=48, eval_every=2, eval_size=16, test_size=16, eval_batch=8, log_every=1,
           image_every=2, checkpoint_every=2, grad_stats_every=0, device="cpu", progress=False,
           threads=1)


def _resume_equals(tmp_path, base, agent, keep, **kw):
    from hardattn.agents.run import train
    full = TrainConfig(**{**used_by(agent, base), "agent": agent, "run_dir": str(tmp_path / "a"),
                          **kw})
    report = train(full)
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "a", cut)
    best_update = ckpt.load_checkpoint(cut / "checkpoints" / "best.pt")["update"]
    for p in (cut / "checkpoints").iterdir():
        if p.name != f"ckpt_{keep:08d}.pt" and not (p.name == "best.pt" and best_update <= keep):
            p.unlink()
    (cut / "report.json").unlink()
    resumed = train(dataclasses.replace(full, resume=str(cut), run_dir=None))
    a = ckpt.load_latest(tmp_path / "a")[0]["model"]
    c = ckpt.load_latest(cut)[0]["model"]
    for k in a:
        assert torch.equal(a[k], c[k]), k
    return report, resumed


@pytest.mark.parametrize("agent", ["actor-critic"])
def test_ram_resume(data_root, tmp_path, agent):
    _resume_equals(tmp_path, RAM, agent, 2)


@pytest.mark.parametrize("agent", ["soft-glimpse", "draw", "soft-cnn", "cnn", "mlp"])
def test_soft_resume(data_root, tmp_path, agent):
    _resume_equals(tmp_path, SOFT, agent, 2)


@pytest.mark.parametrize("agent, kw", [("hard-read-ac", {}), ("soft-read", {}), ("sab", {}),
                                       ("memoryless", {}), ("hard-read", {"baseline": "optimal"})])
def test_memory_resume(tmp_path, agent, kw):
    _resume_equals(tmp_path, MEM, agent, 1, **kw)


@pytest.mark.parametrize("kw", [dict(baseline="optimal"), dict(baseline="loo", samples_per_image=2),
                                dict(std_schedule="learned", entropy_coef=0.01),
                                dict(first_glimpse="random", augment_shift=2)])
def test_reinforce_resume_other_baselines(data_root, tmp_path, kw):
    _resume_equals(tmp_path, RAM, "reinforce", 2, **kw)


@pytest.mark.parametrize("agent, base, trainer", [
    ("soft-cnn", SOFT, "hardattn.agents.soft_common.SoftTrainer"),
    ("hard-read", MEM, "hardattn.agents.memory_common.MemoryTrainer")])
def test_signal_checkpoints_and_resume_equals_uninterrupted(data_root, tmp_path, monkeypatch,
                                                            agent, base, trainer):
    from hardattn.agents.run import TrainingInterrupted, train
    mod, cls = trainer.rsplit(".", 1)
    T = getattr(importlib.import_module(mod), cls)
    full = TrainConfig(**{**used_by(agent, base), "agent": agent,
                          "run_dir": str(tmp_path / "a"), "checkpoint_every": 100})
    train(full)
    real = T.after_update
    with monkeypatch.context() as m:
        def after_update(self, update, *a, **k):
            real(self, update, *a, **k)
            if update == 1:
                self.run.stop_signal = signal.SIGTERM
        m.setattr(T, "after_update", after_update)
        with pytest.raises(TrainingInterrupted, match="after update 1"):
            train(dataclasses.replace(full, run_dir=str(tmp_path / "b")))
    assert ckpt.periodic_checkpoints(tmp_path / "b" / "checkpoints")[0].name == "ckpt_00000001.pt"
    assert not (tmp_path / "b" / "report.json").exists()
    train(dataclasses.replace(full, resume=str(tmp_path / "b"), run_dir=None))
    a = ckpt.load_latest(tmp_path / "a")[0]["model"]
    b = ckpt.load_latest(tmp_path / "b")[0]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_signal_during_the_stop_agreement_is_not_lost(data_root, tmp_path, monkeypatch):
    """``stop_signal = agree_stop(stop_signal)`` wrote None over a signal whose handler ran
    inside the call (after its argument was read): the run trained to its end. Under torchrun
    the window is a whole all-reduce."""
    import os

    from hardattn.agents import distributed
    from hardattn.agents.run import TrainingInterrupted, train

    real, calls = distributed.agree_stop, []

    def agree_stop(signum, device):
        calls.append(signum)
        if len(calls) == 2:  # the handler runs here, after ``signum`` (None) was read
            os.kill(os.getpid(), signal.SIGTERM)
        return real(signum, device)

    monkeypatch.setattr(distributed, "agree_stop", agree_stop)
    cfg = TrainConfig(**{**RAM, "agent": "reinforce", "run_dir": str(tmp_path / "run")})
    with pytest.raises(TrainingInterrupted, match="SIGTERM after update 2"):
        train(cfg)  # the next update's agreement sees it
    assert ckpt.periodic_checkpoints(tmp_path / "run" / "checkpoints")[0].name == \
        "ckpt_00000002.pt"
    assert not (tmp_path / "run" / "report.json").exists()


def test_threads_0_without_sched_getaffinity(data_root, tmp_path, monkeypatch):
    """macOS and Windows have no ``os.sched_getaffinity``: the default ``--threads 0`` was an
    AttributeError traceback there."""
    import os

    from hardattn.agents.run import train

    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    before = torch.get_num_threads()
    try:
        train(TrainConfig(**{**RAM, "agent": "reinforce", "threads": 0,
                             "run_dir": str(tmp_path / "run")}))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
