"""What each agent's loss credits: hand-computed advantages through the agents' own loss code
(fake rollouts, no env), the log-probability of the action actually sampled (before the env's
clamp), and the isolation of the memory readers' baseline regression.

Each test here kills a mutation that the rest of the suite let through (a baseline reading the
state after the decision, an EMA including its own batch, leave-one-out mixing canvases, GAE
ignoring lambda or shifted by a step, the clamped action's log-probability, an undetached value
head).
"""

from __future__ import annotations

import pytest
import torch

from hardattn import baselines as bl
from hardattn.config import TrainConfig
from hardattn.networks import gaussian_log_prob


def ram_rollout(reward, values):
    from hardattn.agents.ram_common import Rollout
    values = torch.tensor(values, dtype=torch.float32)  # (T, B)
    T, B = values.shape
    lp = torch.zeros(T - 1, B, requires_grad=True)
    return Rollout(logits=torch.zeros(B, 10), labels=torch.zeros(B, dtype=torch.long),
                   reward=torch.tensor(reward, dtype=torch.float32), log_probs=lp,
                   means=torch.zeros(T - 1, B, 2), actions=torch.zeros(T - 1, B, 2),
                   locs=torch.zeros(T, B, 2), values=values, std=torch.full((2,), 0.1),
                   entropy=torch.zeros(T - 1)), lp


def adv_of(losses, lp):
    (g,) = torch.autograd.grad(losses["loss_reinforce"], lp)
    return (-g * lp.shape[1]).flatten().tolist()  # loss = -(lp * adv).sum(0).mean()


def test_actor_critic_gae_hand_case():
    from hardattn.agents import actor_critic
    cfg = TrainConfig(agent="actor-critic", gamma=0.9, gae_lambda=0.5)
    ro, lp = ram_rollout([1.0], [[0.2], [0.5], [0.7]])
    # delta = [0.25, 0.13, 0.3]; A2 = 0.3, A1 = 0.13 + 0.45 A2, A0 = 0.25 + 0.45 A1
    assert adv_of(actor_critic.loss_terms(cfg, ro), lp) == pytest.approx([0.36925, 0.265])


def test_reinforce_learned_baseline_is_the_value_before_the_decision():
    from hardattn.agents import reinforce
    cfg = TrainConfig(agent="reinforce", gamma=0.9)
    ro, lp = ram_rollout([1.0], [[0.2], [0.5], [0.7]])
    # returns [0.9, 1.0]; baseline b(h_0), b(h_1) = 0.2, 0.5 (h_2 has seen the 2nd location)
    assert adv_of(reinforce.loss_terms(cfg, ro, {}), lp) == pytest.approx([0.7, 0.5])


def test_reinforce_ema_baseline_never_includes_the_current_batch():
    from hardattn.agents import reinforce
    cfg = TrainConfig(agent="reinforce", baseline="ema")
    base = {"ema": bl.EMABaseline(cfg.ema_decay)}
    ro, lp = ram_rollout([1.0, 0.0], [[0.0, 0.0], [0.0, 0.0]])
    assert adv_of(reinforce.loss_terms(cfg, ro, base), lp) == pytest.approx([1.0, 0.0])
    ro, lp = ram_rollout([1.0, 0.0], [[0.0, 0.0], [0.0, 0.0]])
    assert adv_of(reinforce.loss_terms(cfg, ro, base), lp) == pytest.approx([0.5, -0.5])


def test_reinforce_loo_groups_the_paths_of_one_canvas():
    from hardattn.agents import reinforce
    cfg = TrainConfig(agent="reinforce", baseline="loo", samples_per_image=2, batch_size=4)
    ro, lp = ram_rollout([1.0, 1.0, 0.0, 0.0], [[0.0] * 4, [0.0] * 4])  # rows 0,1 / 2,3
    assert adv_of(reinforce.loss_terms(cfg, ro, {}), lp) == pytest.approx([0.0] * 4)


def test_memory_hard_read_ac_gae_hand_case():
    from hardattn.agents import memory_readers as mr
    cfg = TrainConfig(agent="hard-read-ac", env="CopyMemory-v0", gamma=0.9, gae_lambda=0.5)
    ro = mr.MemoryRollout(torch.zeros(3, 1, 2), torch.zeros(3, 1, dtype=torch.long),
                          torch.ones(3, dtype=torch.bool), torch.tensor([[0.0], [1.0], [1.0]]))
    ro.values = torch.tensor([[0.2], [0.5], [0.7]])
    # causal rewards [1, 1, 0]; delta = [1.25, 1.13, -0.7]
    _, _, adv = mr.advantages(cfg, ro, {})
    assert adv.flatten().tolist() == pytest.approx([1.61675, 0.815, -0.7])


def test_log_prob_is_of_the_unclamped_sample_and_the_env_clamps_it(data_root):
    from hardattn.agents.ram_common import make_env, make_model, rollout
    cfg = TrainConfig(agent="reinforce", env="GlimpseMNIST-v0", device="cpu",
                      core_hidden=32, glimpse_hidden=32, what_hidden=16, where_hidden=16).validate()
    env = make_env(cfg, torch.device("cpu"), 16)
    env.reset(seed=0)
    torch.manual_seed(0)
    ro = rollout(make_model(cfg, env), env, 1.0, torch.Generator().manual_seed(0))
    assert (ro.actions.abs() > 1).any()  # the clamp is exercised
    torch.testing.assert_close(ro.locs[1:], ro.actions.clamp(-1, 1))
    assert torch.equal(ro.log_probs, gaussian_log_prob(ro.actions, ro.means, ro.std))


def test_memory_baseline_regression_trains_only_the_value_head():
    from hardattn.agents import memory_readers as mr
    from hardattn.agents.memory_common import make_env
    cfg = TrainConfig(agent="hard-read", env="CopyMemory-v0", memory_T=5, core_hidden=16,
                      batch_size=8, device="cpu")
    torch.manual_seed(0)
    env = make_env(cfg, torch.device("cpu"), 8)
    model = mr.make_model(cfg, env)
    ro = mr.rollout(model, env, torch.Generator().manual_seed(1), seed=0)
    loss = mr.loss_terms(cfg, ro, {})["loss_baseline"]
    names, params = zip(*model.named_parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    touched = {n.split(".")[0] for n, g in zip(names, grads) if g is not None and g.abs().sum() > 0}
    assert touched == {"value"}, touched
