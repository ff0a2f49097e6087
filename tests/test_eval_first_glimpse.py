"""With ``--first-glimpse random``, every evaluator gives a canvas the same first glimpse.

The fixed validation and test sets fix the canvases; the first glimpse is part of what a
model is scored on, so it must be fixed too: the same for hard agents (``Evaluator``), SB3
policies (``FixedSetEvaluator``) and backprop agents (``SoftEvaluator``), whatever the
evaluation batch or device.
"""

from __future__ import annotations

import pytest
import torch

from hardattn import data
from hardattn.config import TrainConfig

N = 16
CFG = dict(env="GlimpseMNIST-v0", device="cpu", first_glimpse="random", eval_size=N,
           test_size=N, core_hidden=32, glimpse_hidden=32, what_hidden=16, where_hidden=16)


def hard_first_locs(eval_batch: int) -> torch.Tensor:
    from hardattn.agents.ram_common import Evaluator, make_model

    cfg = TrainConfig(**CFG, agent="reinforce", eval_batch=eval_batch).validate()
    ev = Evaluator(cfg, torch.device("cpu"), "val", N)
    torch.manual_seed(0)
    model = make_model(cfg, ev.env)
    first = []  # the locations the rollouts begin at, batch after batch
    reset = ev.env.reset

    def reset_spy(*args, **kwargs):
        out = reset(*args, **kwargs)
        if kwargs.get("options"):
            first.append(out[0]["loc"].clone())
        return out

    ev.env.reset = reset_spy
    ev(model)
    return torch.cat(first)  # (N, 2)


def test_fixed_first_locs_are_fixed_uniform_and_prefix_free():
    a, b = data.fixed_first_locs(1000), data.fixed_first_locs(1000)
    assert torch.equal(a, b) and a.shape == (1000, 2) and a.dtype == torch.float32
    assert a.min() >= -1 and a.max() <= 1 and abs(float(a.mean())) < 0.1
    assert torch.equal(data.fixed_first_locs(10), a[:10])  # the i-th canvas's, whatever n
    with pytest.raises(ValueError, match="n=0"):
        data.fixed_first_locs(0)


def test_hard_evaluator_first_glimpse_is_independent_of_the_eval_batch(data_root):
    whole, halves = hard_first_locs(N), hard_first_locs(N // 2)
    assert torch.equal(whole, halves)
    assert torch.equal(whole, data.fixed_first_locs(N))


def test_soft_and_sb3_evaluators_use_the_same_first_glimpses(data_root):
    from hardattn.agents import soft_common as sc

    cfg = TrainConfig(**CFG, agent="soft-glimpse", eval_batch=N).validate()
    ev = sc.SoftEvaluator(cfg, sc.task_config(cfg), torch.device("cpu"), "val", N)
    assert torch.equal(ev.first, data.fixed_first_locs(N))

    pytest.importorskip("stable_baselines3")
    from hardattn.agents.sb3_run import FixedSetEvaluator

    cfg = TrainConfig(**CFG, agent="sb3-ppo", eval_batch=N // 2).validate()
    sb3 = FixedSetEvaluator(cfg, "val", N)
    first = []
    reset = sb3.env.reset

    def reset_spy(*args, **kwargs):
        out = reset(*args, **kwargs)
        if kwargs.get("options"):
            first.append(torch.as_tensor(out[0]["loc"]).clone())
        return out

    sb3.env.reset = reset_spy

    class Still:  # always "stay where you are, class 0": only the first locations matter
        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            import numpy as np
            return np.zeros((len(obs["loc"]), 3), dtype=np.int64), state

    sb3(Still())
    assert torch.allclose(torch.cat(first), data.fixed_first_locs(N), atol=0)


def test_center_first_glimpse_stays_at_the_centre(data_root):
    from hardattn.agents import soft_common as sc

    cfg = TrainConfig(**{**CFG, "first_glimpse": "center"}, agent="soft-glimpse",
                      eval_batch=N).validate()
    ev = sc.SoftEvaluator(cfg, sc.task_config(cfg), torch.device("cpu"), "val", N)
    assert torch.equal(ev.first, torch.zeros(N, 2))


def test_vec_env_first_locs_option(data_root):
    from gymnasium import make_vec

    env = make_vec("hardattn/GlimpseMNIST-v0", 4, first_glimpse="random").unwrapped
    locs = torch.tensor([[0.5, -0.5], [1.0, -1.0], [0.0, 0.0], [-0.25, 0.75]])
    obs, _ = env.reset(seed=0, options={"first_locs": locs})
    assert torch.equal(obs["loc"], locs) and obs["loc"] is not locs
    glimpse = obs["glimpse"].clone()
    obs, _ = env.reset(seed=1, options={"first_locs": locs})  # other canvases, same places
    assert torch.equal(obs["loc"], locs) and not torch.equal(obs["glimpse"], glimpse)
    for bad, match in [(locs[:3], r"shape \(3, 2\), expected \(4, 2\)"),
                       (locs * 2, r"\[-1, 1\]"),
                       (torch.full((4, 2), float("nan")), r"\[-1, 1\]")]:
        with pytest.raises(ValueError, match=match):
            env.reset(options={"first_locs": bad})
    centre = make_vec("hardattn/GlimpseMNIST-v0", 4, first_glimpse="center").unwrapped
    with pytest.raises(ValueError, match="first_glimpse='random'"):
        centre.reset(options={"first_locs": locs})


@pytest.mark.parametrize("first_glimpse", ["random", "center"])
def test_hard_evaluator_scores_a_last_partial_batch(data_root, first_glimpse):
    # hardattn eval --n 150 on a run evaluated in batches of 100 crashed on the last 50.
    from hardattn.agents.ram_common import Evaluator, make_model

    def score(eval_batch: int) -> dict:
        cfg = TrainConfig(**{**CFG, "first_glimpse": first_glimpse, "eval_size": 150,
                             "test_size": 150}, agent="reinforce", eval_batch=eval_batch)
        ev = Evaluator(cfg, torch.device("cpu"), "val", 150)
        torch.manual_seed(0)
        return ev(make_model(cfg, ev.env))

    assert score(100)["accuracy"] == score(150)["accuracy"] == score(50)["accuracy"]
