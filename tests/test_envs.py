"""One battery over every registered env id and action type: API conformance (Gymnasium's and
SB3's checkers), determinism, episode semantics, input validation, pickling, rendering; then
the batched ``GlimpseVecEnv``: types, NEXT_STEP autoreset, seeding, statistical agreement with
single envs, given canvases, device placement; and a short SB3 PPO run.
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

import hardattn.envs
from hardattn import data, sensors
from hardattn.envs import GlimpseEnv, GlimpseVecEnv
from hardattn.envs.glimpse_task import ACTION_TYPES, N_CLASSES

# Glimpse-specific checks; every registered id goes through test_env_battery.py.
IDS = hardattn.envs.registered_ids("glimpse")
CASES = [(env_id, a) for env_id in IDS for a in ACTION_TYPES]
CASE_IDS = [f"{env_id.split('/')[1].split('-')[0]}-{a}" for env_id, a in CASES]
CUDA = torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _needs_mnist(data_root):
    # Every env draws its canvases from MNIST: skip (with the fixture's reason) without it.
    yield


def make(env_id: str, **kwargs) -> GlimpseEnv:
    """The raw single env (no wrappers), as ``check_env`` recommends."""
    return gym.make(env_id, **kwargs).unwrapped


def action_with(env: GlimpseEnv, cls: int, loc: tuple[float, float] = (0.0, 0.0)):
    """A single action of ``env``'s action type that looks at ``loc`` and answers ``cls``."""
    cfg = env.cfg
    if cfg.action_type == "tuple":
        return np.asarray(loc, np.float32), cls
    if cfg.action_type == "multidiscrete":
        # The cell whose centre (2g + 1) / G - 1 is nearest to loc.
        cells = np.clip(np.round(((np.asarray(loc) + 1.0) * cfg.grid - 1.0) / 2.0), 0,
                        cfg.grid - 1)
        return np.array([cells[0], cells[1], cls], dtype=np.int64)
    scores = np.zeros(N_CLASSES, np.float32)
    scores[cls] = 1.0
    return np.concatenate([np.asarray(loc, np.float32), scores])


def answered_class(action) -> int:
    """The class a single action answers, whatever its action type."""
    if isinstance(action, tuple):
        return int(action[1])
    action = np.asarray(action)
    return int(action[2]) if action.dtype.kind in "iu" else int(np.argmax(action[2:]))


def obs_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def rollout(env: GlimpseEnv, seed: int, episodes: int) -> list[tuple]:
    """``(obs, reward, terminated, truncated)`` of every reset and step, actions sampled from
    an action space seeded with ``seed``."""
    env.action_space.seed(seed)
    out = []
    obs, _ = env.reset(seed=seed)
    out.append((obs, None, None, None))
    for _ in range(episodes):
        terminated = False
        while not terminated:
            obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            out.append((obs, reward, terminated, truncated))
        obs, _ = env.reset()
        out.append((obs, None, None, None))
    return out


