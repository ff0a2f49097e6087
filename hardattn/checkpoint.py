"""Checkpoints: atomic writes, a versioned format, RNG states, and resume with fallback.

A checkpoint is written to a temporary file in the same folder, flushed and fsynced, then
renamed over its final name (atomic on POSIX), and the folder is fsynced: a crash, a kill or a
full disk leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT_VERSION = 1
PERIODIC = re.compile(r"^ckpt_(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be read or written; the message names the file and the cause."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus ``format_version``) to ``path`` atomically.

    Raises:
        CheckpointError: the folder is unwritable or the disk is full; the previous file at
            ``path`` (if any) is left intact.
    """
    return _atomic_write(path, lambda f: torch.save({"format_version": FORMAT_VERSION,
                                                     **state}, f), "checkpoint")


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (a side file of a checkpoint, e.g. ``best.json``).

    Raises:
        CheckpointError: as ``save_checkpoint``.
    """
    return _atomic_write(path, lambda f: f.write(text.encode()), "file")


def _atomic_write(path: str | Path, write, kind: str) -> Path:
    """``write(file)`` into a temporary file, fsync, rename over ``path``, fsync the folder.

    ``kind`` ("checkpoint" or "file") names what failed in the error.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as exc:  # KeyboardInterrupt too (a second Ctrl-C): no temp file left
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if not isinstance(exc, (OSError, RuntimeError)):
            raise
        raise CheckpointError(f"could not write {kind} {str(path)!r}: {exc} (the previous "
                              f"{kind}, if any, is intact)") from exc
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by ``save_checkpoint``.

    Raises:
        CheckpointError: missing, truncated, corrupted, or of an unknown format version.
    """
    path = Path(path)
    try:
        # weights_only=False: our own files hold numpy/python RNG states, not only tensors.
        state = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist") from exc
    except Exception as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupted: "
                              f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        version = state.get("format_version") if isinstance(state, dict) else None
        raise CheckpointError(f"checkpoint {str(path)!r} has format version {version!r}; this "
                              f"hardattn reads version {FORMAT_VERSION}")
    return state


def periodic_checkpoints(folder: str | Path) -> list[Path]:
    """Periodic checkpoints ``ckpt_<update>.pt`` of a folder, newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if PERIODIC.match(p.name)]
    return sorted(found, key=lambda p: int(PERIODIC.match(p.name).group(1)), reverse=True)


def load_latest(target: str | Path, map_location: str | torch.device = "cpu",
                warn=print) -> tuple[dict, Path]:
    """The newest readable checkpoint of a run folder, its ``checkpoints/`` folder, or a file.

    A truncated or corrupted file is reported (``warn``) and the previous one is tried.

    Raises:
        CheckpointError: nothing readable was found.
    """
    target = Path(target)
    if not target.exists():
        raise CheckpointError(f"{str(target)!r} does not exist; give a run folder, its "
                              f"checkpoints/ folder or a checkpoint file")
    if target.is_file():
        candidates = [target] + [p for p in periodic_checkpoints(target.parent) if p != target]
    else:
        folder = target / "checkpoints" if (target / "checkpoints").is_dir() else target
        candidates = periodic_checkpoints(folder)
    errors = []
    for path in candidates:
        try:
            return load_checkpoint(path, map_location), path
        except CheckpointError as exc:
            errors.append(str(exc))
            warn(f"hardattn: {exc}; trying the previous checkpoint")
    raise CheckpointError(f"no readable checkpoint in {str(target)!r}"
                          + (f" ({'; '.join(errors)})" if errors else ""))


def prune(folder: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest periodic checkpoints."""
    for old in periodic_checkpoints(folder)[keep:]:
        old.unlink(missing_ok=True)


def rng_state() -> dict[str, Any]:
    """Global RNG states (Python, numpy, torch CPU and CUDA), for checkpoints."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # One state per GPU the saving process saw; a machine with fewer visible GPUs takes
        # the first ones (set_rng_state_all would index past its devices), one with more
        # keeps its own for the rest.
        for i, s in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)
