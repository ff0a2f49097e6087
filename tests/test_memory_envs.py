"""The memory-read envs (CopyMemory, AssociativeRecall) and the algorithmic tape envs.

The battery of ``test_envs.py`` over every new id and action type (Gymnasium's and SB3's
checkers, determinism, observations in their space, pickling, input validation, rendering);
known answers (oracle policies reach the maximal return, a random policy scores chance,
gym's rewards, time limits and curriculum); then the batched envs: types, NEXT_STEP
autoreset, seeding, agreement with the single envs, device placement.
"""

from __future__ import annotations

import pickle
import re
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import hardattn.envs
from hardattn.envs import AssociativeRecallVecEnv, CopyMemoryVecEnv, TapeReversedAdditionEnv
from hardattn.envs.memory_task import ACTION_TYPES

MEMORY_IDS = hardattn.envs.registered_ids("memory")
TAPE_IDS = hardattn.envs.registered_ids("tape")
NEW_IDS = MEMORY_IDS + TAPE_IDS
CASES = [(env_id, a) for env_id in NEW_IDS for a in ACTION_TYPES]
CASE_IDS = [f"{env_id.split('/')[1].split('-')[0]}-{a}" for env_id, a in CASES]
COPY, RECALL = "hardattn/CopyMemory-v0", "hardattn/AssociativeRecall-v0"
CUDA = torch.cuda.is_available()


def make(env_id: str, **kwargs) -> gym.Env:
    """The raw single env (no wrappers), as ``check_env`` recommends."""
    return gym.make(env_id, **kwargs).unwrapped


def as_action(env: gym.Env, *parts: int):
    """A single action of ``env``'s action type made of ``parts``."""
    action_type = env.cfg.action_type if hasattr(env, "cfg") else env.action_type
    return tuple(parts) if action_type == "tuple" else np.array(parts, dtype=np.int64)


def drawn(env: gym.Env) -> np.ndarray:
    """What the current episode was drawn from (its input sequence or tape)."""
    return env._task.inputs[0].numpy().copy() if hasattr(env, "_task") else \
        env.input_data.copy()