def same_rollouts(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(
        obs_equal(x[0], y[0]) and x[1:] == y[1:] for x, y in zip(a, b))


# ----------------------------------------------------------------------------- single env


@pytest.mark.parametrize("env_id,action_type", CASES, ids=CASE_IDS)
class TestEveryEnv:
    """The guarantees every registered id gives with every action type."""

    def test_passes_gymnasium_check_env_including_render(self, env_id, action_type):
        env = make(env_id, action_type=action_type, render_mode="rgb_array")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the checker's warnings are failures here
            gym_check_env(env)

    def test_same_seed_gives_the_same_rollout_and_another_seed_another(self, env_id,
                                                                       action_type):
        a = rollout(make(env_id, action_type=action_type), seed=11, episodes=2)
        b = rollout(make(env_id, action_type=action_type), seed=11, episodes=2)
        c = rollout(make(env_id, action_type=action_type), seed=12, episodes=2)
        assert same_rollouts(a, b)
        assert not np.array_equal(a[0][0]["glimpse"], c[0][0]["glimpse"])

    def test_every_observation_is_inside_the_observation_space(self, env_id, action_type):
        env = make(env_id, action_type=action_type)
        for obs, *_ in rollout(env, seed=3, episodes=3):
            assert env.observation_space.contains(obs), obs

    def test_returned_arrays_are_fresh_so_mutating_them_changes_nothing(self, env_id,
                                                                        action_type):
        env, twin = make(env_id, action_type=action_type), make(env_id, action_type=action_type)
        obs, _ = env.reset(seed=5)
        twin.reset(seed=5)
        action = action_with(env, 0, (0.1, -0.2))
        for _ in range(env.cfg.n_glimpses - 1):
            for key in ("glimpse", "loc"):
                obs[key][...] = 7.0  # scribble over what the env handed out
            obs, *_ = env.step(action)
            twin_obs, *_ = twin.step(action)
            assert obs_equal(obs, twin_obs)
        again, *_ = env.step(action)
        again["glimpse"][...] = 7.0
        assert not np.shares_memory(again["glimpse"], env._obs()["glimpse"])

    def test_pickled_mid_episode_env_continues_like_the_original(self, env_id, action_type):
        env = make(env_id, action_type=action_type)
        env.action_space.seed(0)
        env.reset(seed=21)
        env.step(env.action_space.sample())
        copy = pickle.loads(pickle.dumps(env))
        actions = [env.action_space.sample() for _ in range(3 * env.cfg.n_glimpses)]
        traces = []
        for e in (env, copy):
            trace = []
            for action in actions:
                obs, reward, terminated, truncated, info = e.step(action)
                trace.append((obs, reward, terminated, truncated, info))
                if terminated:  # the next canvases come from the pickled RNG state too
                    trace.append((e.reset()[0], None, None, None, None))
            traces.append(trace)
        assert len(traces[0]) == len(traces[1])
        for x, y in zip(*traces):
            assert obs_equal(x[0], y[0]) and x[1:] == y[1:]

    def test_render_returns_uint8_canvas_frames_at_every_step(self, env_id, action_type):
        env = make(env_id, action_type=action_type, render_mode="rgb_array")
        H, W = env.cfg.spec.height, env.cfg.spec.width
        env.reset(seed=1)
        env.action_space.seed(1)
        frames = [env.render()]
        terminated = False
        while not terminated:
            _, _, terminated, _, _ = env.step(env.action_space.sample())
            frames.append(env.render())
        for frame in frames:
            assert isinstance(frame, np.ndarray)
            assert frame.dtype == np.uint8 and frame.shape == (H, W, 3)
        assert make(env_id, action_type=action_type).render() is None  # no render_mode

    def test_episode_is_n_glimpses_steps_and_only_a_correct_last_class_pays(self, env_id,
                                                                           action_type):
        env = make(env_id, action_type=action_type)
        T = env.cfg.n_glimpses
        env.action_space.seed(2)
        for episode in range(3):
            obs, info = env.reset(seed=100 + episode)
            assert obs["t"] == 0 and info == {}
            for t in range(1, T + 1):
                action = env.action_space.sample()
                obs, reward, terminated, truncated, info = env.step(action)
                assert obs["t"] == t
                assert truncated is False
                assert terminated is (t == T)
                if t < T:
                    assert reward == 0.0 and "label" not in info
            assert 0 <= info["label"] < N_CLASSES
            assert reward == float(answered_class(action) == info["label"])
            assert info["is_success"] is (reward == 1.0)

    def test_answering_the_true_label_on_the_last_step_pays_one(self, env_id, action_type):
        env = make(env_id, action_type=action_type)
        T = env.cfg.n_glimpses
        # First pass learns the label from info; the same seed replays the same canvas.
        env.reset(seed=7)
        for _ in range(T):
            *_, info = env.step(action_with(env, 0))
        label = info["label"]
        assert label == int(env._task.labels[0])  # info agrees with the task's own label
        for answer, paid in ((label, 1.0), ((label + 1) % N_CLASSES, 0.0)):
            env.reset(seed=7)
            rewards = [env.step(action_with(env, answer, (0.3, -0.4)))[1] for _ in range(T)]
            # The true label answered before the last step earns nothing.
            assert rewards == [0.0] * (T - 1) + [paid]

    def test_locations_are_clamped_or_snapped_as_documented(self, env_id, action_type):
        env = make(env_id, action_type=action_type)
        cfg = env.cfg
        env.reset(seed=4)
        if action_type == "multidiscrete":
            obs, *_ = env.step(np.array([0, cfg.grid - 1, 3]))
            want = np.array([1.0 / cfg.grid - 1.0, 1.0 - 1.0 / cfg.grid], np.float32)
            np.testing.assert_allclose(obs["loc"], want, atol=1e-6)
        else:
            obs, *_ = env.step(action_with(env, 3, (5.0, -7.5)))  # finite, far outside
            np.testing.assert_array_equal(obs["loc"], np.array([1.0, -1.0], np.float32))
        # The glimpse is read at the (clamped or snapped) location reported in obs["loc"].
        want_glimpse = sensors.glimpse(env._task.images, torch.as_tensor(obs["loc"])[None],
                                       cfg.patch, cfg.scales, cfg.scale_factor, levels=255)[0]
        np.testing.assert_array_equal(obs["glimpse"], want_glimpse.numpy())

    def test_invalid_actions_raise_value_error_naming_the_value(self, env_id, action_type):
        env = make(env_id, action_type=action_type)
        for action, named in BAD_ACTIONS[action_type]:
            env.reset(seed=0)
            with pytest.raises(ValueError, match=re.escape(named)):
                env.step(action)
        # A rejected action leaves the episode where it was: a valid one still works.
        obs, *_ = env.step(action_with(env, 1))
        assert obs["t"] == 1

    def test_step_outside_an_episode_raises_runtime_error(self, env_id, action_type):
        env = make(env_id, action_type=action_type)
        with pytest.raises(RuntimeError, match="before reset"):
            env.step(action_with(env, 0))
        env.reset(seed=0)
        for _ in range(env.cfg.n_glimpses):
            env.step(action_with(env, 0))
        with pytest.raises(RuntimeError, match="after the episode terminated"):
            env.step(action_with(env, 0))


_NAN2, _INF2 = np.array([np.nan, 0.0], np.float32), np.array([0.0, -np.inf], np.float32)
BAD_ACTIONS: dict[str, list[tuple[Any, str]]] = {
    "tuple": [
        ((_NAN2, 3), "nan"),
        ((_INF2, 3), "-inf"),
        ((np.zeros(3, np.float32), 3), "(3,)"),
        ((np.array(["a", "b"]), 3), "<U1"),
        ((np.array([None, None], dtype=object), 3), "object"),
        ((np.zeros(2, np.float32), 10), "[10]"),
        ((np.zeros(2, np.float32), -1), "[-1]"),
        ((np.zeros(2, np.float32), 3.5), "3.5"),
        ((np.zeros(2, np.float32), "3"), "'3'"),
        ("x", "'x'"),
    ],
    "multidiscrete": [
        (np.array([0, 0, 10]), "10]"),
        (np.array([0, 0, -1]), "-1]"),
        (np.array([9, 0, 1]), "[[9, 0, 1]]"),  # grid cell out of range (grid=9)
        (np.array([0, -1, 1]), "-1"),
        (np.array([0, 0]), "(2,)"),
        (np.array(["a", "b", "c"]), "<U1"),
        (np.array([0.5, 0.0, 1.0]), "0.5"),
    ],
    "box": [
        (np.r_[_NAN2, np.zeros(10, np.float32)], "nan"),
        (np.r_[_INF2, np.zeros(10, np.float32)], "-inf"),
        (np.full(12, np.inf, np.float32), "inf"),
        (np.zeros(11, np.float32), "(11,)"),
        (np.array(["a"] * 12), "<U1"),
        (np.array([None] * 12, dtype=object), "object"),
        (np.zeros(12, np.int64), "int64"),
    ],
}


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("action_type", ["multidiscrete", "box"])
def test_passes_stable_baselines3_check_env(env_id, action_type):
    # SB3 has no Tuple action spaces: its two supported action types are checked here.
    from stable_baselines3.common.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Advice only: SB3's MultiInputPolicy flattens the (scales, 1, p, p) glimpse itself
        # (see the PPO test below).
        warnings.filterwarnings("ignore", message=".*unconventional shape.*")
        check_env(make(env_id, action_type=action_type))


def test_class_out_of_range_is_rejected_even_when_the_grid_is_larger_than_ten():
    # Bug fixed: the class was only checked against max(grid, 10), so grid=12 let 10 and 11
    # through as classes that can never pay.
    env = make(IDS[0], action_type="multidiscrete", grid=12)
    env.reset(seed=0)
    obs, *_ = env.step(np.array([11, 11, 9]))  # cells up to 11 are valid with grid=12
    assert obs["t"] == 1
    with pytest.raises(ValueError, match=re.escape("11")):
        env.step(np.array([0, 0, 11]))


@pytest.mark.parametrize("kwargs,error,named", [
    ({"foo": 1}, TypeError, "foo"),
    ({"preset": "cluttered61"}, ValueError, "'cluttered61'"),
    ({"split": "training"}, ValueError, "'training'"),
    ({"first_glimpse": "middle"}, ValueError, "'middle'"),
    ({"action_type": "discrete"}, ValueError, "'discrete'"),
    ({"grid": 0}, ValueError, "grid=0"),
    ({"n_glimpses": 0}, ValueError, "n_glimpses=0"),
    ({"patch": -2}, ValueError, "patch=-2"),
    ({"canvas": {"n_distractor": 3}}, ValueError, "n_distractor"),
])
@pytest.mark.parametrize("vector", [False, True], ids=["make", "make_vec"])
def test_bad_constructor_arguments_raise_naming_the_value(kwargs, error, named, vector):
    env_id = "hardattn/GlimpseMNIST-v0"
    with pytest.raises(error, match=re.escape(named)):
        if vector:
            gym.make_vec(env_id, num_envs=2, **kwargs)
        else:
            gym.make(env_id, **kwargs)


@pytest.mark.parametrize("kwargs,named", [
    ({"render_mode": "human"}, "'human'"), ({"num_envs": 0}, "num_envs=0"),
    ({"device": "tpu"}, "tpu"),
])
def test_bad_vector_arguments_raise_naming_the_value(kwargs, named):
    kwargs = {"num_envs": 2, **kwargs}
    with pytest.raises((ValueError, RuntimeError), match=re.escape(named)):
        gym.make_vec("hardattn/GlimpseMNIST-v0", **kwargs)


def test_given_canvas_is_what_the_single_env_glimpses():
    env = make("hardattn/GlimpseTranslated60-v0", first_glimpse="center")
    cfg = env.cfg
    gen = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (60, 60), generator=gen).float() / 255.0
    obs, _ = env.reset(seed=0, options={"canvas": (image.numpy(), 4)})
    want = sensors.glimpse(image[None, None], torch.zeros(1, 2), cfg.patch, cfg.scales,
                           levels=255)[0]  # 8-bit pixels: read as exact levels
    np.testing.assert_array_equal(obs["glimpse"], want.numpy())
    for _ in range(cfg.n_glimpses):
        _, reward, _, _, info = env.step(action_with(env, 4))
    assert (reward, info["label"]) == (1.0, 4)


