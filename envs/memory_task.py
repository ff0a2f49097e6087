"""The memory-read tasks' shared logic: configs, spaces, action decoding and ``MemoryTask``.

``MemoryTask`` holds N episodes as tensors (inputs, targets, step counters, the last read);
the single envs (``hardattn.envs.memory``) are that task with N=1 plus numpy conversion and
the vector envs (``hardattn.envs.memory_vec``) are that task with NEXT_STEP autoreset, so the
two cannot drift. The tasks themselves are specified in the env classes' docstrings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

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
