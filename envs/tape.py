"""The algorithmic tape tasks of gym 0.x (``gym/envs/algorithmic``), ported to Gymnasium.

A read head moves over an input tape (a 2-row grid for ReversedAddition) and sees one symbol
per step; each step the agent moves the head, and may write one symbol to an output tape that
must come out equal to the task's target. A fresh, clean reimplementation of the old semantics
(rewards, in-task time limit, growing-length curriculum), documented in
``AlgorithmicTapeEnv``; differences from gym 0.x are listed there.

| id | target | base | time limit |
| --- | --- | --- | --- |
| ``hardattn/TapeCopy-v0`` | the input | 5 | ``w + 2 len(target) + 4`` |
| ``hardattn/TapeDuplicatedInput-v0`` | every 2nd symbol of an input of pairs | 5 | same |
| ``hardattn/TapeReverse-v0`` | the input reversed | 2 | same |
| ``hardattn/TapeRepeatCopy-v0`` | input, reversed input, input | 5 | same |
| ``hardattn/TapeReversedAddition-v0`` | sum of the 2 rows, lowest digit first | 3 | ``2 w + 4`` |

The base class is here; the five tasks are in ``envs/tape_tasks.py``. These envs are single
envs only: ``gym.make_vec`` gives Gymnasium's ``SyncVectorEnv`` (no ``vector_entry_point``),
each sub-env with its own curriculum.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

ACTION_TYPES = ("tuple", "multidiscrete")

_COMMON_SPEC = """
    ## Observation space
    ``Discrete(base + 1)``: the symbol under the read head; ``base`` means blank (the head is
    off the input, left or right of it, or above or below the grid).

    ## Action space (``action_type``)
    - ``"tuple"`` (native, as in gym): ``Tuple(Discrete(n_moves), Discrete(2),
      Discrete(base))``: (move, write?, symbol). Moves: {moves}. ``write=1`` writes ``symbol``
      at the next position of the output tape; with ``write=0`` the symbol is ignored.
    - ``"multidiscrete"``: ``MultiDiscrete([n_moves, 2, base])``, the same triple as an array,
      so Stable-Baselines3 (PPO, A2C) can train directly.
    Anything outside the action space (moves, flags or symbols out of range, non-integers,
    booleans, wrong structure) raises ``ValueError`` naming the value. The write happens
    before the move.

    ## Rewards
    +1 for each correct write; -0.5 for a wrong write, which ends the episode
    (``terminated``); 0 for a step without a write. A step past the in-task time limit gets
    -1 *instead of* its other reward (as in gym). The maximal return is ``len(target)``.

    ## Episode end
    - ``terminated``: the whole target was written (the last write was correct), or a write
      was wrong.
    - ``truncated``: the in-task time limit, {time_limit} steps (w = input width), was
      exceeded: gym's "timeout", the step numbered ``time_limit + 1`` is truncated with reward
      -1. The limit is in the task (it depends on the input) because the observation does not
      show the time, hence truncation rather than termination. If that same step also wrote
      the last symbol or a wrong one, both flags are set (reward -1, as gym did).
    - The id is registered with ``max_episode_steps=200`` (as in gym), so ``gym.make`` wraps
      a ``TimeLimit`` that truncates at step 200 with the step's own reward; it only matters
      for in-task limits above 200 (the longest inputs of RepeatCopy).
    ``info["is_success"]`` (whole target written correctly, within the limit) is given on the
    last step; ``reset`` gives ``info["min_length"]`` and ``info["input_length"]``.

    ## Curriculum (as gym's ``AlgorithmicEnv``)
    Input lengths are ``min_length + {{0, 1, 2}}`` (uniform). Each ``reset`` after the first
    records the previous episode's shortfall (its return minus ``len(target)``; an episode
    left unfinished counts with its return so far) and keeps the last ``last`` of them; when
    ``last`` episodes are recorded and all have a shortfall ``>= {shortfall}`` (i.e. all were
    solved: any failure falls short by at least 1.5) and ``min_length < max_min_length``,
    ``min_length`` grows by 1 and the record is cleared. ``min_length`` starts at
    ``starting_min_length``. Unlike gym, where ``min_length`` was a class attribute shared by
    every instance, each env instance has its own curriculum (it is pickled with the env and
    not reset by ``reset(seed=...)``).

    ## Arguments
    ``gym.make("{id}", {args}starting_min_length={start}, last={last}, max_min_length=30,
    action_type="tuple", render_mode=None)``. ``render_mode="ansi"`` returns the tapes as
    text. ``gym.make_vec`` gives Gymnasium's ``SyncVectorEnv`` of these single envs (there is
    no ``vector_entry_point``), each with its own curriculum.

    ## Version history
    - v0: first release (port of gym 0.x ``{gym_name}-v0``).
    """


class AlgorithmicTapeEnv(gym.Env):
    """Base of the tape tasks: a read head over an input, an output tape, a curriculum.

    Subclasses set ``MOVES`` (tape: left, right; grid: left, right, up, down), ``ROWS``
    (None for a 1-D tape), ``PROMOTION_SHORTFALL``, and define ``_generate_input`` and
    ``_target``. Every random draw comes from ``self.np_random``.

    Differences from gym 0.x, all deliberate: the curriculum is per instance (gym's was a
    class attribute); the in-task timeout is reported as ``truncated`` (gym had one ``done``);
    stepping before ``reset`` or after the episode ended raises ``RuntimeError`` (gym warned
    and went on); the ``"multidiscrete"`` action type is new; rendering is ``"ansi"`` only.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    MOVES: ClassVar[tuple[str, ...]] = ("left", "right")
    ROWS: ClassVar[int | None] = None
    PROMOTION_SHORTFALL: ClassVar[float] = -1.0

    def __init__(self, base: int, chars: bool, starting_min_length: int = 2, last: int = 10,
                 max_min_length: int = 30, action_type: str = "tuple",
                 render_mode: str | None = None) -> None:
        for name, value in (("base", base), ("starting_min_length", starting_min_length),
                            ("last", last), ("max_min_length", max_min_length)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if starting_min_length > max_min_length:
            raise ValueError(f"starting_min_length={starting_min_length} exceeds "
                             f"max_min_length={max_min_length}")
        if action_type not in ACTION_TYPES:
            raise ValueError(f"action_type={action_type!r} is not one of {ACTION_TYPES}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r} is not one of "
                             f"{self.metadata['render_modes'] + [None]}")
        self.base = int(base)
        self.chars = chars
        self.last = int(last)
        self.max_min_length = int(max_min_length)
        self.min_length = int(starting_min_length)
        self.action_type = action_type
        self.render_mode = render_mode
        self.observation_space = spaces.Discrete(self.base + 1)
        n_moves = len(self.MOVES)
        if action_type == "tuple":
            self.action_space = spaces.Tuple(
                (spaces.Discrete(n_moves), spaces.Discrete(2), spaces.Discrete(self.base)))
        else:
            self.action_space = spaces.MultiDiscrete([n_moves, 2, self.base])
        self.reward_shortfalls: list[float] = []
        self.episode_reward: float | None = None  # None until the first reset
        self.input_data = np.zeros((0,) if self.ROWS is None else (0, self.ROWS), np.int64)
        self.target = np.zeros(0, np.int64)
        self.outputs: list[int] = []
        self.head: int | tuple[int, int] = 0
        self.write_pos = 0
        self.time = 0
        self.last_action: tuple[int, int, int] | None = None
        self.last_reward = 0.0
        self._started = False
        self._done = False

    # --- the task (subclasses)

    def _generate_input(self, length: int) -> np.ndarray:
        """``int64 (length,)`` for a tape, ``(length, rows)`` for a grid."""
        shape = (length,) if self.ROWS is None else (length, self.ROWS)
        return self.np_random.integers(self.base, size=shape, dtype=np.int64)

    def _target(self, input_data: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @property
    def input_width(self) -> int:
        return int(self.input_data.shape[0])

    @property
    def time_limit(self) -> int:
        """Steps allowed before the timeout (gym's formula, fixed per episode)."""
        return self.input_width + 2 * len(self.target) + 4

    # --- the Gymnasium API

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if options:
            raise ValueError(f"unknown reset option(s) {sorted(options)}; this env takes none")
        self._check_levelup()
        length = self.min_length + int(self.np_random.integers(3))
        self.input_data = self._generate_input(length)
        self.target = self._target(self.input_data)
        self.outputs = []
        self.head = 0 if self.ROWS is None else (0, 0)
        self.write_pos = 0
        self.time = 0
        self.episode_reward = 0.0
        self.last_action, self.last_reward = None, 0.0
        self._started, self._done = True, False
        return self._obs(), {"min_length": self.min_length, "input_length": self.input_width}

    def step(self, action):
        if not self._started:
            raise RuntimeError("step() called before reset(); call env.reset() first")
        if self._done:
            raise RuntimeError("step() called after the episode ended; call env.reset()")
        move, write, symbol = self._decode(action)
        self.time += 1
        reward, terminated = 0.0, False
        if write:
            correct = symbol == int(self.target[self.write_pos])
            self.outputs.append(symbol)
            reward = 1.0 if correct else -0.5
            terminated = not correct  # a wrong write ends the episode at once
            self.write_pos += 1
            if self.write_pos >= len(self.target):
                terminated = True
        self._move(move)
        truncated = self.time > self.time_limit
        if truncated:
            reward = -1.0
        self.episode_reward += reward
        self.last_action, self.last_reward = (move, write, symbol), reward
        self._done = terminated or truncated
        info: dict[str, Any] = {}
        if self._done:
            info["is_success"] = self.episode_reward == float(len(self.target))
        return self._obs(), reward, terminated, truncated, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        if not self._started:
            raise RuntimeError("render() called before reset(); call env.reset() first")
        return self._render_text()

    # --- internals

    def _check_levelup(self) -> None:
        """Record the previous episode (if any) and grow ``min_length`` when due."""
        if self.episode_reward is None:  # the first reset: nothing played yet
            return
        self.reward_shortfalls.append(self.episode_reward - len(self.target))
        self.reward_shortfalls = self.reward_shortfalls[-self.last:]
        if (len(self.reward_shortfalls) == self.last
                and min(self.reward_shortfalls) >= self.PROMOTION_SHORTFALL
                and self.min_length < self.max_min_length):
            self.min_length += 1
            self.reward_shortfalls = []

    def _decode(self, action) -> tuple[int, int, int]:
        if self.action_type == "tuple":
            if not isinstance(action, (tuple, list)) or len(action) != 3:
                raise ValueError(f"a 'tuple' action is (move, write, symbol), got "
                                 f"{action!r:.120}")
            parts = list(action)
        else:
            arr = _asarray(action, "a 'multidiscrete' action")
            if arr.dtype.kind not in "iuf":  # bool, complex, object, str, timedelta, ...
                raise ValueError(f"a 'multidiscrete' action must be integers, got "
                                 f"{action!r:.120} (dtype {arr.dtype})")
            if arr.shape != (3,):
                raise ValueError(f"a 'multidiscrete' action (move, write, symbol) must have "
                                 f"shape (3,), got {arr.shape}")
            parts = list(arr)
        out = []
        for value, name, high in zip(parts, ("move", "write", "symbol"),
                                     (len(self.MOVES), 2, self.base)):
            arr = _asarray(value, name)
            if (arr.shape != () or arr.dtype.kind not in "iuf"
                    or (arr.dtype.kind == "f" and arr != np.round(arr))):
                shown = arr.item() if arr.shape == () and arr.dtype != object else value
                raise ValueError(f"{name} must be an integer, got {shown!r:.80}")
            v = arr.item()
            if not 0 <= v < high:
                raise ValueError(f"{name} must be in [0, {high - 1}], got {v!r}")
            out.append(int(v))
        return out[0], out[1], out[2]

    def _move(self, move: int) -> None:
        named = self.MOVES[move]
        if self.ROWS is None:
            self.head += 1 if named == "right" else -1
            return
        x, y = self.head
        dx, dy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[named]
        self.head = (x + dx, y + dy)

    def _symbol_at(self, pos) -> int:
        if self.ROWS is None:
            return int(self.input_data[pos]) if 0 <= pos < self.input_width else self.base
        x, y = pos
        if 0 <= x < self.input_width and 0 <= y < self.ROWS:
            return int(self.input_data[x, y])
        return self.base

    def _obs(self) -> np.int64:
        return np.int64(self._symbol_at(self.head))

    def _char(self, symbol: int) -> str:
        if symbol == self.base:
            return " "
        return chr(ord("A") + symbol) if self.chars else str(symbol)

    def _render_text(self) -> str:
        hx, hy = (self.head, 0) if self.ROWS is None else self.head
        lo, hi = min(0, hx) - 1, max(self.input_width, hx + 1) + 1
        header = (f"{type(self).__name__}: step {self.time} of time limit {self.time_limit}, "
                  f"min_length {self.min_length}, return {self.episode_reward:.1f}")
        lines = [header]
        for y in (range(self.ROWS) if self.ROWS else [None]):
            cells = []
            for x in range(lo, hi):
                c = self._char(self._symbol_at(x if y is None else (x, y)))
                at_head = x == hx and (y is None or y == hy)
                cells.append(f"[{c}]" if at_head else f" {c} ")
            lines.append("input  : " + "".join(cells))
        lines.append("target : " + " ".join(self._char(int(s)) for s in self.target))
        lines.append("output : " + " ".join(self._char(s) for s in self.outputs))
        if self.last_action is not None:
            move, write, symbol = self.last_action
            lines.append(f"action : move {self.MOVES[move]}, "
                         f"{'write ' + self._char(symbol) if write else 'no write'}; "
                         f"reward {self.last_reward:.1f}")
        return "\n".join(lines) + "\n"


def _asarray(value, what: str) -> np.ndarray:
    try:
        return np.asarray(value)
    except (ValueError, TypeError, RuntimeError) as e:  # ragged nesting, ...
        raise ValueError(f"{what} must be an integer, got {value!r:.80} ({e})") from None