# ----------------------------------------------------------------------------- batched env


def make_vec(env_id: str, num_envs: int, **kwargs) -> GlimpseVecEnv:
    return gym.make_vec(env_id, num_envs=num_envs, **kwargs)


def vec_actions(env: GlimpseVecEnv, cls: int | torch.Tensor, loc=(0.0, 0.0)):
    """Batched actions (torch) of ``env``'s action type, all looking at ``loc``."""
    N, cfg = env.num_envs, env.cfg
    cls = torch.full((N,), cls, dtype=torch.long) if isinstance(cls, int) else cls.long().cpu()
    loc_t = torch.tensor(loc, dtype=torch.float32).expand(N, 2).clone()
    if cfg.action_type == "tuple":
        return loc_t, cls
    if cfg.action_type == "multidiscrete":
        cells = ((loc_t + 1.0) * cfg.grid - 1.0).div(2.0).round().clamp(0, cfg.grid - 1)
        return torch.cat([cells.long(), cls[:, None]], dim=1)
    return torch.cat([loc_t, torch.nn.functional.one_hot(cls, N_CLASSES).float()], dim=1)


def to_numpy(obs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.cpu().numpy() for k, v in obs.items()}


def vec_obs_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("env_id,action_type", CASES, ids=CASE_IDS)
def test_make_vec_gives_a_glimpse_vec_env_of_torch_tensors_inside_its_space(env_id,
                                                                          action_type):
    N = 3
    env = make_vec(env_id, N, action_type=action_type)
    assert isinstance(env, GlimpseVecEnv)
    cfg, S, p = env.cfg, env.cfg.scales, env.cfg.patch
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    steps = [(obs, None, None, None)]
    for _ in range(cfg.n_glimpses + 1):  # one full episode and the autoreset step
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        steps.append((obs, reward, terminated, truncated))
    for obs, reward, terminated, truncated in steps:
        assert {k: (tuple(v.shape), v.dtype, v.device.type) for k, v in obs.items()} == {
            "glimpse": ((N, S, 1, p, p), torch.float32, "cpu"),
            "loc": ((N, 2), torch.float32, "cpu"),
            "t": ((N,), torch.int64, "cpu"),
        }
        assert env.observation_space.contains(to_numpy(obs))
        if reward is not None:
            assert reward.shape == (N,) and reward.dtype == torch.float32
            assert terminated.shape == truncated.shape == (N,)
            assert terminated.dtype == truncated.dtype == torch.bool
            assert not truncated.any()