def obs_equal(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    return np.array_equal(a, b)


def info_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def rollout(env: gym.Env, seed: int, episodes: int) -> list[tuple]:
    """``(obs, reward, terminated, truncated, drawn)`` of every reset and step, actions sampled
    from an action space seeded with ``seed``."""
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    out = [(obs, None, None, None, drawn(env))]
    for _ in range(episodes):
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            out.append((obs, reward, terminated, truncated, None))
            done = terminated or truncated
        obs, _ = env.reset()
        out.append((obs, None, None, None, drawn(env)))
    return out


def same_rollouts(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(
        obs_equal(x[0], y[0]) and x[1:4] == y[1:4] and obs_equal(x[4], y[4])
        for x, y in zip(a, b))


# ----------------------------------------------------------------------------- oracles


def copy_oracle(obs: dict, cfg) -> tuple[int, int]:
    """Read the payload symbol due at the next step; emit the one read at the previous step."""
    t, L, P = int(obs["t"]), cfg.episode_len, cfg.payload
    address = min(max(0, t + 1 - (L - P)), cfg.n_cells - 1)
    return address, int(obs["read"]) if t >= L - P else 0


class RecallOracle:
    """Remember which slot each key went to; at the query, read its slot; emit the value."""

    def __init__(self, cfg) -> None:
        self.cfg, self.slots = cfg, {}

    def __call__(self, obs: dict) -> tuple[int, int]:
        t, N = int(obs["t"]), self.cfg.n_pairs
        if t < N:
            self.slots[int(obs["input"][0])] = t
            return 0, 0
        if t == N:
            return self.slots[int(obs["input"][0])], 0
        return 0, int(obs["read"][1])


class TapeOracle:
    """Solves each tape task from the observations alone (the head's symbol)."""

    def __init__(self, env) -> None:
        self.env, self.blank, self.k, self.phase = env, env.base, 0, 0
        self.column_sum, self.carry, self.row = 0, 0, 0

    def __call__(self, obs: int) -> tuple[int, int, int]:
        name, obs, k = type(self.env).__name__, int(obs), self.k
        self.k += 1
        left, right, up, down = 0, 1, 2, 3
        if name == "TapeCopyEnv":
            return right, 1, obs
        if name == "TapeDuplicatedInputEnv":
            return right, int(k % self.env.duplication == 0), obs
        if name == "TapeReverseEnv":
            if self.phase == 0 and obs != self.blank:
                return right, 0, 0
            self.phase = 1
            return (left, 0, 0) if obs == self.blank else (left, 1, obs)
        if name == "TapeRepeatCopyEnv":
            if obs == self.blank:  # turn at each end of the input
                self.phase += 1
                return (left if self.phase == 1 else right), 0, 0
            return (left if self.phase == 1 else right), 1, obs
        # ReversedAddition: snake through each column (down, then up), write at its end.
        rows, base = self.env.ROWS, self.env.base
        if obs == self.blank:  # past the last column: the final carry
            return right, 1, self.carry
        self.column_sum += obs
        going_down = self.phase % 2 == 0
        last = self.row == (rows - 1 if going_down else 0)
        if not last:
            self.row += 1 if going_down else -1
            return (down if going_down else up), 0, 0
        total = self.column_sum + self.carry
        self.column_sum, self.carry, self.phase = 0, total // base, self.phase + 1
        return right, 1, total % base


def play_tape_oracle(env, seed: int | None = None) -> tuple[float, bool, bool, dict, int]:
    """One episode of the tape oracle: (return, terminated, truncated, info, steps)."""
    obs, _ = env.reset(seed=seed)
    policy, ret, steps = TapeOracle(env.unwrapped), 0.0, 0
    while True:
        move, write, symbol = policy(obs)
        obs, reward, terminated, truncated, info = env.step(as_action(env.unwrapped, move,
                                                                      write, symbol))
        ret, steps = ret + reward, steps + 1
        if terminated or truncated:
            return ret, terminated, truncated, info, steps


# ----------------------------------------------------------------------------- the battery


@pytest.mark.parametrize("env_id,action_type", CASES, ids=CASE_IDS)
class TestEveryNewEnv:
    """The guarantees every new id gives with every action type (as ``test_envs.py``)."""

    def test_passes_gymnasium_check_env_including_render(self, env_id, action_type):
        env = make(env_id, action_type=action_type, render_mode="ansi")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the checker's warnings are failures here
            gym_check_env(env)

    def test_same_seed_gives_the_same_rollout_and_another_seed_another(self, env_id,
                                                                       action_type):
        a = rollout(make(env_id, action_type=action_type), seed=11, episodes=3)
        b = rollout(make(env_id, action_type=action_type), seed=11, episodes=3)
        c = rollout(make(env_id, action_type=action_type), seed=12, episodes=3)
        assert same_rollouts(a, b)
        drawn_a = [x[4] for x in a if x[4] is not None]
        drawn_c = [x[4] for x in c if x[4] is not None]
        assert not all(obs_equal(x, y) for x, y in zip(drawn_a, drawn_c))

    def test_every_observation_is_inside_the_observation_space(self, env_id, action_type):
        env = make(env_id, action_type=action_type)
        for obs, *_ in rollout(env, seed=3, episodes=3):
            assert env.observation_space.contains(obs), obs

    def test_pickled_mid_episode_env_continues_like_the_original(self, env_id, action_type):
        env = make(env_id, action_type=action_type)
        env.action_space.seed(0)
        env.reset(seed=21)
        env.step(env.action_space.sample())
        copy = pickle.loads(pickle.dumps(env))
        actions = [env.action_space.sample() for _ in range(40)]
        traces = []
        for e in (env, copy):
            trace = []
            for action in actions:
                obs, reward, terminated, truncated, info = e.step(action)
                trace.append((obs, reward, terminated, truncated, info))
                if terminated or truncated:  # the next episode comes from the pickled RNG
                    obs, info = e.reset()
                    trace.append((obs, None, None, None, info))
            traces.append(trace)
        assert len(traces[0]) == len(traces[1])
        for x, y in zip(*traces):
            assert obs_equal(x[0], y[0]) and x[1:4] == y[1:4] and info_equal(x[4], y[4])

    def test_render_ansi_returns_text_at_every_step(self, env_id, action_type):
        env = make(env_id, action_type=action_type, render_mode="ansi")
        env.reset(seed=1)
        env.action_space.seed(1)
        frames = [env.render()]
        for _ in range(5):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            frames.append(env.render())
            if terminated or truncated:
                break
        assert all(isinstance(f, str) and f.count("\n") >= 3 for f in frames)
        assert make(env_id, action_type=action_type).render() is None  # no render_mode

    def test_step_outside_an_episode_raises_runtime_error(self, env_id, action_type):
        env = make(env_id, action_type=action_type)
        env.action_space.seed(0)
        with pytest.raises(RuntimeError, match="before reset"):
            env.step(env.action_space.sample())
        env.reset(seed=0)
        done = False
        while not done:
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            done = terminated or truncated
        with pytest.raises(RuntimeError, match="after the episode"):
            env.step(env.action_space.sample())

    def test_invalid_actions_raise_value_error_naming_the_value(self, env_id, action_type):
        env = make(env_id, action_type=action_type)
        for action, named in bad_actions(env, action_type):
            env.reset(seed=0)
            with pytest.raises(ValueError, match=re.escape(named)):
                env.step(action)
        # A rejected action leaves the episode where it was: a valid one is step 1.
        obs, *_ = env.step(env.action_space.sample())
        assert (int(obs["t"]) if isinstance(obs, dict) else env.time) == 1


def bad_actions(env: gym.Env, action_type: str) -> list[tuple[Any, str]]:
    """(action, text the error must contain) pairs outside ``env``'s action space."""
    if hasattr(env, "cfg"):  # memory envs: (address, output)
        cells, outs = env.cfg.n_cells, env.cfg.n_out
        if action_type == "tuple":
            return [((cells, 0), f"got {cells}"), ((-1, 0), "got -1"),
                    ((0, outs), f"[0, {outs - 1}], got {outs}"), ((0, 2.5), "2.5"),
                    ((0, "3"), "'3'"), ((None, 0), "None"), ((True, 0), "True"),
                    ((np.array([1, 2]), 0), "(2,)"), ((0, 1, 2), "(0, 1, 2)"),
                    ("x", "'x'")]
        return [(np.array([cells, 0]), f"got {cells}"), (np.array([0, outs]), f"got {outs}"),
                (np.array([0, -1]), "-1"), (np.array([0.5, 1.0]), "0.5"),
                (np.array([0, 1, 2]), "(3,)"), (np.array(["a", "b"]), "<U1")]
    moves, base = len(env.MOVES), env.base
    if action_type == "tuple":
        return [((moves, 0, 0), f"move must be in [0, {moves - 1}], got {moves}"),
                ((0, 2, 0), "write must be in [0, 1], got 2"),
                ((0, 1, base), f"symbol must be in [0, {base - 1}], got {base}"),
                ((0, 1, -1), "got -1"), ((0.5, 0, 0), "0.5"), ((0, True, 0), "True"),
                ((0, 0), "(0, 0)"), ("x", "'x'")]
    return [(np.array([0, 0, base]), f"got {base}"), (np.array([0, 0]), "(2,)"),
            (np.array(["a", "b", "c"]), "<U1"), (np.array([0.5, 0, 0]), "0.5")]


@pytest.mark.parametrize("env_id", NEW_IDS)
def test_passes_stable_baselines3_check_env_with_multidiscrete_actions(env_id):
    # SB3 has no Tuple action spaces: the "multidiscrete" action type is the SB3 one.
    from stable_baselines3.common.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(make(env_id, action_type="multidiscrete"))


def test_registration_ids_horizons_and_vector_entry_points():
    every = hardattn.envs.registered_ids()
    assert set(NEW_IDS) <= set(every) and set(hardattn.envs.registered_ids("glimpse")) <= set(
        every)
    assert len(every) == len(set(every))
    for env_id in NEW_IDS:
        spec = gym.spec(env_id)
        if env_id in MEMORY_IDS:  # the horizon is the default episode length
            assert spec.max_episode_steps == make(env_id).cfg.episode_len
            assert spec.vector_entry_point is not None
        else:  # gym's 200 and SyncVectorEnv
            assert spec.max_episode_steps == 200 and spec.vector_entry_point is None
    with pytest.raises(ValueError, match="'audio'"):
        hardattn.envs.registered_ids("audio")


def test_returned_observations_are_fresh_arrays():
    env, twin = make(RECALL), make(RECALL)
    obs, _ = env.reset(seed=5)
    twin.reset(seed=5)
    for t in range(env.cfg.episode_len):
        obs["input"][...] = 7
        obs["read"][...] = 7
        obs, *_ = env.step((t % env.cfg.n_pairs, 1))
        twin_obs, *_ = twin.step((t % env.cfg.n_pairs, 1))
        assert obs_equal(obs, twin_obs)


@pytest.mark.parametrize("kwargs,error,named", [
    ({"foo": 1}, TypeError, "foo"),
    ({"T": 0}, ValueError, "T=0"),
    ({"payload": -1}, ValueError, "payload=-1"),
    ({"alphabet": 2.5}, ValueError, "alphabet=2.5"),
    ({"action_type": "box"}, ValueError, "'box'"),
    ({"render_mode": "human"}, ValueError, "'human'"),
])
@pytest.mark.parametrize("vector", [False, True], ids=["make", "make_vec"])
@pytest.mark.filterwarnings("ignore:.*not in the possible render_modes")
def test_bad_copy_arguments_raise_naming_the_value(kwargs, error, named, vector):
    with pytest.raises(error, match=re.escape(named)):
        if vector:
            gym.make_vec(COPY, num_envs=2, **kwargs)
        else:
            gym.make(COPY, **kwargs)


@pytest.mark.parametrize("env_id,kwargs,named", [
    (RECALL, {"n_pairs": 0}, "n_pairs=0"),
    (RECALL, {"n_pairs": 5, "n_keys": 4}, "n_keys=4"),
    (RECALL, {"n_values": True}, "n_values=True"),
    ("hardattn/TapeCopy-v0", {"base": 0}, "base=0"),
    ("hardattn/TapeCopy-v0", {"starting_min_length": 40}, "max_min_length=30"),
    ("hardattn/TapeDuplicatedInput-v0", {"duplication": 0}, "duplication=0"),
    ("hardattn/TapeReversedAddition-v0", {"rows": 1}, "rows=1"),
    ("hardattn/TapeReverse-v0", {"action_type": "box"}, "'box'"),
    ("hardattn/TapeReverse-v0", {"last": 0}, "last=0"),
])
def test_bad_arguments_raise_naming_the_value(env_id, kwargs, named):
    with pytest.raises(ValueError, match=re.escape(named)):
        gym.make(env_id, **kwargs)


# ----------------------------------------------------------------------------- CopyMemory


@pytest.mark.parametrize("action_type", ACTION_TYPES)
def test_copy_oracle_recalls_all_ten_symbols_for_the_maximal_return(action_type):
    env = gym.make(COPY, action_type=action_type)  # with the registered TimeLimit
    cfg = env.unwrapped.cfg
    L, P = cfg.episode_len, cfg.payload
    assert (L, P, cfg.alphabet) == (120, 10, 8)
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        payload = env.unwrapped._task.inputs[0, :P, 0].tolist()
        rewards, targets = [], []
        for t in range(L):
            obs, reward, terminated, truncated, info = env.step(
                as_action(env.unwrapped, *copy_oracle(obs, cfg)))
            rewards.append(reward)
            targets.append(info["target"])
            assert terminated is (t == L - 1)
            if t < L - 1:
                assert info.keys() == {"target"}
        assert rewards == [0.0] * (L - P) + [1.0] * P
        assert targets == [0] * (L - P) + payload  # the targets a cross-entropy needs
        assert info["accuracy"] == 1.0 and info["is_success"] is True
        np.testing.assert_array_equal(info["targets"], np.array(targets))
        # The registered horizon is the episode length: the TimeLimit fires on that same step.
        assert truncated is True


def test_copy_sequence_layout_is_symbols_blanks_marker_blanks():
    env = make(COPY, T=7, payload=4, alphabet=3)
    seen = []
    obs, _ = env.reset(seed=0)
    while True:
        seen.append(int(obs["input"]))
        obs, _, terminated, *_ = env.step((0, 0))
        if terminated:
            break
    assert len(seen) == 4 + 7 + 4
    assert all(1 <= s <= 3 for s in seen[:4])
    assert seen[4:] == [0] * 6 + [4] + [0] * 4  # T - 1 blanks, the marker (alphabet + 1)
    assert int(obs["input"]) == 0 and int(obs["t"]) == 15  # blank after the end


def test_copy_reads_arrive_one_step_later_and_future_addresses_are_clipped():
    env = make(COPY, T=5, payload=3, alphabet=4, action_type="multidiscrete")
    obs, _ = env.reset(seed=3)
    inputs = env._task.inputs[0, :, 0].numpy()
    assert int(obs["read"]) == 0 and int(obs["address"]) == 0
    obs, *_ = env.step(np.array([10, 0]))  # at step 0 only cell 0 exists
    assert (int(obs["address"]), int(obs["read"])) == (0, inputs[0])
    obs, *_ = env.step(np.array([1, 0]))
    assert (int(obs["address"]), int(obs["read"])) == (1, inputs[1])
    obs, *_ = env.step(np.array([0, 0]))  # any past cell
    assert (int(obs["address"]), int(obs["read"])) == (0, inputs[0])
    obs, *_ = env.step(np.array([env.cfg.n_cells - 1, 0]))  # clipped to the current step, 3
    assert (int(obs["address"]), int(obs["read"])) == (3, inputs[3])


@settings(max_examples=15, deadline=None)
@given(T=st.integers(1, 12), payload=st.integers(1, 6), alphabet=st.integers(1, 9),
       seed=st.integers(0, 2**31))
def test_copy_oracle_is_optimal_for_any_configuration(T, payload, alphabet, seed):
    L = 2 * payload + T
    env = gym.make(COPY, T=T, payload=payload, alphabet=alphabet, max_episode_steps=L)
    cfg = env.unwrapped.cfg
    obs, _ = env.reset(seed=seed)
    total = 0.0
    for _ in range(L):
        obs, reward, terminated, _, info = env.step(copy_oracle(obs, cfg))
        total += reward
    assert terminated and total == payload and info["accuracy"] == 1.0


def test_copy_random_outputs_score_one_over_the_alphabet_in_single_and_vec_envs():
    A, P, T = 8, 10, 3
    # Vector env: 400 episodes, outputs uniform over the alphabet 1..A.
    vec = gym.make_vec(COPY, num_envs=400, T=T, max_episode_steps=2 * P + T)
    vec.reset(seed=0)
    gen = torch.Generator().manual_seed(0)
    vec_rewards = []
    for _ in range(2 * P + T):
        out = torch.randint(1, A + 1, (400,), generator=gen)
        _, reward, terminated, _, info = vec.step((torch.zeros(400, dtype=torch.long), out))
        vec_rewards.append(reward)
    assert terminated.all()
    scored = torch.stack(vec_rewards[-P:]).flatten().numpy()
    assert not torch.stack(vec_rewards[:-P]).any()
    np.testing.assert_allclose(info["accuracy"].numpy(),
                               torch.stack(vec_rewards[-P:]).mean(0).numpy(), atol=1e-6)
    # Single env: 300 episodes with a numpy random policy.
    single = make(COPY, T=T)
    rng = np.random.default_rng(0)
    single_scored = []
    single.reset(seed=0)
    for _ in range(300):
        rewards = [single.step((0, int(rng.integers(1, A + 1))))[1] for _ in range(2 * P + T)]
        single_scored += rewards[-P:]
        assert not any(rewards[:-P])
        single.reset()
    single_scored = np.array(single_scored)
    p = 1 / A
    for rewards in (scored, single_scored):
        se = np.sqrt(p * (1 - p) / len(rewards))
        assert abs(rewards.mean() - p) < 4 * se, (rewards.mean(), p)
    se_diff = np.sqrt(p * (1 - p) * (1 / len(scored) + 1 / len(single_scored)))
    assert abs(scored.mean() - single_scored.mean()) < 4 * se_diff


def test_copy_actions_sampled_from_the_action_space_score_one_over_its_symbols():
    vec = gym.make_vec(COPY, num_envs=500, action_type="multidiscrete")
    vec.reset(seed=1)
    vec.action_space.seed(1)
    for _ in range(vec.cfg.episode_len):
        *_, info = vec.step(vec.action_space.sample())
    p = 1 / (vec.cfg.alphabet + 2)  # blank and marker can be emitted too
    acc = info["accuracy"].numpy()
    assert abs(acc.mean() - p) < 4 * np.sqrt(p * (1 - p) / (500 * 10))


# ----------------------------------------------------------------------------- AssociativeRecall


@pytest.mark.parametrize("action_type", ACTION_TYPES)
def test_recall_oracle_reads_the_query_slot_and_earns_one(action_type):
    env = gym.make(RECALL, action_type=action_type)
    cfg = env.unwrapped.cfg
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        oracle, rewards = RecallOracle(cfg), []
        for t in range(cfg.episode_len):
            obs, reward, terminated, _, info = env.step(
                as_action(env.unwrapped, *oracle(obs)))
            rewards.append(reward)
            assert terminated is (t == cfg.episode_len - 1)
        assert rewards == [0.0] * (cfg.episode_len - 1) + [1.0]
        assert info["is_success"] is True and info["accuracy"] == 1.0


def test_recall_episode_shows_distinct_keys_then_a_query_then_blanks():
    env = make(RECALL, n_pairs=5, n_keys=6, n_values=3)
    for seed in range(10):
        obs, _ = env.reset(seed=seed)
        seen = [obs["input"].tolist()]
        for _ in range(env.cfg.episode_len):
            obs, reward, _, _, info = env.step((4, 2))
            seen.append(obs["input"].tolist())
        keys, values = [k for k, _ in seen[:5]], [v for _, v in seen[:5]]
        assert len(set(keys)) == 5 and all(1 <= k <= 6 for k in keys)
        assert all(1 <= v <= 3 for v in values)
        query, blank = seen[5], seen[6]
        assert query[0] in keys and query[1] == 0 and blank == [0, 0] == seen[7]
        value = values[keys.index(query[0])]
        assert info["target"] == value and reward == float(value == 2)


# ----------------------------------------------------------------------------- tapes


@pytest.mark.parametrize("env_id", TAPE_IDS)
@pytest.mark.parametrize("action_type", ACTION_TYPES)
def test_tape_oracle_solves_episodes_of_every_length(env_id, action_type):
    for start in (1, 5, 14, 30):
        env = gym.make(env_id, action_type=action_type, starting_min_length=start)
        for seed in range(3):
            ret, terminated, truncated, info, steps = play_tape_oracle(env, seed)
            target = env.unwrapped.target
            assert (ret, terminated, truncated) == (float(len(target)), True, False)
            assert info["is_success"] is True
            assert steps <= env.unwrapped.time_limit


@pytest.mark.parametrize("env_cls,input_data,target", [
    ("TapeCopyEnv", [3, 1, 4], [3, 1, 4]),
    ("TapeDuplicatedInputEnv", [2, 2, 0, 0, 4, 4], [2, 0, 4]),
    ("TapeReverseEnv", [1, 0, 0], [0, 0, 1]),
    ("TapeRepeatCopyEnv", [1, 2], [1, 2, 2, 1, 1, 2]),
    # 2 + 2 = 4 = 11 in base 3 (digit 1, carry 1); 1 + 0 + 1 = 2: the sum is 2*3 + 1.
    ("TapeReversedAdditionEnv", [[2, 2], [1, 0]], [1, 2]),
    ("TapeReversedAdditionEnv", [[2, 2], [2, 1]], [1, 1, 1]),  # a final carry digit
])
def test_tape_targets_are_gyms(env_cls, input_data, target):
    env = getattr(hardattn.envs, env_cls)()
    assert env._target(np.array(input_data)).tolist() == target


@settings(max_examples=30, deadline=None)
@given(data=st.data(), rows=st.integers(2, 4), base=st.integers(2, 10))
def test_reversed_addition_target_is_the_sum_of_the_rows(data, rows, base):
    digits = data.draw(st.lists(st.lists(st.integers(0, base - 1), min_size=rows,
                                         max_size=rows), min_size=1, max_size=12))
    env = TapeReversedAdditionEnv(base=base, rows=rows)
    target = env._target(np.array(digits))

    def value(ds):
        return sum(int(d) * base**i for i, d in enumerate(ds))

    assert value(target) == sum(value([col[r] for col in digits]) for r in range(rows))
    # A final carry is below rows: one digit when rows <= base, at most two here.
    extra = 1 if rows <= base else 2
    assert len(digits) <= len(target) <= len(digits) + extra and (target < base).all()


def test_tape_rewards_wrong_writes_and_the_in_task_timeout_are_gyms():
    env = make("hardattn/TapeCopy-v0")
    env.reset(seed=0)
    first = int(env.input_data[0])
    # A correct write pays 1; a wrong one -0.5 and ends the episode (terminated).
    _, reward, terminated, truncated, _ = env.step((1, 1, first))
    assert (reward, terminated, truncated) == (1.0, False, False)
    wrong = (int(env.input_data[1]) + 1) % env.base
    _, reward, terminated, truncated, info = env.step((1, 1, wrong))
    assert (reward, terminated, truncated, info["is_success"]) == (-0.5, True, False, False)
    # Never writing: steps 1..time_limit pay 0; step time_limit + 1 is truncated with -1.
    env.reset(seed=1)
    w, limit = env.input_width, env.time_limit
    assert limit == w + 2 * len(env.target) + 4
    for t in range(1, limit + 1):
        _, reward, terminated, truncated, _ = env.step((t % 2, 0, 0))
        assert (reward, terminated, truncated) == (0.0, False, False)
    _, reward, terminated, truncated, info = env.step((0, 0, 0))
    assert (reward, terminated, truncated, info["is_success"]) == (-1.0, False, True, False)
    addition = make("hardattn/TapeReversedAddition-v0")
    addition.reset(seed=0)
    assert addition.time_limit == 2 * addition.input_width + 4  # gym's, on the input width


def test_tape_head_reads_blank_off_the_tape_and_grid():
    env = make("hardattn/TapeCopy-v0")
    obs, _ = env.reset(seed=0)
    assert obs == env.input_data[0]
    obs, *_ = env.step((0, 0, 0))  # left of the tape
    assert obs == env.base
    grid = make("hardattn/TapeReversedAddition-v0")
    obs, _ = grid.reset(seed=0)
    assert obs == grid.input_data[0, 0]
    obs, *_ = grid.step((3, 0, 0))  # down: row 1
    assert obs == grid.input_data[0, 1]
    obs, *_ = grid.step((3, 0, 0))  # below the grid
    assert obs == grid.base


def test_curriculum_grows_after_last_episodes_all_solved_and_not_otherwise():
    env = gym.make("hardattn/TapeCopy-v0")
    lengths = []
    for _ in range(10):
        play_tape_oracle(env)
        lengths.append(env.unwrapped.input_width)
    assert all(2 <= n <= 4 for n in lengths)  # min_length + {0, 1, 2}
    _, info = env.reset()  # the 10th solved episode is recorded here: level up
    assert info["min_length"] == env.unwrapped.min_length == 3
    assert 3 <= info["input_length"] <= 5
    # 9 solved and 1 failed (a wrong first write): no promotion; 10 solved again: promotion.
    env.step((1, 1, (int(env.unwrapped.input_data[0]) + 1) % 5))
    for _ in range(9):
        play_tape_oracle(env)
    assert env.reset()[1]["min_length"] == 3
    for _ in range(10):
        play_tape_oracle(env)
    assert env.reset()[1]["min_length"] == 4
    # Reverse looks at the last 50 episodes and starts at 1, as in gym; the cap holds.
    rev = gym.make("hardattn/TapeReverse-v0")
    for _ in range(50):
        play_tape_oracle(rev)
    assert rev.reset()[1]["min_length"] == 2
    capped = gym.make("hardattn/TapeCopy-v0", starting_min_length=3, max_min_length=3, last=2)
    for _ in range(4):
        play_tape_oracle(capped)
    assert capped.reset()[1]["min_length"] == 3
    # The curriculum is per instance (gym's was shared by every instance) and is pickled.
    assert gym.make("hardattn/TapeCopy-v0").unwrapped.min_length == 2
    assert pickle.loads(pickle.dumps(env.unwrapped)).min_length == 4


def test_tape_make_vec_is_a_sync_vector_env_of_single_envs():
    vec = gym.make_vec("hardattn/TapeReverse-v0", num_envs=3)
    assert isinstance(vec, gym.vector.SyncVectorEnv)
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (3,) and vec.single_observation_space.contains(obs[0])
    vec.action_space.seed(0)
    vec.step(vec.action_space.sample())


# ----------------------------------------------------------------------------- batched


VEC_CASES = [(env_id, a) for env_id in MEMORY_IDS for a in ACTION_TYPES]
VEC_CASE_IDS = [f"{env_id.split('/')[1].split('-')[0]}-{a}" for env_id, a in VEC_CASES]


def vec_oracle(env, obs: dict[str, torch.Tensor], keys: torch.Tensor | None):
    """Batched oracle actions (torch) of ``env``'s action type; ``keys`` (N, n_pairs) is the
    recall oracle's memory of the keys seen (updated in place)."""
    cfg, t = env.cfg, obs["t"].cpu()
    if isinstance(env, CopyMemoryVecEnv):
        L, P = cfg.episode_len, cfg.payload
        address = (t + 1 - (L - P)).clamp(0, cfg.n_cells - 1)
        output = torch.where(t >= L - P, obs["read"].cpu(), 0)
    else:
        N, inp = cfg.n_pairs, obs["input"].cpu()
        rows = (t < N).nonzero().flatten()
        keys[rows, t[rows]] = inp[rows, 0]
        address = (keys == inp[:, :1]).long().argmax(1) * (t == N)
        output = obs["read"].cpu()[:, 1] * (t == N + 1)
    if cfg.action_type == "tuple":
        return address, output
    return torch.stack([address, output], 1)


@pytest.mark.parametrize("env_id,action_type", VEC_CASES, ids=VEC_CASE_IDS)
def test_make_vec_gives_torch_tensors_in_space_and_the_oracle_scores_every_row(env_id,
                                                                             action_type):
    N = 5
    env = gym.make_vec(env_id, num_envs=N, action_type=action_type)
    assert isinstance(env, (CopyMemoryVecEnv, AssociativeRecallVecEnv))
    cfg = env.cfg
    obs, _ = env.reset(seed=0)
    keys = torch.zeros(N, getattr(cfg, "n_pairs", 1), dtype=torch.long)
    total = torch.zeros(N)
    for t in range(cfg.episode_len):
        C = len(cfg.input_nvec)
        shapes = {"input": (N,) if C == 1 else (N, C), "read": (N,) if C == 1 else (N, C),
                  "address": (N,), "t": (N,)}
        assert {k: (tuple(v.shape), v.dtype) for k, v in obs.items()} == {
            k: (s, torch.int64) for k, s in shapes.items()}
        assert env.observation_space.contains({k: v.numpy() for k, v in obs.items()})
        obs, reward, terminated, truncated, info = env.step(vec_oracle(env, obs, keys))
        assert reward.dtype == torch.float32 and reward.shape == (N,)
        assert terminated.dtype == truncated.dtype == torch.bool and not truncated.any()
        assert bool(terminated.all()) is (t == cfg.episode_len - 1)
        assert ("targets" in info) is (t == cfg.episode_len - 1)  # only when rows terminate
        total += reward
    assert torch.equal(total, torch.full((N,), float(env._task.n_scored)))
    assert torch.equal(info["_accuracy"], terminated) and (info["accuracy"] == 1.0).all()
    assert info["is_success"].all() and info["targets"].shape == (N, cfg.episode_len)


@pytest.mark.parametrize("env_id", MEMORY_IDS)
def test_vec_autoreset_is_next_step_as_gymnasium_documents(env_id):
    N = 4
    env, twin = gym.make_vec(env_id, num_envs=N), gym.make_vec(env_id, num_envs=N)
    assert env.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    L = env.cfg.episode_len
    zeros = torch.zeros(N, dtype=torch.long)
    for e in (env, twin):
        e.reset(seed=8)
    for _ in range(2):
        for t in range(1, L + 1):
            obs, reward, terminated, truncated, info = env.step((zeros, zeros))
            twin.step((zeros, zeros))
            assert torch.equal(obs["t"], torch.full((N,), t))
            assert bool(terminated.any()) is (t == L) and bool(terminated.all()) is (t == L)
            assert torch.equal(info["_accuracy"], terminated)
        # The next step resets: reset observations, reward 0, not terminated, the action
        # ignored (the twin acts differently and must see the same thing).
        obs, reward, terminated, truncated, info = env.step((zeros, zeros))
        other = (torch.full((N,), env.cfg.n_cells - 1), torch.full((N,), env.cfg.n_out - 1))
        twin_obs, twin_reward, *_ = twin.step(other)
        assert all(torch.equal(obs[k], twin_obs[k]) for k in obs)
        assert torch.equal(obs["t"], zeros) and not obs["read"].any()
        assert not reward.any() and not twin_reward.any()
        assert not terminated.any() and not truncated.any()
        assert not info["_target"].any() and not info["_accuracy"].any()


def test_vec_autoreset_touches_only_the_rows_that_terminated():
    # White-box: rows 1 and 3 are moved to their last step so the rows fall out of step.
    env = gym.make_vec(COPY, num_envs=4, T=3, payload=2, max_episode_steps=7)
    env.reset(seed=0)
    L, rows = env.cfg.episode_len, torch.tensor([1, 3])
    env._task.t[rows] = L - 1
    env._t_host[rows.numpy()] = L - 1
    before = env._task.inputs.clone()
    zeros = torch.zeros(4, dtype=torch.long)
    _, _, terminated, _, info = env.step((zeros, zeros))
    assert terminated.tolist() == [False, True, False, True]
    assert info["_accuracy"].tolist() == [False, True, False, True]
    obs, reward, terminated, _, info = env.step((zeros, zeros))
    assert obs["t"].tolist() == [2, 0, 2, 0] and not terminated.any() and not reward.any()
    assert info["_target"].tolist() == [True, False, True, False]
    assert torch.equal(env._task.inputs[[0, 2]], before[[0, 2]])  # untouched
    assert not torch.equal(env._task.inputs[rows], before[rows])  # new episodes


def test_vec_same_seed_gives_identical_tensors_and_another_seed_different_ones():
    def run(seed: int) -> list[torch.Tensor]:
        env = gym.make_vec(RECALL, num_envs=6, action_type="multidiscrete")
        env.action_space.seed(seed)
        obs, _ = env.reset(seed=seed)
        out = [obs["input"]]
        for _ in range(2 * env.cfg.episode_len + 1):  # through an autoreset
            obs, reward, terminated, *_ = env.step(env.action_space.sample())
            out += [obs["input"], obs["read"], reward, terminated]
        return out

    a, b, c = run(4), run(4), run(5)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("env_id", MEMORY_IDS)
def test_vec_rows_and_single_env_agree_step_by_step_on_the_same_sequences(env_id):
    # Same episode code: a single env given a vec row's sequence sees and earns the same.
    N = 3
    vec = gym.make_vec(env_id, num_envs=N, action_type="multidiscrete")
    obs, _ = vec.reset(seed=2)
    vec.action_space.seed(2)
    singles = []
    for i in range(N):
        single = make(env_id, action_type="multidiscrete")
        single.reset(seed=0)
        single._task.inputs = vec._task.inputs[i:i + 1].clone()
        single._task.targets = vec._task.targets[i:i + 1].clone()
        assert obs_equal(single._obs(), {k: v[i].numpy() for k, v in obs.items()})
        singles.append(single)
    for _ in range(vec.cfg.episode_len):
        actions = vec.action_space.sample()
        obs, reward, terminated, _, info = vec.step(actions)
        for i, single in enumerate(singles):
            s_obs, s_reward, s_term, s_trunc, s_info = single.step(actions[i])
            assert obs_equal(s_obs, {k: v[i].numpy() for k, v in obs.items()})
            assert (s_reward, s_term, s_trunc) == (float(reward[i]), bool(terminated[i]), False)
            assert s_info["target"] == int(info["target"][i])
    for i, single in enumerate(singles):
        assert single._done and s_info.keys() >= {"accuracy", "targets"}
        assert single._task.accuracy()[0] == info["accuracy"][i]


def test_vec_and_single_recall_sample_queries_and_values_alike():
    # Statistics: the answer's value is uniform on 1..n_values in both implementations.
    V, n = 4, 2000
    vec = gym.make_vec(RECALL, num_envs=n, n_pairs=3, n_keys=5, n_values=V,
                       max_episode_steps=5)
    vec.reset(seed=0)
    vec_targets = vec._task.targets[:, -1].numpy()
    single = make(RECALL, n_pairs=3, n_keys=5, n_values=V)
    single.reset(seed=0)
    single_targets = []
    for _ in range(600):
        single_targets.append(int(single._task.targets[0, -1]))
        single.reset()
    for targets in (vec_targets, np.array(single_targets)):
        freq = np.bincount(targets, minlength=V + 1)[1:] / len(targets)
        assert abs(freq - 1 / V).max() < 4 * np.sqrt((1 / V) * (1 - 1 / V) / len(targets))
    # The query is a uniformly chosen slot.
    query_slots = (vec._task.inputs[:, :3, 0] == vec._task.inputs[:, 3:4, 0]).long().argmax(1)
    counts = np.bincount(query_slots.numpy(), minlength=3)
    assert (abs(counts - n / 3) < 4 * np.sqrt(n * (1 / 3) * (2 / 3))).all(), counts


def test_vec_errors_name_the_problem():
    env = gym.make_vec(COPY, num_envs=4, action_type="multidiscrete")
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(torch.zeros(4, 2, dtype=torch.long))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=re.escape("(3, 2)")):
        env.step(torch.zeros(3, 2, dtype=torch.long))  # one row short
    bad = torch.zeros(4, 2, dtype=torch.long)
    bad[2, 1] = 10
    with pytest.raises(ValueError, match=re.escape("[0, 9], got [0, 0, 10, 0]")):
        env.step(bad)
    tup = gym.make_vec(RECALL, num_envs=2)
    tup.reset(seed=0)
    with pytest.raises(ValueError, match=re.escape("got [0, 8]")):
        tup.step((torch.tensor([0, 8]), torch.tensor([0, 0])))
    # A shorter time limit than the episode would cut off the scored steps.
    with pytest.raises(ValueError, match=re.escape("max_episode_steps=220")):
        gym.make_vec(COPY, num_envs=2, T=200)  # registered limit 120 < 220
    assert gym.make_vec(COPY, num_envs=2, T=200, max_episode_steps=220).cfg.episode_len == 220
    for kwargs, named in (({"num_envs": 0}, "num_envs=0"), ({"device": "tpu9"}, "tpu9"),
                          ({"render_mode": "human"}, "'human'")):
        with pytest.raises(ValueError, match=re.escape(named)):
            gym.make_vec(COPY, **{"num_envs": 2, **kwargs})


def test_vec_returned_tensors_are_fresh_and_render_gives_one_text_per_row():
    env, twin = (gym.make_vec(RECALL, num_envs=3, render_mode="ansi") for _ in range(2))
    obs, _ = env.reset(seed=1)
    twin.reset(seed=1)
    action = (torch.tensor([0, 1, 2]), torch.tensor([1, 1, 1]))
    for _ in range(env.cfg.episode_len + 1):
        for v in obs.values():
            v.fill_(7)
        obs, reward, terminated, *_ = env.step(action)
        twin_obs, *_ = twin.step(action)
        assert all(torch.equal(obs[k], twin_obs[k]) for k in obs)
        reward.fill_(5.0), terminated.fill_(True)
    frames = env.render()
    assert len(frames) == 3 and all(isinstance(f, str) for f in frames)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("env_id", MEMORY_IDS)
def test_cuda_vec_env_keeps_tensors_on_the_gpu_and_the_oracle_scores_every_row(env_id):
    N = 64
    env = gym.make_vec(env_id, num_envs=N, device="cuda", action_type="multidiscrete")
    obs, _ = env.reset(seed=0)
    keys = torch.zeros(N, getattr(env.cfg, "n_pairs", 1), dtype=torch.long)
    total = torch.zeros(N, device="cuda")
    for _ in range(env.cfg.episode_len + 1):  # and the autoreset step
        assert all(v.device.type == "cuda" for v in obs.values())
        obs, reward, terminated, *_ = env.step(vec_oracle(env, obs, keys))
        assert reward.device.type == terminated.device.type == "cuda"
        total += reward
    assert torch.equal(total.cpu(), torch.full((N,), float(env._task.n_scored)))
    assert (obs["t"] == 0).all()  # autoreset


# ----------------------------------------------------------------------------- SB3


def test_sb3_ppo_runs_on_associative_recall_multidiscrete():
    from stable_baselines3 import PPO

    env = gym.make(RECALL, action_type="multidiscrete")
    model = PPO("MultiInputPolicy", env, n_steps=64, batch_size=64, n_epochs=1, seed=0,
                device="cpu", verbose=0)
    model.learn(total_timesteps=128)
    assert model.num_timesteps == 128
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert env.action_space.contains(action)
