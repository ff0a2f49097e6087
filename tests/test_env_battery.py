"""The one battery every registered id passes: check_env, same-seed equality, obs in space,
fresh observations, pickle round trip. Family-specific checks live in test_envs.py (glimpse)
and test_memory_envs.py (memory, tape)."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import hardattn.envs

ALL_IDS = hardattn.envs.registered_ids()


def rollout(env, seed: int, steps: int = 25) -> list:
    """Observations, rewards and flags of ``steps`` steps with seeded random actions."""
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for _ in range(steps):
        obs, r, term, trunc, _ = env.step(env.action_space.sample())
        out.append((obs, r, term, trunc))
        if term or trunc:
            obs, _ = env.reset()
            out.append(obs)
    return out


def same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def test_battery_covers_every_family():
    for family in ("glimpse", "memory", "tape"):
        assert set(hardattn.envs.registered_ids(family)) <= set(ALL_IDS)
    assert all(i in gym.registry for i in ALL_IDS)


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_every_registered_id(data_root, env_id):
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    first, second = rollout(gym.make(env_id), 3), rollout(gym.make(env_id), 3)
    assert same(first, second), "same seed, different rollout"
    for item in first:
        obs = item[0] if isinstance(item, tuple) else item
        assert env.observation_space.contains(obs), obs
    # Fresh arrays: mutating an observation never changes the env's later ones.
    obs, _ = env.reset(seed=5)
    snapshot = pickle.loads(pickle.dumps(obs))
    for value in (obs.values() if isinstance(obs, dict) else [obs]):
        if isinstance(value, np.ndarray) and value.size:
            value[...] = 0
    env2 = gym.make(env_id)
    assert same(env2.reset(seed=5)[0], snapshot)
    # Pickle mid-episode: the copy continues exactly like the original.
    env.action_space.seed(0)
    env.step(env.action_space.sample())
    clone = pickle.loads(pickle.dumps(env))
    action = env.action_space.sample()
    assert same(env.step(action), clone.step(action))
