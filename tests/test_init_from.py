"""``--init-from``: a new run starts from another run's weights (fine-tuning, curricula over T).

The weights are loaded exactly; a resumed run ignores them (its own checkpoint wins); a bad
path, weights of another size and an SB3 agent fail before training with a message that names
``--init-from``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from hardattn import checkpoint as ckpt
from hardattn.agents import memory_readers as mr
from hardattn.agents.memory_common import make_env
from hardattn.agents.run import Run, train
from hardattn.config import TrainConfig


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def memory_cfg(tmp_path: Path, name: str, **kw) -> TrainConfig:
    base = dict(agent="hard-read", env="CopyMemory-v0", memory_T=5, core="gru", core_hidden=16,
                batch_size=8, total_images=32, eval_every=2, eval_size=16, test_size=16,
                eval_batch=8, log_every=1, image_every=2, checkpoint_every=2,
                grad_stats_every=0, device="cpu", progress=False, threads=1,
                run_dir=str(tmp_path / name))
    base.update(kw)
    return TrainConfig(**base)


def test_new_run_starts_from_the_source_best_weights(tmp_path, capsys):
    train(memory_cfg(tmp_path, "a"))
    best = ckpt.load_checkpoint(tmp_path / "a" / "checkpoints" / "best.pt")["model"]
    # Another delay (T=9): the reader's weights do not depend on T, so a curriculum can go on.
    cfg = memory_cfg(tmp_path, "b", memory_T=9, init_from=str(tmp_path / "a"))
    with Run(cfg) as run:
        torch.manual_seed(123)
        model = mr.make_model(run.cfg, make_env(run.cfg, run.device, 8))
        fresh = {k: v.clone() for k, v in model.state_dict().items()}
        run.init_weights(model)
        run.logger.close()
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], best[k]) for k in best)
    assert any(not torch.equal(fresh[k], best[k]) for k in best)  # not a no-op
    assert "initial weights from" in capsys.readouterr().out


def test_init_from_trains_and_changes_the_result(tmp_path):
    train(memory_cfg(tmp_path, "a", total_images=64))
    scratch = train(memory_cfg(tmp_path, "s", memory_T=9))
    tuned = train(memory_cfg(tmp_path, "t", memory_T=9, init_from=str(tmp_path / "a")))
    assert tuned["test_ce"] != scratch["test_ce"]
    recorded = json.loads((tmp_path / "t" / "config.json").read_text())
    assert recorded["init_from"] == str(tmp_path / "a")


def test_glimpse_agent_accepts_a_checkpoint_file(tmp_path, data_root):
    kw = dict(agent="reinforce", env="GlimpseMNIST-v0", device="cpu", batch_size=16,
              total_images=32, eval_every=2, eval_size=100, test_size=100, eval_batch=100,
              log_every=1, image_every=2, grad_stats_every=0, checkpoint_every=2,
              progress=False, core_hidden=32, glimpse_hidden=32, what_hidden=16,
              where_hidden=16, threads=1)
    train(TrainConfig(run_dir=str(tmp_path / "a"), **kw))
    src = tmp_path / "a" / "checkpoints" / "best.pt"
    report = train(TrainConfig(run_dir=str(tmp_path / "b"), init_from=str(src), **kw))
    assert report["test_error_pct"] <= 100.0


def test_resume_uses_its_own_checkpoint_not_init_from(tmp_path):
    train(memory_cfg(tmp_path, "a"))
    cfg = memory_cfg(tmp_path, "b", init_from=str(tmp_path / "a"))
    train(cfg)
    (tmp_path / "b" / "report.json").unlink()  # as if killed before its report: resumable
    with Run(TrainConfig(resume=str(tmp_path / "b"))) as run:
        assert run.state is not None and run._init is None
        model = mr.make_model(run.cfg, make_env(run.cfg, run.device, 8))
        before = {k: v.clone() for k, v in model.state_dict().items()}
        run.init_weights(model)  # no-op: the trainer restores the checkpoint's weights
        run.logger.close()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_path_fails_before_the_run_folder_exists(tmp_path):
    cfg = memory_cfg(tmp_path, "b", init_from=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"--init-from=.*missing"):
        train(cfg)
    assert not (tmp_path / "b").exists()


def test_weights_of_other_sizes_are_refused_with_the_fix(tmp_path):
    train(memory_cfg(tmp_path, "a"))
    cfg = memory_cfg(tmp_path, "b", core_hidden=24, init_from=str(tmp_path / "a"))
    with pytest.raises(ValueError, match=r"--init-from=.*do not fit --agent hard-read.*same "
                                         r"network sizes"):
        train(cfg)


def test_sb3_agents_refuse_init_from():
    cfg = dataclasses.replace(TrainConfig(agent="sb3-ppo"), init_from="somewhere")
    with pytest.raises(ValueError, match="--init-from is not supported by --agent sb3-ppo"):
        cfg.validate()
