"""Memory-read tasks: the single envs (the episode logic, batched in torch, is ``memory_task``).

Two tasks, one mechanism. An episode is a sequence of ``L`` inputs; the memory is the
sequence itself (cell ``i`` holds the input of step ``i``). At step ``t`` the agent sees the
input of step ``t`` and acts with ``(address, output)``: it reads one memory cell (whose
content it sees in the next observation) and emits one output symbol, which is scored on the
task's scored steps only.

- ``hardattn/CopyMemory-v0`` (``CopyMemoryEnv``): the copy task of Sparse Attentive
  Backtracking (Ke et al. 2018): ``payload`` symbols, ``T - 1`` blanks, a marker, ``payload``
  blanks; the last ``payload`` outputs must reproduce the symbols.
- ``hardattn/AssociativeRecall-v0`` (``AssociativeRecallEnv``): ``n_pairs`` key -> value
  pairs, then a query key; read the slot holding the key and emit its value.

``MemoryTask`` (``hardattn.envs.memory_task``) holds N episodes as tensors (inputs, targets,
step counters, the last read). The single envs here are that task with N=1 plus numpy
conversion; the vector envs (``hardattn.envs.memory_vec``) are that task with NEXT_STEP
autoreset. Neither re-implements the episode, so they cannot drift.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

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

# ----------------------------------------------------------------------------- single envs


class MemoryEnv(gym.Env):
    """One memory-read episode at a time, numpy in and out (the shared single-env code)."""

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, cfg: MemoryConfig, render_mode: str | None = None) -> None:
        self.cfg = cfg.resolved()
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r} is not one of "
                             f"{self.metadata['render_modes'] + [None]}")
        self.render_mode = render_mode
        self.observation_space = observation_space(self.cfg)
        self.action_space = action_space(self.cfg)
        self._task = MemoryTask(self.cfg, 1, "cpu")
        self._gen = torch.Generator()
        self._started = False
        self._done = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if options:
            raise ValueError(f"unknown reset option(s) {sorted(options)}; this env takes none")
        # All randomness flows from np_random: the torch generator is re-seeded from it.
        self._gen.manual_seed(int(self.np_random.integers(2**63 - 1)))
        self._task.reset(self._gen)
        self._started, self._done = True, False
        return self._obs(), {}

    def step(self, action):
        if not self._started:
            raise RuntimeError("step() called before reset(); call env.reset() first")
        if self._done:
            raise RuntimeError("step() called after the episode terminated; call env.reset()")
        address, output = decode_actions(action, self.cfg, 1, self._task.device)
        reward, terminated, target = self._task.step(address, output)
        self._done = bool(terminated[0])
        info: dict[str, Any] = {"target": int(target[0])}
        if self._done:
            accuracy = float(self._task.accuracy()[0])
            info.update(accuracy=accuracy, is_success=accuracy == 1.0,
                        targets=self._task.targets[0].numpy().copy())
        return self._obs(), float(reward[0]), self._done, False, info

    def _obs(self) -> dict[str, Any]:
        obs = self._task.observe()
        out = {}
        for key, value in obs.items():
            v = value[0]
            out[key] = np.int64(v) if v.dim() == 0 else v.numpy().copy()
        return out

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        if not self._started:
            raise RuntimeError("render() called before reset(); call env.reset() first")
        return render_text(self._task, 0, int(self._task.t[0]))


class CopyMemoryEnv(MemoryEnv):
    """Copy ``payload`` symbols across a delay of ``T`` steps by reading the right past step.

    The copy task of Sparse Attentive Backtracking (Ke et al. 2018; Arjovsky et al. 2016) as a
    hard-attention decision problem. The input sequence (``L = payload + T + payload`` steps)
    is ``payload`` symbols drawn uniformly from ``1..alphabet``, ``T - 1`` blanks (0), the
    marker (``alphabet + 1``), ``payload`` blanks; the outputs of the last ``payload`` steps must
    reproduce the symbols, in order. The memory is the past inputs: cell ``i`` holds the input
    of step ``i``. At step ``t`` the agent sees input ``t`` and chooses an address (the cell to
    read, ``0..t``) and an output symbol; the content of the cell read arrives in the next
    observation (so the symbol to emit at step ``t`` is read at step ``t - 1``).

    ## Observation space
    ``Dict``:
    - ``input``: ``Discrete(alphabet + 2)``, the input of the current step (blank once the
      episode has ended).
    - ``read``: ``Discrete(alphabet + 2)``, the content of the cell read by the previous
      step's action (blank after ``reset``).
    - ``address``: ``Discrete(L)``, the cell that was actually read (after clipping; 0 after
      ``reset``).
    - ``t``: ``Discrete(L + 1)``, steps taken so far.

    ## Action space (``action_type``)
    - ``"tuple"`` (native): ``Tuple(Discrete(L), Discrete(alphabet + 2))``: (address, output).
    - ``"multidiscrete"``: ``MultiDiscrete([L, alphabet + 2])``, the same pair as an array, so
      Stable-Baselines3 (PPO, A2C) can train directly.
    Addresses beyond the current step ``t`` are **clipped** to ``t`` (the future is not in
    memory yet); they are not rejected, so every action of the action space is valid at every
    step. Outputs may be any input symbol (blank, symbols, marker). Values outside the action
    space (negative, ``>= L`` or ``>= alphabet + 2``, non-integers, wrong shapes or dtypes)
    raise ``ValueError`` naming the value.

    ## Rewards
    1 for each of the last ``payload`` steps whose output equals the payload symbol it must
    recall; 0 on every other step, whatever the output. The maximal return is ``payload``.

    ## Info
    Every step: ``target`` (the symbol this step's output should have been: the payload symbol
    on the last ``payload`` steps, blank before; for a per-step cross-entropy). On the last
    step also ``accuracy`` (fraction of the last ``payload`` outputs that were right),
    ``is_success`` (all right) and ``targets`` (``int64 (L,)``, the whole target sequence).

    ## Episode end
    ``terminated`` after exactly ``L`` steps: the task ends naturally. The env itself never
    truncates. The id is registered with ``max_episode_steps = L`` of the default arguments
    (120), so through ``gym.make`` the ``TimeLimit`` wrapper also sets ``truncated=True`` on
    that same last step; ``terminated`` is what matters there (do not bootstrap). When you
    change ``T`` or ``payload``, pass ``max_episode_steps=payload + T + payload`` to
    ``gym.make`` as well: a smaller limit would truncate the episode before the recall phase
    (the wrapper is outside the env, which cannot see it; the vector env, which receives the
    limit as an argument, raises instead).

    ## Arguments
    ``gym.make("hardattn/CopyMemory-v0", T=100, payload=10, alphabet=8, action_type="tuple",
    render_mode=None)``; ``render_mode="ansi"`` renders the sequence, outputs and targets as
    text. ``gym.make_vec(id, num_envs=N, device=...)`` gives ``CopyMemoryVecEnv`` (torch,
    batched, same episode code).

    ## Version history
    - v0: first release.
    """

    def __init__(self, T: int = 100, payload: int = 10, alphabet: int = 8,
                 action_type: str = "tuple", render_mode: str | None = None) -> None:
        super().__init__(CopyMemoryConfig(T, payload, alphabet, action_type), render_mode)


class AssociativeRecallEnv(MemoryEnv):
    """Recall the value stored under a query key by reading the right slot.

    The associative recall task (Graves et al. 2014; Ba et al. 2016) as a hard-attention
    decision problem. An episode has ``L = n_pairs + 2`` steps: steps ``0..n_pairs-1`` show
    the pairs ``(key_i, value_i)`` (distinct keys from ``1..n_keys``, values from
    ``1..n_values``), step ``n_pairs`` shows the query ``(key_q, blank)`` (one of the keys,
    uniformly), step ``n_pairs + 1`` shows ``(blank, blank)`` and its output is the answer.
    The memory is the ``n_pairs`` slots, slot ``i`` holding pair ``i`` (written at step
    ``i``). Each step the agent reads one slot, whose ``(key, value)`` arrives in the next
    observation, and emits a value; the oracle reads the slot of the query key at step
    ``n_pairs`` and emits the value it sees at step ``n_pairs + 1``.

    ## Observation space
    ``Dict``:
    - ``input``: ``MultiDiscrete([n_keys + 1, n_values + 1])``, (key, value) of the current
      step; 0 is blank (query step: value blank; answer step and after the end: both blank).
    - ``read``: ``MultiDiscrete([n_keys + 1, n_values + 1])``, the (key, value) of the slot read
      by the previous step's action (blank after ``reset``).
    - ``address``: ``Discrete(n_pairs)``, the slot actually read (after clipping; 0 after
      ``reset``).
    - ``t``: ``Discrete(n_pairs + 3)``, steps taken so far.

    ## Action space (``action_type``)
    - ``"tuple"`` (native): ``Tuple(Discrete(n_pairs), Discrete(n_values + 1))``: (slot, value).
    - ``"multidiscrete"``: ``MultiDiscrete([n_pairs, n_values + 1])`` (Stable-Baselines3).
    Slots not written yet (beyond step ``t``) are **clipped** to slot ``t``; values outside the
    action space raise ``ValueError`` naming the value.

    ## Rewards
    1 on the last step if the output is the query key's value, else 0 (every earlier output is
    ignored). The maximal return is 1.

    ## Info
    Every step: ``target`` (the query's value on the last step, blank before). On the last step
    also ``accuracy`` (1.0 or 0.0), ``is_success`` and ``targets`` (``int64 (L,)``).

    ## Episode end
    ``terminated`` after exactly ``L`` steps; never truncated by the env itself. Registered
    with ``max_episode_steps = L`` of the default arguments (10), so through ``gym.make`` the
    last step is also ``truncated`` by the ``TimeLimit`` wrapper; pass
    ``max_episode_steps=n_pairs + 2`` to ``gym.make`` when you change ``n_pairs``.

    ## Arguments
    ``gym.make("hardattn/AssociativeRecall-v0", n_pairs=8, n_keys=26, n_values=10,
    action_type="tuple", render_mode=None)`` (``render_mode="ansi"`` renders text);
    ``gym.make_vec(id, num_envs=N, device=...)`` gives ``AssociativeRecallVecEnv``.

    ## Version history
    - v0: first release.
    """

    def __init__(self, n_pairs: int = 8, n_keys: int = 26, n_values: int = 10,
                 action_type: str = "tuple", render_mode: str | None = None) -> None:
        super().__init__(AssociativeRecallConfig(n_pairs, n_keys, n_values, action_type),
                         render_mode)
