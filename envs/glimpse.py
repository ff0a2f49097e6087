"""``GlimpseEnv``: one glimpse episode at a time, numpy in and out (Gymnasium ``Env``)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from .glimpse_task import (
    GlimpseConfig,
    GlimpseTask,
    action_space,
    decode_actions,
    observation_space,
    render_frame,
)


class GlimpseEnv(gym.Env):
    """Classify an MNIST canvas by choosing where to look, one glimpse per step.

    The RAM task (Mnih et al. 2014) as a Gymnasium environment. ``reset`` draws a canvas from
    the split and takes the first glimpse (random or centred); each ``step``'s action gives the
    location of the next glimpse; the action of the last step also carries the class.

    ## Observation space
    ``Dict``:
    - ``glimpse``: ``Box(0, 1, (scales, 1, patch, patch), float32)``; scale ``i`` covers a
      square of ``patch * scale_factor**i`` pixels centred on ``loc``, area-averaged to
      ``patch x patch``; outside the canvas reads 0. Canvases are 8-bit (pixels ``n / 255``):
      each value is the exact mean of the block's levels ``n``, divided by 255 and rounded
      once to float32 (given canvases off that grid are averaged as they are).
    - ``loc``: ``Box(-1, 1, (2,), float32)``, ``(x, y)`` of the glimpse; ``(0, 0)`` is the
      centre, ``(-1, -1)`` the top-left corner.
    - ``t``: ``Discrete(n_glimpses + 1)``, steps taken so far in the episode.

    ## Action space (``action_type``)
    - ``"tuple"`` (native): ``Tuple(Box(-1, 1, (2,)), Discrete(10))``, next location and class.
    - ``"multidiscrete"``: ``MultiDiscrete([G, G, 10])``: the location is the centre
      ``(2g + 1) / G - 1`` of cell ``(gx, gy)`` of a ``G x G`` grid (``grid=G``, default 9).
    - ``"box"``: ``Box(-1, 1, (12,))``: location, then 10 class scores (the class is their
      argmax). The last two let Stable-Baselines3 PPO/A2C train directly.
    The class is read only on the last step; the location of the last step is glimpsed (so the
    final observation is well defined) but cannot change the reward. Finite locations outside
    ``[-1, 1]`` are clamped to it; NaN or infinite locations, classes outside ``[0, 9]``, wrong
    shapes or dtypes raise ``ValueError``.

    ## Reset options
    ``options={"canvas": (image, label)}`` starts the episode on a given canvas (``H x W``
    floats in ``[0, 1]``, label in ``[0, 9]``; evaluation on fixed sets); with
    ``first_glimpse="random"``, ``options={"first_loc": (x, y)}`` sets the first glimpse
    instead of drawing it. Anything else raises ``ValueError``.

    ## Rewards
    1 on the last step if the class is the digit's label, else 0.

    ## Episode end
    ``terminated`` after ``n_glimpses`` steps (the episode holds ``n_glimpses`` glimpses: the
    one taken by ``reset`` and one per step but the last). Never ``truncated``: the length is
    fixed by the task, so no time limit is registered.

    ## Arguments
    ``gym.make("hardattn/GlimpseCluttered60-v0", n_glimpses=None, patch=None, scales=None,
    scale_factor=2, split="train", first_glimpse="random", action_type="tuple", grid=9,
    canvas={}, data_root=None, render_mode=None)``. ``None`` takes the preset's RAM defaults:
    mnist28 6 glimpses of 8x8 x 1 scale; translated60 and cluttered60 8 of 12x12 x 3;
    cluttered100 8 of 12x12 x 4. ``canvas`` overrides canvas fields (``n_distractors``, ...).
    ``info["label"]`` (the digit) is given on the last step.

    ## Version history
    - v0: first release. Since 2026-11-22 glimpse values are the rounded exact means of the
      8-bit levels, not of the float32 pixels: the two differ by at most one unit in the last
      place (about 6e-8), which no learning result can see, so the version is unchanged.
      Also since then ``reset`` accepts ``options={"first_loc": ...}`` (``GlimpseVecEnv``:
      ``"first_locs"``), an addition, and refuses unknown options and given canvases off
      ``[0, 1]`` or with labels off ``[0, 9]`` (they were accepted, and read wrongly).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(
        self,
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
    ) -> None:
        self.cfg = GlimpseConfig(preset, n_glimpses, patch, scales, scale_factor, split,
                                 first_glimpse, action_type, grid, dict(canvas or {}),
                                 data_root).resolved()
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r} is not one of "
                             f"{self.metadata['render_modes'] + [None]}")
        self.render_mode = render_mode
        self.observation_space = observation_space(self.cfg)
        self.action_space = action_space(self.cfg)
        self._task = GlimpseTask(self.cfg, 1, "cpu")
        self._gen = torch.Generator()
        self._started = False
        self._done = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        # All randomness flows from np_random: the torch generator is re-seeded from it.
        self._gen.manual_seed(int(self.np_random.integers(2**63 - 1)))
        options = options or {}
        unknown = set(options) - {"canvas", "first_loc"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; accepted: 'canvas' "
                             f"(image, label) and 'first_loc' (x, y)")
        canvases = first = None
        if "canvas" in options:  # evaluate on a given canvas: (image, label)
            image, label = options["canvas"]
            image = torch.as_tensor(np.asarray(image), dtype=torch.float32)
            H, W = self._task.height, self._task.width
            if image.numel() != H * W:
                raise ValueError(f"the canvas image has shape {tuple(image.shape)}; this env "
                                 f"reads ({H}, {W}) images")
            canvases = (image.reshape(1, 1, H, W), torch.as_tensor([int(label)]))
        if "first_loc" in options:
            first = torch.as_tensor(np.asarray(options["first_loc"]), dtype=torch.float32)
            first = first.reshape(1, -1)  # (1, 2); the task checks the shape
        self._task.reset(self._gen, canvases=canvases, first_locs=first)
        self._started, self._done = True, False
        return self._obs(), {}

    def step(self, action):
        if not self._started:
            raise RuntimeError("step() called before reset(); call env.reset() first")
        if self._done:
            raise RuntimeError("step() called after the episode terminated; call env.reset()")
        loc, cls = decode_actions(action, self.cfg, 1, self._task.device)
        reward, terminated = self._task.step(loc, cls)
        self._done = bool(terminated[0])
        info = {"label": int(self._task.labels[0])} if self._done else {}
        if self._done:
            info["is_success"] = bool(reward[0] > 0)
        return self._obs(), float(reward[0]), self._done, False, info

    def _obs(self) -> dict[str, Any]:
        obs = self._task.observe()
        return {
            "glimpse": obs["glimpse"][0].numpy(),  # (S, 1, p, p), a fresh array
            "loc": obs["loc"][0].numpy(),  # (2,)
            "t": np.int64(obs["t"][0]),
        }

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        if not self._started:
            raise RuntimeError("render() called before reset(); call env.reset() first")
        g = int(self._task.t[0]) + (0 if self._done else 1)  # glimpses actually used
        return render_frame(self._task.images[0, 0].numpy(),
                            self._task.history[0, :g].numpy(), self.cfg)