@pytest.mark.parametrize("env_id", IDS)
def test_vec_autoreset_is_next_step_as_gymnasium_documents(env_id):
    N = 4
    env, twin = make_vec(env_id, N, first_glimpse="center"), make_vec(env_id, N,
                                                                      first_glimpse="center")
    assert env.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    T = env.cfg.n_glimpses
    for e in (env, twin):
        e.reset(seed=8)
    for _episode in range(2):
        for t in range(1, T + 1):
            obs, reward, terminated, truncated, info = env.step(vec_actions(env, 3, (0.5, 0.5)))
            twin.step(vec_actions(twin, 3, (0.5, 0.5)))
            assert torch.equal(obs["t"], torch.full((N,), t))
            assert bool(terminated.all()) is (t == T) and bool(terminated.any()) is (t == T)
            assert torch.equal(info["_label"], terminated)
            if t < T:
                assert not reward.any()
        # The terminal step pays exactly the rows whose label is the class answered.
        assert torch.equal(reward, (info["label"] == 3).float())
        # The next step resets: reset observations, reward 0, not terminated, action ignored
        # (the twin gets a different location and class and must see the same thing).
        obs, reward, terminated, truncated, info = env.step(vec_actions(env, 3, (0.5, 0.5)))
        twin_obs, *_ = twin.step(vec_actions(twin, 7, (-0.9, 0.2)))
        assert vec_obs_equal(obs, twin_obs)
        assert torch.equal(obs["t"], torch.zeros(N, dtype=torch.long))
        assert torch.equal(obs["loc"], torch.zeros(N, 2))  # the centred first glimpse
        assert not reward.any() and not terminated.any() and not truncated.any()
        assert not info["_label"].any()


