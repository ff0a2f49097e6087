"""The five algorithmic tape tasks of gym 0.x, each an ``AlgorithmicTapeEnv`` with its target.

Each class fills in what differs between the tasks: the target of an input
(``_target``), sometimes how the input is drawn (``_generate_input``), the head's moves and the
curriculum's promotion threshold. Their docstrings, the spec sheets, share the common part
written once in ``envs/tape.py`` (``_COMMON_SPEC``).
"""

from __future__ import annotations

import numpy as np

from .tape import _COMMON_SPEC, AlgorithmicTapeEnv


class TapeCopyEnv(AlgorithmicTapeEnv):
    def __init__(self, base: int = 5, starting_min_length: int = 2, last: int = 10,
                 max_min_length: int = 30, action_type: str = "tuple",
                 render_mode: str | None = None) -> None:
        super().__init__(base, True, starting_min_length, last, max_min_length, action_type,
                         render_mode)

    def _target(self, input_data: np.ndarray) -> np.ndarray:
        return input_data.copy()


class TapeDuplicatedInputEnv(AlgorithmicTapeEnv):
    def __init__(self, base: int = 5, duplication: int = 2, starting_min_length: int = 2,
                 last: int = 10, max_min_length: int = 30, action_type: str = "tuple",
                 render_mode: str | None = None) -> None:
        if isinstance(duplication, bool) or not isinstance(duplication, (int, np.integer)) \
                or duplication < 1:
            raise ValueError(f"duplication={duplication!r} must be a positive integer")
        self.duplication = int(duplication)
        super().__init__(base, True, starting_min_length, last, max_min_length, action_type,
                         render_mode)

    def _generate_input(self, length: int) -> np.ndarray:
        # As gym: length is rounded down to a multiple of duplication (at least one group).
        groups = max(length, self.duplication) // self.duplication
        symbols = self.np_random.integers(self.base, size=groups, dtype=np.int64)
        return np.repeat(symbols, self.duplication)

    def _target(self, input_data: np.ndarray) -> np.ndarray:
        return input_data[::self.duplication].copy()


class TapeReverseEnv(AlgorithmicTapeEnv):
    PROMOTION_SHORTFALL = -0.1

    def __init__(self, base: int = 2, starting_min_length: int = 1, last: int = 50,
                 max_min_length: int = 30, action_type: str = "tuple",
                 render_mode: str | None = None) -> None:
        super().__init__(base, True, starting_min_length, last, max_min_length, action_type,
                         render_mode)

    def _target(self, input_data: np.ndarray) -> np.ndarray:
        return input_data[::-1].copy()


class TapeRepeatCopyEnv(AlgorithmicTapeEnv):
    PROMOTION_SHORTFALL = -0.1

    def __init__(self, base: int = 5, starting_min_length: int = 2, last: int = 10,
                 max_min_length: int = 30, action_type: str = "tuple",
                 render_mode: str | None = None) -> None:
        super().__init__(base, True, starting_min_length, last, max_min_length, action_type,
                         render_mode)

    def _target(self, input_data: np.ndarray) -> np.ndarray:
        return np.concatenate([input_data, input_data[::-1], input_data])


class TapeReversedAdditionEnv(AlgorithmicTapeEnv):
    MOVES = ("left", "right", "up", "down")
    ROWS = 2

    def __init__(self, base: int = 3, rows: int = 2, starting_min_length: int = 2,
                 last: int = 10, max_min_length: int = 30, action_type: str = "tuple",
                 render_mode: str | None = None) -> None:
        if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 2:
            raise ValueError(f"rows={rows!r} must be an integer >= 2 (numbers to add)")
        self.ROWS = int(rows)  # instance override of the class default
        super().__init__(base, False, starting_min_length, last, max_min_length, action_type,
                         render_mode)

    def _target(self, input_data: np.ndarray) -> np.ndarray:
        digits, carry = [], 0
        for column in input_data:  # least significant digit first
            total = int(column.sum()) + carry
            digits.append(total % self.base)
            carry = total // self.base
        while carry > 0:  # base**k > rows - 1 for any carry: one digit when rows <= base
            digits.append(carry % self.base)
            carry //= self.base
        return np.asarray(digits, np.int64)

    @property
    def time_limit(self) -> int:
        # gym's quirk, kept: counted on the input width, not the (maybe longer) target.
        # Generalised to rows * w + 4 (gym: 2 * w + 4, equal for the registered 2 rows; gym's
        # 3-row variant kept 2 * w + 4 and could not even visit every digit of long inputs).
        return self.ROWS * self.input_width + 4


