"""The glimpse task's episode logic, batched on one device, shared by the single and vector envs.

``GlimpseTask`` holds N episodes as tensors: the canvas pyramids (a summed-area table per
image, built in ``reset``), labels, the current location, the step counter and the location
history. The single env (``GlimpseEnv``) is this task with N=1 plus numpy conversion; the vector env
(``GlimpseVecEnv``) is this task with autoreset. Neither re-implements the episode, so they
cannot drift.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch
from gymnasium import spaces

from hardattn import data, sensors

N_CLASSES = 10
ACTION_TYPES = ("tuple", "multidiscrete", "box")
FIRST_GLIMPSES = ("random", "center")
EIGHT_BIT = 255  # canvases hold n / 255: the sensor sums the levels n exactly in int32
PRESET_DEFAULTS = {
    # The RAM paper's sensor settings per task (Mnih et al. 2014).
    "mnist28": dict(n_glimpses=6, patch=8, scales=1),
    "translated60": dict(n_glimpses=8, patch=12, scales=3),
    "cluttered60": dict(n_glimpses=8, patch=12, scales=3),
    "cluttered100": dict(n_glimpses=8, patch=12, scales=4),
}


@dataclass(frozen=True)
class GlimpseConfig:
    """Everything that defines a glimpse task (the env constructors' kwargs)."""

    preset: str = "cluttered60"
    """Canvas preset: mnist28, translated60, cluttered60, cluttered100."""
    n_glimpses: int | None = None
    """Glimpses per episode (= steps); None takes the preset's RAM default."""
    patch: int | None = None
    """Side of each glimpse patch in pixels; None takes the preset's default."""
    scales: int | None = None
    """Scales per glimpse, each ``scale_factor`` times wider; None takes the preset's default."""
    scale_factor: int = 2
    """Growth of the covered square from one scale to the next."""
    split: str = "train"
    """MNIST split the canvases come from: train, val or test."""
    first_glimpse: str = "random"
    """Where the glimpse taken by ``reset`` is: "random" (uniform in [-1, 1]^2) or "center"."""
    action_type: str = "tuple"
    """"tuple" (Box location, Discrete class), "multidiscrete" (G x G grid, class) or "box"."""
    grid: int = 9
    """G, the side of the location grid of ``action_type="multidiscrete"`` (cell centres)."""
    canvas: dict = field(default_factory=dict)
    """Overrides of the preset's canvas fields (height, width, n_distractors, ...)."""
    data_root: str | None = None
    """MNIST root (else $HARDATTN_DATA, else ./data)."""

    def resolved(self) -> GlimpseConfig:
        """Fill preset defaults and validate every field.

        Raises:
            ValueError: naming the field, its value and what is accepted.
        """
        if self.preset not in PRESET_DEFAULTS:
            raise ValueError(f"preset={self.preset!r} is not one of {sorted(PRESET_DEFAULTS)}")
        d = PRESET_DEFAULTS[self.preset]
        out = GlimpseConfig(
            preset=self.preset,
            n_glimpses=d["n_glimpses"] if self.n_glimpses is None else self.n_glimpses,
            patch=d["patch"] if self.patch is None else self.patch,
            scales=d["scales"] if self.scales is None else self.scales,
            scale_factor=self.scale_factor, split=self.split, first_glimpse=self.first_glimpse,
            action_type=self.action_type, grid=self.grid, canvas=dict(self.canvas),
            data_root=self.data_root,
        )
        for name in ("n_glimpses", "patch", "scales", "scale_factor", "grid"):
            v = getattr(out, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive integer")
        if out.split not in data.SPLITS:
            raise ValueError(f"split={out.split!r} is not one of {data.SPLITS}")
        if out.first_glimpse not in FIRST_GLIMPSES:
            raise ValueError(f"first_glimpse={out.first_glimpse!r} is not one of {FIRST_GLIMPSES}")
        if out.action_type not in ACTION_TYPES:
            raise ValueError(f"action_type={out.action_type!r} is not one of {ACTION_TYPES}")
        _ = out.spec  # validates the canvas overrides
        return out

    @property
    def spec(self) -> data.CanvasSpec:
        return data.get_spec(self.preset, **self.canvas)


@functools.lru_cache(maxsize=16)
def _shared_generator(split: str, spec: data.CanvasSpec, root: str | None,
                      device: str) -> data.CanvasGenerator:
    # One digit bank per (split, spec, device) in a process: 4096 single envs share one copy.
    return data.CanvasGenerator.from_split(split, spec, root, device)


def observation_space(cfg: GlimpseConfig) -> spaces.Dict:
    """The single-env observation space of a resolved config."""
    return spaces.Dict({
        "glimpse": spaces.Box(0.0, 1.0, (cfg.scales, 1, cfg.patch, cfg.patch), np.float32),
        "loc": spaces.Box(-1.0, 1.0, (2,), np.float32),
        "t": spaces.Discrete(cfg.n_glimpses + 1),
    })


def action_space(cfg: GlimpseConfig) -> spaces.Space:
    """The single-env action space of a resolved config."""
    if cfg.action_type == "tuple":
        return spaces.Tuple((spaces.Box(-1.0, 1.0, (2,), np.float32), spaces.Discrete(N_CLASSES)))
    if cfg.action_type == "multidiscrete":
        return spaces.MultiDiscrete([cfg.grid, cfg.grid, N_CLASSES])
    return spaces.Box(-1.0, 1.0, (2 + N_CLASSES,), np.float32)


def grid_to_loc(cells: torch.Tensor, grid: int) -> torch.Tensor:
    """Cell index ``g`` in ``[0, G)`` to the cell centre ``(2g + 1) / G - 1`` in ``[-1, 1]``."""
    return (2.0 * cells.to(torch.float32) + 1.0) / grid - 1.0


def decode_actions(action, cfg: GlimpseConfig, n: int, device: torch.device):
    """Batched actions of any action type to ``(loc float32 (n, 2), cls int64 (n,))``.

    Finite locations outside ``[-1, 1]`` are clamped to it (documented in the env spec);
    anything else outside the action space raises.

    Raises:
        ValueError: wrong shape, wrong dtype, NaN or infinite location, class or cell out of
            range; the message names the value and the accepted range.
    """
    def tensor(x, what):
        if isinstance(x, torch.Tensor):
            if x.dtype.is_complex:
                raise ValueError(f"{what} must be real numbers, got dtype {x.dtype}")
            if x.dtype in (torch.uint16, torch.uint32, torch.uint64):  # no comparisons in torch
                x = x.to(torch.float64)
            return x.detach().to(device)  # values, never an autograd graph
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError, RuntimeError) as e:  # ragged nesting, ...
            raise ValueError(f"{what} must be a numeric array, got {x!r:.80} ({e})") from None
        if arr.dtype.kind not in "biuf":  # object, str, complex, datetime, timedelta, ...
            raise ValueError(f"{what} must be real numbers, got dtype {arr.dtype} ({x!r:.80})")
        if arr.dtype.kind == "u" and arr.dtype.itemsize == 8:  # torch cannot compare uint64
            arr = arr.astype(np.float64)
        return torch.as_tensor(arr.astype(arr.dtype.newbyteorder("="), copy=False), device=device)

    def integral(x, what, shape, high):
        if x.dtype.is_floating_point:
            if not bool(torch.all(x == torch.round(x))):
                raise ValueError(f"{what} must hold integers, got {x.tolist()!r:.120}")
        elif x.dtype == torch.bool or x.dtype.is_complex:
            raise ValueError(f"{what} must hold integers, got dtype {x.dtype}")
        if tuple(x.shape) != shape:
            raise ValueError(f"{what} must have shape {shape}, got {tuple(x.shape)}")
        # Range first, on the values sent: .long() of a huge float is INT64_MIN.
        if bool(((x < 0) | (x >= high)).any()):
            raise ValueError(f"{what} must be in [0, {high - 1}], got {x.tolist()!r:.120}")
        return x.long()

    single = n == 1 and not isinstance(action, torch.Tensor)
    if cfg.action_type == "tuple":
        if not isinstance(action, (tuple, list)) or len(action) != 2:
            raise ValueError(f"a 'tuple' action is (location, class), got {action!r:.120}")
        loc = tensor(action[0], "location")
        cls = tensor(action[1], "class")
        if single and loc.shape == (2,):
            loc, cls = loc[None], cls.reshape(1) if cls.dim() == 0 else cls
        if tuple(loc.shape) != (n, 2):
            raise ValueError(f"location must have shape {(n, 2) if n > 1 else (2,)}, "
                             f"got {tuple(loc.shape)}")
        if not loc.dtype.is_floating_point:
            loc = loc.to(torch.float32)
        cls = integral(cls, "class", (n,), N_CLASSES)
    elif cfg.action_type == "multidiscrete":
        a = tensor(action, "action")
        if single and a.shape == (3,):
            a = a[None]
        a = integral(a, "multidiscrete action", (n, 3), max(cfg.grid, N_CLASSES))
        if bool((a[:, :2] >= cfg.grid).any()):
            raise ValueError(f"grid cells must be in [0, {cfg.grid - 1}], got {a.tolist()!r:.120}")
        # The range check above used max(grid, 10): with grid > 10 it let classes >= 10 through.
        if bool((a[:, 2] >= N_CLASSES).any()):
            raise ValueError(f"class must be in [0, {N_CLASSES - 1}], got {a.tolist()!r:.120}")
        loc, cls = grid_to_loc(a[:, :2], cfg.grid), a[:, 2]
    else:
        a = tensor(action, "action")
        if single and a.shape == (2 + N_CLASSES,):
            a = a[None]
        if tuple(a.shape) != (n, 2 + N_CLASSES) or not a.dtype.is_floating_point:
            raise ValueError(f"a 'box' action is float ({n}, {2 + N_CLASSES}) (location, class "
                             f"scores), got {a.dtype} {tuple(a.shape)}")
        if not bool(torch.isfinite(a).all()):
            raise ValueError(f"box action must be finite, got {a.tolist()!r:.120}")
        loc, cls = a[:, :2], a[:, 2:].argmax(dim=1)
    if not bool(torch.isfinite(loc).all()):
        raise ValueError(f"location must be finite, got {loc.tolist()!r:.120}")
    # Clamp before the cast: a finite float64 beyond float32's range is clamped, not inf.
    return loc.clamp(-1.0, 1.0).to(torch.float32), cls


class GlimpseTask:
    """N glimpse episodes as tensors on one device (the shared implementation).

    Args:
        cfg: a resolved ``GlimpseConfig``.
        num_envs: N.
        device: where canvases, pyramids and observations live.
    """

    def __init__(self, cfg: GlimpseConfig, num_envs: int, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.n = num_envs
        self.device = torch.device(device)
        self._attach_generator()
        spec = self.canvas.spec
        self.height, self.width = spec.height, spec.width
        N, T = num_envs, cfg.n_glimpses
        self.pyramid: sensors.Pyramid | None = None
        self.images = torch.zeros(N, 1, spec.height, spec.width, device=self.device)
        self.labels = torch.zeros(N, dtype=torch.long, device=self.device)
        self.loc = torch.zeros(N, 2, device=self.device)
        self.t = torch.zeros(N, dtype=torch.long, device=self.device)
        self.history = torch.zeros(N, T + 1, 2, device=self.device)  # locations so far
        self._rows = torch.arange(N, device=self.device)

    def _attach_generator(self) -> None:
        c = self.cfg
        self.canvas = _shared_generator(c.split, c.spec, c.data_root, str(self.device))

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("canvas")  # the digit bank is reloaded from disk, not pickled
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._attach_generator()

    def _check_first_locs(self, first_locs, n: int) -> torch.Tensor:
        if self.cfg.first_glimpse != "random":
            raise ValueError(f"first_locs given, but first_glimpse={self.cfg.first_glimpse!r} "
                             f"always starts at the centre; make the env with "
                             f"first_glimpse='random' or drop first_locs")
        locs = torch.as_tensor(first_locs).to(self.device, torch.float32, copy=True)
        if tuple(locs.shape) != (n, 2):
            raise ValueError(f"first_locs has shape {tuple(locs.shape)}, expected ({n}, 2)")
        if not bool(((locs >= -1) & (locs <= 1)).all()):  # also rejects NaN
            raise ValueError(f"first_locs must lie in [-1, 1] (got min {float(locs.min())}, "
                             f"max {float(locs.max())})")
        return locs

    def reset(self, generator: torch.Generator, rows: torch.Tensor | None = None,
              canvases: tuple[torch.Tensor, torch.Tensor] | None = None,
              repeat: int = 1, first_locs: torch.Tensor | None = None) -> None:
        """Start new episodes in ``rows`` (all when None) on fresh or given canvases.

        ``repeat=S`` draws ``n / S`` canvases and gives each to ``S`` consecutive rows (several
        glimpse paths per image, for leave-one-out baselines). ``first_locs`` ``(n, 2)`` in
        ``[-1, 1]`` replaces the random first glimpses (evaluation on fixed sets:
        ``data.fixed_first_locs``); it needs ``first_glimpse="random"``.
        """
        cfg = self.cfg
        n = self.n if rows is None else int(rows.numel())
        if first_locs is not None:
            first_locs = self._check_first_locs(first_locs, n)
        if canvases is None:
            if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1 \
                    or n % repeat:
                raise ValueError(f"repeat={repeat!r} must be a positive divisor of {n}")
            batch = self.canvas.sample(n // repeat, generator)
            images, labels = batch.images, batch.labels  # (n, 1, H, W), (n,)
            if repeat > 1:  # (a copy even for repeat=1: 1 ms per reset on cluttered100)
                images = images.repeat_interleave(repeat, dim=0)  # (n, 1, H, W)
                labels = labels.repeat_interleave(repeat, dim=0)  # (n,)
        else:
            images, labels = (x.to(self.device) for x in canvases)
            expected = (n, 1, self.height, self.width)
            if tuple(images.shape) != expected or tuple(labels.shape) != (n,):
                raise ValueError(f"canvases must be images {expected} and labels ({n},), got "
                                 f"{tuple(images.shape)} and {tuple(labels.shape)}")
            images, labels = images.to(torch.float32), labels.long()
            if not bool(((images >= 0) & (images <= 1)).all()):  # also rejects NaN
                raise ValueError(f"canvas pixels must lie in [0, 1] (got min "
                                 f"{float(images.min())}, max {float(images.max())}); divide "
                                 f"8-bit images by 255")
            bad = labels[(labels < 0) | (labels >= N_CLASSES)]
            if bad.numel():
                raise ValueError(f"canvas label {int(bad[0])} is not a class in "
                                 f"[0, {N_CLASSES - 1}]")
        if rows is not None:
            levels = self.pyramid.levels  # new rows join the batch's table
        elif canvases is None or sensors.on_level_grid(images, EIGHT_BIT):
            levels = EIGHT_BIT if sensors.levels_fit(self.height, self.width, EIGHT_BIT,
                                                     cfg.scales, cfg.scale_factor) else None
        else:
            levels = None  # off-grid pixels: the float64 table reads them as they are
        if cfg.first_glimpse == "center":
            loc = torch.zeros(n, 2, device=self.device)
        elif first_locs is not None:
            loc = first_locs  # a fresh copy on the device
        else:
            loc = torch.rand(n, 2, generator=generator, device=self.device) * 2.0 - 1.0
        # Per-image work (block means of every scale) happens here, once per episode.
        if rows is None:
            # The buffer of the previous episodes is reused: no page faults on 100+ MB.
            pyr = sensors.build_pyramid(images, cfg.patch, cfg.scales, cfg.scale_factor,
                                        out=self.pyramid, levels=levels)
            self.pyramid, self.images, self.labels = pyr, images, labels
            self.loc, self.t = loc, torch.zeros_like(self.t)
            self.history.zero_()
            self.history[:, 0] = loc
        else:
            pyr = sensors.build_pyramid(images, cfg.patch, cfg.scales, cfg.scale_factor,
                                        levels=levels)
            self.pyramid.assign_rows(rows, pyr)
            self.images[rows], self.labels[rows], self.loc[rows], self.t[rows] = \
                images, labels, loc, 0
            self.history[rows] = 0.0
            self.history[rows, 0] = loc

    def observe(self) -> dict[str, torch.Tensor]:
        """Fresh observation tensors for all rows."""
        return {
            "glimpse": sensors.read_pyramid(self.pyramid, self.loc),  # (N, S, 1, p, p)
            "loc": self.loc.clone(),  # (N, 2)
            "t": self.t.clone(),  # (N,)
        }

    def step(self, loc: torch.Tensor, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Move every row's glimpse to ``loc``; score ``cls`` where the episode ends.

        Returns:
            ``reward float32 (N,)`` (1 for a correct class on the last step, else 0) and
            ``terminated bool (N,)``.
        """
        self.t = self.t + 1
        self.loc = loc
        self.history[self._rows, self.t.clamp(max=self.cfg.n_glimpses)] = loc
        terminated = self.t >= self.cfg.n_glimpses
        reward = (terminated & (cls == self.labels)).to(torch.float32)
        return reward, terminated


SCALE_COLOURS = np.array([[0, 255, 0], [255, 200, 0], [255, 64, 64], [64, 160, 255]], np.uint8)


def render_frame(image: np.ndarray, history: np.ndarray, cfg: GlimpseConfig) -> np.ndarray:
    """The canvas with each glimpse's squares (one colour per scale) and the path between them.

    Args:
        image: ``(H, W)`` float canvas in [0, 1].
        history: ``(g, 2)`` locations of the glimpses taken so far, oldest first.

    Returns:
        ``uint8 (H, W, 3)``.
    """
    H, W = image.shape
    frame = np.repeat((np.clip(image, 0, 1) * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    loc = torch.as_tensor(history, dtype=torch.float32)
    centres = np.stack([(history[:, 1] + 1) * H / 2, (history[:, 0] + 1) * W / 2], 1)  # (g, 2)
    for a, b in zip(centres[:-1], centres[1:]):  # the path, as dots along each segment
        for f in np.linspace(0.0, 1.0, int(np.abs(b - a).max()) + 2):
            y, x = (a + f * (b - a)).astype(int)
            if 0 <= y < H and 0 <= x < W:
                frame[y, x] = (255, 0, 255)
    for i in range(cfg.scales):
        size = cfg.patch * cfg.scale_factor**i
        colour = SCALE_COLOURS[i % len(SCALE_COLOURS)]
        for y0, x0 in sensors.crop_origin(loc, size, H, W).tolist():
            y1, x1 = y0 + size - 1, x0 + size - 1
            ys, xs = slice(max(y0, 0), min(y1, H - 1) + 1), slice(max(x0, 0), min(x1, W - 1) + 1)
            for y in (y0, y1):
                if 0 <= y < H:
                    frame[y, xs] = colour
            for x in (x0, x1):
                if 0 <= x < W:
                    frame[ys, x] = colour
    return frame