def test_vec_same_seed_gives_identical_tensors_and_another_seed_different_ones():
    def run(seed: int) -> list[torch.Tensor]:
        env = make_vec("hardattn/GlimpseCluttered60-v0", 5, action_type="box")
        env.action_space.seed(seed)
        obs, _ = env.reset(seed=seed)
        out = [obs["glimpse"], obs["loc"]]
        for _ in range(2 * env.cfg.n_glimpses + 1):  # through an autoreset
            obs, reward, terminated, *_ = env.step(env.action_space.sample())
            out += [obs["glimpse"], obs["loc"], reward, terminated]
        return out

    a, b, c = run(4), run(4), run(5)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_vec_returned_tensors_are_fresh():
    env, twin = (make_vec("hardattn/GlimpseMNIST-v0", 3) for _ in range(2))
    obs, _ = env.reset(seed=1)
    twin.reset(seed=1)
    for _ in range(env.cfg.n_glimpses + 1):
        for v in obs.values():
            v.fill_(7)
        obs, reward, terminated, *_ = env.step(vec_actions(env, 2, (0.2, 0.1)))
        twin_obs, *_ = twin.step(vec_actions(twin, 2, (0.2, 0.1)))
        assert vec_obs_equal(obs, twin_obs)
        reward.fill_(5.0), terminated.fill_(True)


