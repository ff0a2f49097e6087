"""One thin ``record``/``dump`` wrapper over TensorBoard's ``SummaryWriter``.

Tags follow Stable-Baselines3 (``rollout/``, ``train/``, ``eval/``, ``time/``) plus
``attention/`` for what the attention policy does. Runs live in
``runs/{env}__{agent}__{seed}__{time}``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def run_name(env_id: str, agent: str, seed: int, when: float | None = None) -> str:
    """``{env}__{agent}__{seed}__{YYYYmmdd-HHMMSS}`` with the env's namespace dropped."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if when is None else when))
    return f"{env_id.split('/')[-1]}__{agent}__{seed}__{stamp}"


def config_markdown(config: dict[str, Any]) -> str:
    """The config as a two-column markdown table (TensorBoard's text tab renders it)."""
    rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(config.items()))
    return "| field | value |\n| --- | --- |\n" + rows


class Logger:
    """``record(key, value)`` any number of times, then ``dump(step)`` writes them all.

    Args:
        run_dir: the run folder (event files go there); None: write nothing (the ranks of a
            data-parallel run other than rank 0, which alone logs).
        purge_step: on resume, the first step to be written again: TensorBoard drops events
            at or after it, so curves continue without duplicated steps.
    """

    def __init__(self, run_dir: str | Path | None, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = None if run_dir is None else Path(run_dir)
        self.writer = _NullWriter() if run_dir is None else \
            SummaryWriter(str(self.run_dir), purge_step=purge_step)
        self._values: dict[str, list[float]] = {}

    def record(self, key: str, value: float | torch.Tensor) -> None:
        """Queue a scalar; several values under one key before a dump are averaged."""
        self._values.setdefault(key, []).append(float(value))

    def dump(self, step: int) -> dict[str, float]:
        """Write every queued scalar at ``step`` and return them."""
        out = {k: float(np.mean(v)) for k, v in self._values.items()}
        for k, v in out.items():
            self.writer.add_scalar(k, v, step)
        self._values.clear()
        return out

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """An ``uint8 (H, W, 3)`` image."""
        self.writer.add_image(tag, image, step, dataformats="HWC")

    def histogram(self, tag: str, values: torch.Tensor | np.ndarray, step: int) -> None:
        self.writer.add_histogram(tag, values, step)

    def text(self, tag: str, markdown: str, step: int = 0) -> None:
        self.writer.add_text(tag, markdown, step)

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """Hyperparameters with the final metrics (TensorBoard's HPARAMS tab)."""
        clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                 for k, v in hparams.items()}
        self.writer.add_hparams(clean, metrics, run_name=".")

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _NullWriter:
    """A ``SummaryWriter`` that discards everything."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None
