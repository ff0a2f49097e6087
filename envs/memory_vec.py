"""Batched memory-read envs: N episodes as tensor operations on one device (``VectorEnv``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .memory_task import (
    AssociativeRecallConfig,
    CopyMemoryConfig,
    MemoryConfig,
    MemoryTask,
    action_space,
    decode_actions,
    observation_space,
    render_text,
)


class MemoryVecEnv(VectorEnv):
    """A memory-read task for N episodes at once, in torch, on ``device`` (shared vector code).

    Same task, spaces and semantics as the single env (see ``CopyMemoryEnv`` and
    ``AssociativeRecallEnv``), batched: observations are a dict of fresh torch tensors on
    ``device`` (``input`` and ``read`` ``(N,)`` for CopyMemory, ``(N, 2)`` for
    AssociativeRecall; ``address (N,)``, ``t (N,)``), rewards ``float32 (N,)``, terminations
    and truncations ``bool (N,)``. Actions may be torch tensors on any device or numpy arrays:
    for ``"tuple"`` a pair ``(address (N,), output (N,))``, for ``"multidiscrete"`` ``(N, 2)``
    integers. Addresses beyond a row's current step are clipped, as in the single env.

    Autoreset: ``AutoresetMode.NEXT_STEP``, as Gymnasium documents it: the ``step`` after a
    sub-environment terminated resets it (new sequence), ignores its action, and returns the
    reset observation, reward 0, ``terminated=False``, ``truncated=False`` for it. Every
    episode has the same length, so all rows terminate on the same step; calling ``reset()``
    instead is equivalent. ``truncated`` is always False (there is no time limit to hit).

    ``info`` holds, every step, ``target (N,)`` (this step's target symbol, blank on unscored
    steps; mask ``_target``, False on autoreset rows), ``accuracy float32 (N,)`` and
    ``is_success bool (N,)`` (masks ``_accuracy`` and ``_is_success``: the terminating rows);
    on steps where some row terminates also ``targets long (N, L)`` (mask ``_targets``).

    ``max_episode_steps`` (passed by ``gym.make_vec`` from the registration) must be None or at
    least the episode length; a smaller one would cut episodes before they are scored, so it
    raises ``ValueError`` saying which value to pass.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4,
                "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, cfg: MemoryConfig, num_envs: int = 1, render_mode: str | None = None,
                 device: str | torch.device = "cpu",
                 max_episode_steps: int | None = None) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r} must be a positive integer")
        self.cfg = cfg.resolved()
        L = self.cfg.episode_len
        if max_episode_steps is not None and max_episode_steps < L:
            raise ValueError(
                f"max_episode_steps={max_episode_steps!r} is shorter than the {L}-step episode "
                f"of {self.cfg}; pass max_episode_steps={L} (or None)")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r} is not one of "
                             f"{self.metadata['render_modes'] + [None]}")
        self.device = _resolve_device(device)
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.single_observation_space = observation_space(self.cfg)
        self.single_action_space = action_space(self.cfg)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._task = MemoryTask(self.cfg, num_envs, self.device)
        self._gen = torch.Generator(device=self.device)
        self._started = False
        # Host copy of the step counters: which rows need an autoreset is known without a
        # device sync (every row's counter advances deterministically).
        self._t_host = np.zeros(num_envs, dtype=np.int64)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if options:
            raise ValueError(f"unknown reset option(s) {sorted(options)}; this env takes none")
        self._gen.manual_seed(int(self.np_random.integers(2**63 - 1)))
        self._task.reset(self._gen)
        self._t_host[:] = 0
        self._started = True
        return self._task.observe(), {}

    def step(self, actions):
        if not self._started:
            raise RuntimeError("step() called before reset(); call env.reset() first")
        L = self.cfg.episode_len
        restart = self._t_host >= L  # rows that terminated on the previous step
        address, output = decode_actions(actions, self.cfg, self.num_envs, self.device)
        reward, terminated, target = self._task.step(address, output)
        accuracy = self._task.accuracy()
        # The whole target sequences are returned only on steps where some row terminates.
        ending = bool(((self._t_host + 1 >= L) & ~restart).any())
        targets = self._task.targets.clone() if ending else None
        if restart.all():
            self._task.reset(self._gen)
        elif restart.any():
            rows = torch.as_tensor(np.flatnonzero(restart), device=self.device)
            self._task.reset(self._gen, rows=rows)
        live = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        if restart.any():
            live = torch.as_tensor(~restart, device=self.device)
            reward, terminated = reward * live, terminated & live
            target = target * live
        self._t_host = np.where(restart, 0, self._t_host + 1)
        truncated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        info = {"target": target, "_target": live,
                "accuracy": accuracy, "_accuracy": terminated.clone(),
                "is_success": accuracy == 1.0, "_is_success": terminated.clone()}
        if targets is not None:
            info.update(targets=targets, _targets=terminated.clone())
        return self._task.observe(), reward, terminated, truncated, info

    def render(self) -> tuple[str, ...] | None:
        if self.render_mode != "ansi":
            return None
        if not self._started:
            raise RuntimeError("render() called before reset(); call env.reset() first")
        return tuple(render_text(self._task, i, int(self._t_host[i]))
                     for i in range(self.num_envs))


class CopyMemoryVecEnv(MemoryVecEnv):
    """``hardattn/CopyMemory-v0`` batched (the ``vector_entry_point``); see ``MemoryVecEnv``
    for the batched conventions and ``CopyMemoryEnv`` for the task."""

    def __init__(self, num_envs: int = 1, T: int = 100, payload: int = 10, alphabet: int = 8,
                 action_type: str = "tuple", render_mode: str | None = None,
                 device: str | torch.device = "cpu",
                 max_episode_steps: int | None = None) -> None:
        super().__init__(CopyMemoryConfig(T, payload, alphabet, action_type), num_envs,
                         render_mode, device, max_episode_steps)


class AssociativeRecallVecEnv(MemoryVecEnv):
    """``hardattn/AssociativeRecall-v0`` batched (the ``vector_entry_point``); see
    ``MemoryVecEnv`` for the batched conventions and ``AssociativeRecallEnv`` for the task."""

    def __init__(self, num_envs: int = 1, n_pairs: int = 8, n_keys: int = 26,
                 n_values: int = 10, action_type: str = "tuple",
                 render_mode: str | None = None, device: str | torch.device = "cpu",
                 max_episode_steps: int | None = None) -> None:
        super().__init__(AssociativeRecallConfig(n_pairs, n_keys, n_values, action_type),
                         num_envs, render_mode, device, max_episode_steps)


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device={device!r} is not a torch device: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but CUDA is not available; use device='cpu'")
    return dev