def test_vec_invalid_actions_and_early_step_raise_naming_the_problem():
    env = make_vec("hardattn/GlimpseMNIST-v0", 4, action_type="multidiscrete")
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(vec_actions(env, 0))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=re.escape("(3, 3)")):
        env.step(torch.zeros(3, 3, dtype=torch.long))  # one row short
    bad = vec_actions(env, 0)
    bad[2, 2] = 10
    with pytest.raises(ValueError, match="10"):
        env.step(bad)
    box = make_vec("hardattn/GlimpseMNIST-v0", 2, action_type="box")
    box.reset(seed=0)
    nan = vec_actions(box, 0)
    nan[1, 0] = float("nan")
    with pytest.raises(ValueError, match="nan"):
        box.step(nan)


def test_given_canvases_are_what_the_vec_env_glimpses_and_scores():
    N = 6
    env = make_vec("hardattn/GlimpseCluttered60-v0", N, action_type="tuple")
    cfg = env.cfg
    gen = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (N, 1, 60, 60), generator=gen).float() / 255.0
    labels = torch.arange(N) % N_CLASSES
    obs, _ = env.reset(seed=0, options={"canvases": (images, labels)})
    # first_glimpse="random": the glimpse is read where obs["loc"] says.
    want = sensors.glimpse(images, obs["loc"], cfg.patch, cfg.scales, cfg.scale_factor,
                           levels=255)  # 8-bit pixels: read as exact levels
    assert torch.equal(obs["glimpse"], want)
    centre = make_vec("hardattn/GlimpseCluttered60-v0", N, first_glimpse="center")
    obs, _ = centre.reset(seed=0, options={"canvases": (images, labels)})
    assert torch.equal(obs["glimpse"], sensors.glimpse(images, torch.zeros(N, 2), cfg.patch,
                                                       cfg.scales, cfg.scale_factor, levels=255))
    loc = torch.tensor([[0.5, -0.25]]).expand(N, 2)
    for _ in range(cfg.n_glimpses):
        obs, reward, terminated, _, info = env.step((loc, labels))
        assert torch.equal(obs["glimpse"], sensors.glimpse(images, loc, cfg.patch, cfg.scales,
                                                           levels=255))
    assert terminated.all() and torch.equal(info["label"], labels)
    assert torch.equal(reward, torch.ones(N))


