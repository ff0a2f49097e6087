"""``hardattn.benchmarking.check_run_settings``: benchmarks reuse a run folder only when it was
trained with the settings asked for."""

from __future__ import annotations

import json

import pytest

from hardattn.benchmarking import check_run_settings
from hardattn.config import TrainConfig


def folder(tmp_path, **fields):
    d = tmp_path / "run"
    d.mkdir()
    stored = TrainConfig(**fields).to_dict()
    (d / "config.json").write_text(json.dumps(stored))
    return d, stored


def test_a_folder_without_config_or_with_the_same_settings_is_reused(tmp_path):
    check_run_settings(tmp_path / "absent", TrainConfig().to_dict())
    d, stored = folder(tmp_path, batch_size=32)
    check_run_settings(d, stored)
    check_run_settings(d, {**stored, "threads": 2, "device": "cpu", "progress": False})


def test_other_settings_are_refused_naming_each_field(tmp_path):
    d, stored = folder(tmp_path, batch_size=32)
    with pytest.raises(ValueError, match=r"batch_size=32 \(asked: 64\).*lr=0.001 \(asked: 0.01\)"):
        check_run_settings(d, {**stored, "batch_size": 64, "lr": 0.01})


def test_a_field_added_after_the_run_counts_as_its_default(tmp_path):
    d, stored = folder(tmp_path)
    # A run written before the field existed trained with what is now its default.
    del stored["time_code"]
    (d / "config.json").write_text(json.dumps(stored))
    check_run_settings(d, TrainConfig().to_dict())
    with pytest.raises(ValueError, match=r"time_code='absolute' \(asked: 'none'\)"):
        check_run_settings(d, TrainConfig(time_code="none").to_dict())


def test_process_commit_is_the_commit_at_the_first_call(monkeypatch):
    from hardattn import benchmarking

    shas = iter(["aaa", "bbb"])
    monkeypatch.setattr(benchmarking, "git_commit", lambda: next(shas))
    benchmarking.process_commit.cache_clear()
    try:
        assert benchmarking.process_commit() == "aaa"
        assert benchmarking.process_commit() == "aaa"  # a later commit does not change it
    finally:
        benchmarking.process_commit.cache_clear()


@pytest.mark.parametrize("agent", ["soft-glimpse", "reparam-glimpse", "draw"])
def test_a_run_from_before_location_grad_trained_with_the_gradient_through_the_core(tmp_path,
                                                                                   agent):
    # The field came with a new default ("head"); the code before it backpropagated from the
    # location into the core, which is "core". Such a folder must not pass as "head".
    d, stored = folder(tmp_path, agent=agent)
    del stored["location_grad"]
    (d / "config.json").write_text(json.dumps(stored))
    with pytest.raises(ValueError, match=r"location_grad='core' \(asked: 'head'\)"):
        check_run_settings(d, TrainConfig(agent=agent).to_dict())
    check_run_settings(d, TrainConfig(agent=agent, location_grad="core").to_dict())
    assert TrainConfig.from_dict(stored).location_grad == "core"  # resume, --from-run, eval
    # Agents without a differentiable location keep the default: the field means nothing there.
    stored2 = TrainConfig(agent="reinforce").to_dict()
    del stored2["location_grad"]
    assert TrainConfig.from_dict(stored2).location_grad == "head"