def _spec(task: str, moves: str, time_limit: str, env_id: str, args: str, start: int,
          last: int, shortfall: float, gym_name: str) -> str:
    return task + _COMMON_SPEC.format(moves=moves, time_limit=time_limit, id=env_id,
                                      args=args, start=start, last=last, shortfall=shortfall,
                                      gym_name=gym_name)


TapeCopyEnv.__doc__ = _spec(
    """Copy the input tape to the output tape (gym's ``Copy-v0``).

    The input is ``w`` symbols from ``0..base-1`` (shown as letters A, B, ...); the target is
    the input itself. The oracle moves right, writing what it reads.
    """, "0 left, 1 right", "``w + 2 * len(target) + 4``", "hardattn/TapeCopy-v0",
    "base=5, ", 2, 10, -1.0, "Copy")

TapeDuplicatedInputEnv.__doc__ = _spec(
    """Write every ``duplication``-th symbol of an input made of repeated symbols (gym's
    ``DuplicatedInput-v0``).

    The input is ``w // duplication`` symbols (at least one) each repeated ``duplication``
    times (default 2: ``AABBCC``); the target is one copy of each (``ABC``).
    """, "0 left, 1 right", "``w + 2 * len(target) + 4``",
    "hardattn/TapeDuplicatedInput-v0", "base=5, duplication=2, ", 2, 10, -1.0,
    "DuplicatedInput")

TapeReverseEnv.__doc__ = _spec(
    """Write the input tape reversed (gym's ``Reverse-v0``).

    The input is ``w`` symbols of a binary alphabet by default (``base=2``); the target is the
    input reversed. The read head starts on the first symbol: the oracle walks right to the
    blank, then back, writing. As in gym, this task's curriculum starts at length 1 and looks
    at the last 50 episodes.
    """, "0 left, 1 right", "``w + 2 * len(target) + 4``", "hardattn/TapeReverse-v0",
    "base=2, ", 1, 50, -0.1, "Reverse")

TapeRepeatCopyEnv.__doc__ = _spec(
    """Write the input, then the input reversed, then the input again (gym's
    ``RepeatCopy-v0``).

    The target has ``3 w`` symbols. Its in-task limit, ``7 w + 4``, exceeds the registered
    ``max_episode_steps=200`` for ``w >= 29``.
    """, "0 left, 1 right", "``w + 2 * len(target) + 4``", "hardattn/TapeRepeatCopy-v0",
    "base=5, ", 2, 10, -0.1, "RepeatCopy")

TapeReversedAdditionEnv.__doc__ = _spec(
    """Add the numbers written on the rows of a grid, digits least significant first (gym's
    ``ReversedAddition-v0``).

    The input is a ``rows x w`` grid (default 2 rows) of digits in ``base`` (default 3); column
    ``x`` holds the ``x``-th digit of each number, least significant first. The target is the
    digits of the sum, least significant first, with a final carry digit when there is one
    (so ``w`` or ``w + 1`` digits). The head starts at column 0, row 0; it moves in 2-D.
    The oracle zig-zags: down, write, right; up, write, right; ...
    """, "0 left, 1 right, 2 up, 3 down", "``rows * w + 4`` (gym's ``2 w + 4`` for the "
    "registered 2 rows: counted on the input width even when the target has a carry digit)",
    "hardattn/TapeReversedAddition-v0", "base=3, rows=2, ", 2, 10, -1.0, "ReversedAddition")