def test_given_canvases_off_the_8_bit_grid_are_read_as_they_are():
    N = 4
    env = make_vec("hardattn/GlimpseCluttered60-v0", N, first_glimpse="center")
    cfg = env.cfg
    gen = torch.Generator().manual_seed(5)
    images = torch.rand(N, 1, 60, 60, generator=gen)  # not multiples of 1/255
    labels = torch.arange(N)
    obs, _ = env.reset(seed=0, options={"canvases": (images, labels)})
    want = sensors.glimpse(images, torch.zeros(N, 2), cfg.patch, cfg.scales)  # float64 table
    assert torch.equal(obs["glimpse"], want)
    rounded = sensors.build_pyramid(images, cfg.patch, cfg.scales, levels=255)  # to the grid
    assert not torch.equal(want, sensors.read_pyramid(rounded, torch.zeros(N, 2)))
    loc = torch.tensor([[0.3, -0.6]]).expand(N, 2)
    obs, *_ = env.step((loc, labels))
    assert torch.equal(obs["glimpse"], sensors.glimpse(images, loc, cfg.patch, cfg.scales))
    for _ in range(cfg.n_glimpses):  # the step after the last autoresets from the generator
        obs, *_ = env.step((loc, labels))
    drawn = env._task.images
    assert not torch.equal(drawn, images)
    assert torch.equal(obs["glimpse"], sensors.glimpse(drawn, torch.zeros(N, 2), cfg.patch,
                                                       cfg.scales, levels=255))


def test_vec_and_single_envs_pay_a_constant_guess_at_the_class_frequency():
    # With a policy that always answers 3, the mean reward is the frequency of 3 among the
    # canvases' labels; both implementations must sample labels like the training split.
    env_id, guess = "hardattn/GlimpseMNIST-v0", 3
    train_labels = data.load_mnist("train")[1]
    p = float((train_labels == guess).float().mean())

    vec = make_vec(env_id, 256, first_glimpse="center", action_type="multidiscrete")
    vec.reset(seed=0)
    vec_rewards, vec_labels = [], []
    for _ in range(5):  # 5 episodes of 256 envs (plus autoreset steps between them)
        for _ in range(vec.cfg.n_glimpses):
            _, reward, _, _, info = vec.step(vec_actions(vec, guess))
        vec_rewards.append(reward)
        vec_labels.append(info["label"])
        vec.step(vec_actions(vec, guess))  # the autoreset step
    vec_rewards, vec_labels = torch.cat(vec_rewards).numpy(), torch.cat(vec_labels).numpy()
    assert np.array_equal(vec_rewards, (vec_labels == guess).astype(np.float32))

    single = make(env_id, first_glimpse="center", action_type="multidiscrete")
    single.reset(seed=0)
    single_rewards = []
    for _ in range(600):
        for _ in range(single.cfg.n_glimpses):
            _, reward, _, _, info = single.step(action_with(single, guess))
        assert reward == float(info["label"] == guess)
        single_rewards.append(reward)
        single.reset()
    single_rewards = np.array(single_rewards)

    for rewards in (vec_rewards, single_rewards):
        se = np.sqrt(p * (1 - p) / len(rewards))
        assert abs(rewards.mean() - p) < 4 * se, (rewards.mean(), p, se)
    se_diff = np.sqrt(p * (1 - p) * (1 / len(vec_rewards) + 1 / len(single_rewards)))
    assert abs(vec_rewards.mean() - single_rewards.mean()) < 4 * se_diff


def test_vec_render_returns_one_uint8_frame_per_env():
    env = make_vec("hardattn/GlimpseMNIST-v0", 3, render_mode="rgb_array")
    env.reset(seed=0)
    env.step(vec_actions(env, 0, (0.4, 0.4)))
    frames = env.render()
    assert len(frames) == 3
    assert all(f.dtype == np.uint8 and f.shape == (28, 28, 3) for f in frames)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("action_type", ACTION_TYPES)
