"""Memory-read tasks: the episode logic (batched in torch, written once) and the single envs.

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

``MemoryTask`` holds N episodes as tensors (inputs, targets, step counters, the last read). The
single envs here are that task with N=1 plus numpy conversion; the vector envs
(``hardattn.envs.memory_vec``) are that task with NEXT_STEP autoreset. Neither re-implements
the episode, so they cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

ACTION_TYPES = ("tuple", "multidiscrete")
BLANK = 0


def _positive(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name}={value!r} must be {kind}")


def _check_action_type(action_type: Any) -> None:
    if action_type not in ACTION_TYPES:
        raise ValueError(f"action_type={action_type!r} is not one of {ACTION_TYPES}")


# ----------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class CopyMemoryConfig:
    """The copy task (the env constructors' kwargs)."""

    T: int = 100
    """Delay: ``T - 1`` blanks and the marker separate the payload from its recall."""
    payload: int = 10
    """Symbols to copy (and steps scored at the end)."""
    alphabet: int = 8
    """Payload symbols are drawn uniformly from ``1..alphabet``; the marker is ``alphabet + 1``."""
    action_type: str = "tuple"
    """"tuple" (``Tuple(Discrete(L), Discrete(alphabet + 2))``) or "multidiscrete"."""

    name: ClassVar[str] = "CopyMemory"

    def resolved(self) -> CopyMemoryConfig:
        """Validate every field.

        Raises:
            ValueError: naming the field, its value and what is accepted.
        """
        for field_name in ("T", "payload", "alphabet"):
            _positive(field_name, getattr(self, field_name))
        _check_action_type(self.action_type)
        return self

    @property
    def episode_len(self) -> int:
        """``L = payload + T + payload`` steps."""
        return 2 * self.payload + self.T

    @property
    def n_cells(self) -> int:
        """Addressable memory cells: every step's input."""
        return self.episode_len

    @property
    def marker(self) -> int:
        return self.alphabet + 1

    @property
    def input_nvec(self) -> tuple[int, ...]:
        """Vocabulary size of each input channel (one: blank, symbols, marker)."""
        return (self.alphabet + 2,)

    @property
    def n_out(self) -> int:
        """Output vocabulary: the input vocabulary (blank, symbols, marker)."""
        return self.alphabet + 2

    def scored_steps(self, device: torch.device) -> torch.Tensor:
        """``bool (L,)``: the steps whose output is rewarded (the last ``payload``)."""
        scored = torch.zeros(self.episode_len, dtype=torch.bool, device=device)
        scored[-self.payload:] = True
        return scored

    def sample(self, n: int, generator: torch.Generator,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` fresh episodes: inputs ``long (n, L, 1)`` and targets ``long (n, L)``."""
        P, L = self.payload, self.episode_len
        symbols = torch.randint(1, self.alphabet + 1, (n, P), generator=generator,
                                device=device)
        inputs = torch.zeros(n, L, 1, dtype=torch.long, device=device)
        inputs[:, :P, 0] = symbols
        inputs[:, P + self.T - 1, 0] = self.marker
        targets = torch.zeros(n, L, dtype=torch.long, device=device)
        targets[:, L - P:] = symbols
        return inputs, targets


@dataclass(frozen=True)
class AssociativeRecallConfig:
    """The associative recall task (the env constructors' kwargs)."""

    n_pairs: int = 8
    """N, the key -> value pairs shown (and memory slots)."""
    n_keys: int = 26
    """Key alphabet: keys are distinct, drawn from ``1..n_keys`` (so ``n_pairs <= n_keys``)."""
    n_values: int = 10
    """Value alphabet: values are drawn uniformly (with repeats) from ``1..n_values``."""
    action_type: str = "tuple"
    """"tuple" (``Tuple(Discrete(n_pairs), Discrete(n_values + 1))``) or "multidiscrete"."""

    name: ClassVar[str] = "AssociativeRecall"

    def resolved(self) -> AssociativeRecallConfig:
        """Validate every field.

        Raises:
            ValueError: naming the field, its value and what is accepted.
        """
        for field_name in ("n_pairs", "n_keys", "n_values"):
            _positive(field_name, getattr(self, field_name))
        if self.n_pairs > self.n_keys:
            raise ValueError(f"n_pairs={self.n_pairs} distinct keys cannot be drawn from "
                             f"n_keys={self.n_keys}; use n_pairs <= n_keys")
        _check_action_type(self.action_type)
        return self

    @property
    def episode_len(self) -> int:
        """``L = n_pairs + 2``: the pairs, the query, the answer."""
        return self.n_pairs + 2

    @property
    def n_cells(self) -> int:
        """Addressable memory cells: the ``n_pairs`` slots."""
        return self.n_pairs

    @property
    def input_nvec(self) -> tuple[int, ...]:
        """Vocabulary sizes of the two input channels (key, value); 0 is blank in both."""
        return (self.n_keys + 1, self.n_values + 1)

    @property
    def n_out(self) -> int:
        """Output vocabulary: blank and the values."""
        return self.n_values + 1

    def scored_steps(self, device: torch.device) -> torch.Tensor:
        """``bool (L,)``: only the last (answer) step is rewarded."""
        scored = torch.zeros(self.episode_len, dtype=torch.bool, device=device)
        scored[-1] = True
        return scored

    def sample(self, n: int, generator: torch.Generator,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` fresh episodes: inputs ``long (n, L, 2)`` and targets ``long (n, L)``."""
        N, L = self.n_pairs, self.episode_len
        # Distinct keys per episode: the first N of a uniform random permutation.
        keys = torch.rand(n, self.n_keys, generator=generator, device=device).argsort(dim=1)
        keys = keys[:, :N] + 1
        values = torch.randint(1, self.n_values + 1, (n, N), generator=generator, device=device)
        query = torch.randint(0, N, (n,), generator=generator, device=device)
        rows = torch.arange(n, device=device)
        inputs = torch.zeros(n, L, 2, dtype=torch.long, device=device)
        inputs[:, :N, 0], inputs[:, :N, 1] = keys, values
        inputs[:, N, 0] = keys[rows, query]
        targets = torch.zeros(n, L, dtype=torch.long, device=device)
        targets[:, L - 1] = values[rows, query]
        return inputs, targets


MemoryConfig = CopyMemoryConfig | AssociativeRecallConfig


# ----------------------------------------------------------------------------- spaces


def _symbol_space(nvec: tuple[int, ...]) -> spaces.Space:
    return spaces.Discrete(nvec[0]) if len(nvec) == 1 else spaces.MultiDiscrete(list(nvec))


def observation_space(cfg: MemoryConfig) -> spaces.Dict:
    """The single-env observation space of a resolved config."""
    return spaces.Dict({
        "input": _symbol_space(cfg.input_nvec),
        "read": _symbol_space(cfg.input_nvec),
        "address": spaces.Discrete(cfg.n_cells),
        "t": spaces.Discrete(cfg.episode_len + 1),
    })


def action_space(cfg: MemoryConfig) -> spaces.Space:
    """The single-env action space of a resolved config."""
    if cfg.action_type == "tuple":
        return spaces.Tuple((spaces.Discrete(cfg.n_cells), spaces.Discrete(cfg.n_out)))
    return spaces.MultiDiscrete([cfg.n_cells, cfg.n_out])


def _to_tensor(x: Any, what: str, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.to(device)
        if t.dtype in (torch.uint16, torch.uint32, torch.uint64):  # no comparisons in torch
            t = t.to(torch.float64)
    else:
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError, RuntimeError) as e:  # ragged nesting, ...
            raise ValueError(f"{what} must be an integer, got {x!r:.80} ({e})") from None
        if arr.dtype.kind not in "biufc":  # object, str, datetime, timedelta, ...
            raise ValueError(f"{what} must be an integer, got {x!r:.80} (dtype {arr.dtype})")
        if arr.dtype.kind == "u" and arr.dtype.itemsize == 8:  # torch cannot compare uint64
            arr = arr.astype(np.float64)
        t = torch.as_tensor(arr.astype(arr.dtype.newbyteorder("="), copy=False), device=device)
    if t.dtype == torch.bool or t.dtype.is_complex:
        raise ValueError(f"{what} must be an integer, got {x!r:.80} (dtype {t.dtype})")
    return t


def _show(x: torch.Tensor, single: bool) -> str:
    return f"{x.reshape(-1)[0].item()!r}" if single else f"{x.tolist()!r:.120}"


def _integers(x: torch.Tensor, what: str, high: int, single: bool) -> torch.Tensor:
    if x.dtype.is_floating_point and not bool(torch.all(x == torch.round(x))):
        raise ValueError(f"{what} must be an integer, got {_show(x, single)}")
    if bool(((x < 0) | (x >= high)).any()):
        raise ValueError(f"{what} must be in [0, {high - 1}], got {_show(x, single)}")
    return x.long()


def decode_actions(action: Any, cfg: MemoryConfig, n: int,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched or single actions of either action type to ``(address, output)``, ``long (n,)``.

    Addresses beyond the current step are *not* rejected here (the task clips them); anything
    outside the action space raises.

    Raises:
        ValueError: wrong structure, shape or dtype, non-integers, address or output out of
            range; the message names the value and the accepted range.
    """
    single = n == 1 and not isinstance(action, torch.Tensor) and not (
        isinstance(action, (tuple, list)) and any(isinstance(a, torch.Tensor) for a in action))
    if cfg.action_type == "tuple":
        if not isinstance(action, (tuple, list)) or len(action) != 2:
            raise ValueError(f"a 'tuple' action is (address, output), got {action!r:.120}")
        parts = []
        for x, what in zip(action, ("address", "output")):
            t = _to_tensor(x, what, device)
            if single and t.dim() == 0:
                t = t.reshape(1)
            if tuple(t.shape) != (n,):
                want = "a scalar" if single else f"shape ({n},)"
                raise ValueError(f"{what} must be {want}, got shape {tuple(t.shape)}")
            parts.append(t)
        address, output = parts
    else:
        a = _to_tensor(action, "action", device)
        if single and tuple(a.shape) == (2,):
            a = a[None]
        if tuple(a.shape) != (n, 2):
            want = (2,) if single else (n, 2)
            raise ValueError(f"a 'multidiscrete' action (address, output) must have shape "
                             f"{want}, got {tuple(a.shape)}")
        address, output = a[:, 0], a[:, 1]
    address = _integers(address, "address", cfg.n_cells, single)
    output = _integers(output, "output", cfg.n_out, single)
    return address, output


# ----------------------------------------------------------------------------- the task


class MemoryTask:
    """N memory-read episodes as tensors on one device (the shared implementation).

    Args:
        cfg: a resolved ``CopyMemoryConfig`` or ``AssociativeRecallConfig``.
        num_envs: N.
        device: where every tensor lives.
    """

    def __init__(self, cfg: MemoryConfig, num_envs: int, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.n = num_envs
        self.device = torch.device(device)
        N, L, C = num_envs, cfg.episode_len, len(cfg.input_nvec)
        self.inputs = torch.zeros(N, L, C, dtype=torch.long, device=self.device)
        self.targets = torch.zeros(N, L, dtype=torch.long, device=self.device)
        self.outputs = torch.zeros(N, L, dtype=torch.long, device=self.device)
        self.scored = cfg.scored_steps(self.device)  # (L,)
        self.n_scored = int(self.scored.sum())
        self.t = torch.zeros(N, dtype=torch.long, device=self.device)
        self.read = torch.zeros(N, C, dtype=torch.long, device=self.device)
        self.address = torch.zeros(N, dtype=torch.long, device=self.device)
        self.correct = torch.zeros(N, dtype=torch.long, device=self.device)
        self._rows = torch.arange(N, device=self.device)

    def reset(self, generator: torch.Generator, rows: torch.Tensor | None = None) -> None:
        """Start new episodes in ``rows`` (all when None)."""
        n = self.n if rows is None else int(rows.numel())
        inputs, targets = self.cfg.sample(n, generator, self.device)
        if rows is None:
            self.inputs, self.targets = inputs, targets
            for buf in (self.outputs, self.t, self.read, self.address, self.correct):
                buf.zero_()
        else:
            self.inputs[rows], self.targets[rows] = inputs, targets
            for buf in (self.outputs, self.t, self.read, self.address, self.correct):
                buf[rows] = 0

    def observe(self) -> dict[str, torch.Tensor]:
        """Fresh observation tensors for all rows (``input`` is blank once the episode ended)."""
        L = self.cfg.episode_len
        current = self.inputs[self._rows, self.t.clamp(max=L - 1)]  # (N, C), a copy
        current = current * (self.t < L)[:, None]
        read = self.read.clone()
        if current.shape[1] == 1:
            current, read = current[:, 0], read[:, 0]
        return {"input": current, "read": read, "address": self.address.clone(),
                "t": self.t.clone()}

    def step(self, address: torch.Tensor,
             output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Read cell ``min(address, t)`` of every row and score ``output`` on scored steps.

        Returns:
            ``reward float32 (N,)`` (1 for a correct output on a scored step, else 0),
            ``terminated bool (N,)`` and ``target long (N,)`` (this step's target; blank on
            steps that are not scored).
        """
        L = self.cfg.episode_len
        t = self.t.clamp(max=L - 1)  # rows past the end are being autoreset: any index will do
        address = torch.minimum(address, t.clamp(max=self.cfg.n_cells - 1))
        target = self.targets[self._rows, t]
        hit = self.scored[t] & (output == target)
        self.correct = self.correct + hit.long()
        self.outputs[self._rows, t] = output
        self.read = self.inputs[self._rows, address]
        self.address = address
        self.t = self.t + 1
        return hit.to(torch.float32), self.t >= L, target

    def accuracy(self) -> torch.Tensor:
        """``float32 (N,)``: the fraction of scored steps answered correctly so far."""
        return self.correct.to(torch.float32) / self.n_scored


def render_text(task: MemoryTask, row: int, steps: int) -> str:
    """A text picture of ``row``: inputs shown so far, outputs emitted, targets, the last read.

    ``steps`` is how many steps the row has taken (its outputs shown).
    """
    cfg = task.cfg
    inputs = task.inputs[row].cpu().numpy()  # (L, C)
    shown = min(steps + 1, cfg.episode_len)

    def cells(values) -> str:
        return " ".join("." if int(v) == BLANK else str(int(v)) for v in values)

    header = (f"{cfg.name} step {steps}/{cfg.episode_len}  "
              f"correct {int(task.correct[row])}/{task.n_scored}")
    lines = [header]
    for c in range(inputs.shape[1]):
        label = "input" if inputs.shape[1] == 1 else ("key", "value")[c]
        lines.append(f"{label:>7}: {cells(inputs[:shown, c])}")
    lines.append(f"{'output':>7}: {cells(task.outputs[row, :steps].cpu().numpy())}")
    scored = task.scored.cpu().numpy()
    targets = task.targets[row].cpu().numpy()
    lines.append(f"{'target':>7}: " + " ".join(
        (str(int(v)) if s else "-") for v, s in zip(targets[:steps], scored[:steps])))
    if steps > 0:
        lines.append(f"   read: cell {int(task.address[row])} -> "
                     f"{' '.join(str(int(v)) for v in task.read[row].cpu().numpy())}")
    return "\n".join(lines) + "\n"


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
