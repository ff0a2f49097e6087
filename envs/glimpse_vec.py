"""``GlimpseVecEnv``: N glimpse episodes as tensor operations on one device (``VectorEnv``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .glimpse_task import (
    GlimpseConfig,
    GlimpseTask,
    action_space,
    decode_actions,
    observation_space,
    render_frame,
)


class GlimpseVecEnv(VectorEnv):
    """The glimpse task for N episodes at once, in torch, on ``device``
    (the ``vector_entry_point``).

    Same task, spaces and semantics as ``GlimpseEnv`` (see its docstring), batched:
    observations are a dict of torch tensors on ``device`` (``glimpse (N, S, 1, p, p)``,
    ``loc (N, 2)``, ``t (N,)``), rewards ``float32 (N,)``, terminations and truncations
    ``bool (N,)``, all fresh each call. Actions may be torch tensors on any device or numpy
    arrays: for ``"tuple"`` a pair ``(loc (N, 2), cls (N,))``, for ``"multidiscrete"``
    ``(N, 3)`` integers, for ``"box"`` ``(N, 12)`` floats.

    Autoreset: ``AutoresetMode.NEXT_STEP``, as Gymnasium documents it: the ``step`` after a
    sub-environment terminated resets it (new canvas, first glimpse), ignores its action, and
    returns reward 0, ``terminated=False``, ``truncated=False`` for it. Since every episode
    has the same length, all rows terminate on the same step; calling ``reset()`` instead is
    equivalent and is what our agents do.

    ``info`` holds ``label (N,)`` with mask ``_label (N,)`` (set on terminating rows).
    ``reset(options={"canvases": (images (N, 1, H, W), labels (N,))})`` starts the episodes on
    given canvases (used for evaluation on the fixed validation and test sets);
    ``reset(options={"repeat": S})`` draws N/S canvases, each shown to S consecutive rows
    (several glimpse paths per image in one batch, for leave-one-out baselines);
    ``reset(options={"first_locs": (N, 2)})``, with ``first_glimpse="random"``, sets the first
    glimpses instead of drawing them (evaluators pass ``hardattn.data.fixed_first_locs``, so
    every model starts each fixed canvas at the same place).

    Per-image work (the block means of every scale) is done in ``reset``; ``step`` is one
    gather of ``scales * patch * patch`` values per row.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2,
                "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        preset: str = "cluttered60",
        n_glimpses: int | None = None,
        patch: int | None = None,
        scales: int | None = None,
        scale_factor: int = 2,
        split: str = "train",
        first_glimpse: str = "random",
        action_type: str = "tuple",
        grid: int = 9,
        canvas: dict | None = None,
        data_root: str | None = None,
        render_mode: str | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r} must be a positive integer")
        self.cfg = GlimpseConfig(preset, n_glimpses, patch, scales, scale_factor, split,
                                 first_glimpse, action_type, grid, dict(canvas or {}),
                                 data_root).resolved()
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
        self._task = GlimpseTask(self.cfg, num_envs, self.device)
        self._gen = torch.Generator(device=self.device)
        self._started = False
        # Host copy of the step counters: which rows need an autoreset is known without a
        # device sync (every row's counter advances deterministically).
        self._t_host = np.zeros(num_envs, dtype=np.int64)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._gen.manual_seed(int(self.np_random.integers(2**63 - 1)))
        options = options or {}
        unknown = set(options) - {"canvases", "repeat", "first_locs"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; accepted: "
                             f"'canvases' (images, labels), 'repeat' (paths per canvas) and "
                             f"'first_locs' (N, 2)")
        self._task.reset(self._gen, canvases=options.get("canvases"),
                         repeat=options.get("repeat", 1), first_locs=options.get("first_locs"))
        self._t_host[:] = 0
        self._started = True
        return self._task.observe(), {}

    def step(self, actions):
        if not self._started:
            raise RuntimeError("step() called before reset(); call env.reset() first")
        T = self.cfg.n_glimpses
        restart = self._t_host >= T  # rows that terminated on the previous step
        loc, cls = decode_actions(actions, self.cfg, self.num_envs, self.device)
        reward, terminated = self._task.step(loc, cls)
        labels = self._task.labels.clone()
        if restart.all():
            self._task.reset(self._gen)
        elif restart.any():
            rows = torch.as_tensor(np.flatnonzero(restart), device=self.device)
            self._task.reset(self._gen, rows=rows)
        if restart.any():
            keep = torch.as_tensor(~restart, device=self.device)
            reward, terminated = reward * keep, terminated & keep
        self._t_host = np.where(restart, 0, self._t_host + 1)
        truncated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        info = {"label": labels, "_label": terminated.clone()}
        return self._task.observe(), reward, terminated, truncated, info

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode != "rgb_array":
            return None
        if not self._started:
            raise RuntimeError("render() called before reset(); call env.reset() first")
        images = self._task.images[:, 0].float().cpu().numpy()
        hist = self._task.history.float().cpu().numpy()
        t = self._t_host
        return tuple(render_frame(images[i], hist[i, :max(1, min(t[i] + 1, self.cfg.n_glimpses))],
                                  self.cfg) for i in range(self.num_envs))


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but CUDA is not available; use device='cpu'")
    return dev