def test_cuda_vec_env_keeps_tensors_on_the_gpu_and_matches_cpu(action_type):
    N, env_id = 8, "hardattn/GlimpseCluttered60-v0"
    gpu = make_vec(env_id, N, action_type=action_type, device="cuda", first_glimpse="center")
    cpu = make_vec(env_id, N, action_type=action_type, first_glimpse="center")
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, 1, 60, 60), generator=gen).float() / 255.0
    labels = torch.arange(N) % N_CLASSES
    g_obs, _ = gpu.reset(seed=0, options={"canvases": (images.cuda(), labels.cuda())})
    c_obs, _ = cpu.reset(seed=0, options={"canvases": (images, labels)})
    for t in range(gpu.cfg.n_glimpses + 1):
        assert all(v.device.type == "cuda" for v in g_obs.values())
        assert vec_obs_equal({k: v.cpu() for k, v in g_obs.items()}, c_obs)
        if t == gpu.cfg.n_glimpses:
            break
        actions = vec_actions(cpu, labels, (0.3 * t - 0.9, 0.1))
        g_obs, g_rew, g_term, *_ = gpu.step(actions)  # CPU actions are moved to the GPU
        c_obs, c_rew, c_term, *_ = cpu.step(actions)
        assert g_rew.device.type == "cuda" and g_term.device.type == "cuda"
        assert torch.equal(g_rew.cpu(), c_rew) and torch.equal(g_term.cpu(), c_term)
    assert torch.equal(c_rew, torch.ones(N))


# ----------------------------------------------------------------------------- SB3


def test_sb3_ppo_runs_a_few_hundred_steps_on_cluttered60_multidiscrete():
    from stable_baselines3 import PPO

    env = gym.make("hardattn/GlimpseCluttered60-v0", action_type="multidiscrete")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unconventional shape.*")
        model = PPO("MultiInputPolicy", env, n_steps=64, batch_size=64, n_epochs=2, seed=0,
                    device="cpu", verbose=0)
        model.learn(total_timesteps=256)
    assert model.num_timesteps == 256
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert env.action_space.contains(action)


# ---------------------------------------------------------------- reset options


def test_single_env_reset_options_are_checked(data_root):
    env = make("hardattn/GlimpseMNIST-v0", first_glimpse="random")
    image = np.zeros((28, 28), np.float32)
    image[10:18, 10:18] = 1.0
    obs, _ = env.reset(seed=0, options={"canvas": (image, 3), "first_loc": (0.5, -0.5)})
    assert np.allclose(obs["loc"], [0.5, -0.5]) and obs["glimpse"].max() <= 1.0
    bad = [({"canvases": (image, 3)}, "unknown reset option"),  # the vector env's spelling
           ({"canvas": (image * 255, 3)}, r"\[0, 1\]"),  # 8-bit values, not n / 255
           ({"canvas": (image, 42)}, "label 42"),
           ({"canvas": (np.zeros((60, 60), np.float32), 3)}, r"\(28, 28\)"),
           ({"canvas": (image, 3), "first_loc": (2.0, 0.0)}, r"\[-1, 1\]")]
    for options, match in bad:
        with pytest.raises(ValueError, match=match):
            env.reset(options=options)


def test_vec_env_given_canvases_are_checked(data_root):
    env = gym.make_vec("hardattn/GlimpseMNIST-v0", 2).unwrapped
    images = torch.zeros(2, 1, 28, 28)
    for canvases, match in [((images + 2, torch.tensor([1, 2])), r"\[0, 1\]"),
                            ((images, torch.tensor([1, 10])), "label 10"),
                            ((images * float("nan"), torch.tensor([1, 2])), r"\[0, 1\]")]:
        with pytest.raises(ValueError, match=match):
            env.reset(options={"canvases": canvases})
