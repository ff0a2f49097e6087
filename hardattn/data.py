"""Batched canvas generators (the deepmind/mnist-cluttered protocol) and the fixed eval sets.

Data flow: ``hardattn.mnist.load_mnist`` reads a split of the official digits (re-exported
here); ``CanvasGenerator`` places digits (and distractor crops) on canvases in torch,
batched, on any device, from a caller-seeded ``torch.Generator``;
``fixed_set`` builds the validation/test canvases once from a fixed seed and caches them.

Canvases are built in the integer domain (pixel values 0..255 as float, summed, clipped at 255)
and divided by 255 only at the end, so every canvas pixel is exactly ``k / 255``: cached sets
are stored as ``uint8`` without loss and the same seed gives bit-identical canvases.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# Re-exported: ``hardattn.data`` stays the one place users import the data from.
from .mnist import (  # noqa: F401
    DATA_ENV,
    DIGIT_SIZE,
    RAW_FILES,
    SPLITS,
    VAL_SIZE,
    IdxFormatError,
    MNISTNotFoundError,
    load_mnist,
    read_idx,
    resolve_root,
)

CACHE_ENV = "HARDATTN_CACHE"
SPLIT_SIZES = {"train": 50_000, "val": 10_000, "test": 10_000}
# Bump when the canvases of a seed change. 2: fixed sets read each digit of their split once
# (``digit_order``); version 1 drew them with replacement, so a full set missed a third of them.
GENERATOR_VERSION = 2


# ----------------------------------------------------------------------------- canvases


@dataclass(frozen=True)
class CanvasSpec:
    """How canvases of one preset are drawn."""

    height: int
    """Canvas height in pixels."""
    width: int
    """Canvas width in pixels."""
    n_distractors: int = 0
    """Distractor crops per canvas (cluttered MNIST: 4 at 60x60, 8 at 100x100)."""
    distractor_size: int = 8
    """Side of each square distractor crop, in pixels of the (scaled) digit."""
    digit_scale: float = 1.0
    """Digits are resized to ``round(28 * digit_scale)`` pixels before placement."""
    shift: int = 0
    """Training augmentation: each drawn canvas is translated by a random whole number of
    pixels in ``[-shift, shift]`` along each axis (what leaves the canvas is lost, zeros come
    in). 0, every preset's value, leaves canvases and random stream as they were. The fixed
    validation and test sets are never shifted."""

    @property
    def digit_size(self) -> int:
        return int(round(DIGIT_SIZE * self.digit_scale))

    def validate(self) -> CanvasSpec:
        """Check every field; return self so it chains.

        Raises:
            ValueError: naming the field, its value and the accepted range.
        """
        for name in ("height", "width", "n_distractors", "distractor_size", "shift"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name}={value!r} must be an integer")
        if not (isinstance(self.digit_scale, (int, float)) and 0.1 <= self.digit_scale <= 10):
            raise ValueError(f"digit_scale={self.digit_scale!r} must be a number in [0.1, 10]")
        d = self.digit_size
        if self.height < d or self.width < d:
            raise ValueError(
                f"canvas {self.height}x{self.width} is smaller than the digit ({d}x{d}); "
                f"use height and width >= {d}"
            )
        if self.n_distractors < 0:
            raise ValueError(f"n_distractors={self.n_distractors} must be >= 0")
        if not 0 <= self.shift < min(self.height, self.width):
            raise ValueError(f"shift={self.shift} must be in [0, {min(self.height, self.width)})"
                             f" (pixels, less than the canvas side); 0 turns it off")
        if self.n_distractors and not 1 <= self.distractor_size <= d:
            raise ValueError(f"distractor_size={self.distractor_size} must be in [1, {d}]")
        return self


PRESETS: dict[str, CanvasSpec] = {
    "mnist28": CanvasSpec(28, 28),
    "translated60": CanvasSpec(60, 60),
    "cluttered60": CanvasSpec(60, 60, n_distractors=4),
    "cluttered100": CanvasSpec(100, 100, n_distractors=8),
}


def get_spec(preset: str | CanvasSpec, **overrides) -> CanvasSpec:
    """A preset's spec with optional field overrides (``height``, ``n_distractors``, ...)."""
    if isinstance(preset, CanvasSpec):
        spec = preset
    elif preset in PRESETS:
        spec = PRESETS[preset]
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    unknown = set(overrides) - set(CanvasSpec.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown canvas option(s) {sorted(unknown)}; accepted: "
                         f"{sorted(CanvasSpec.__dataclass_fields__)}")
    return replace(spec, **overrides).validate()


@dataclass
class Canvases:
    """A batch of canvases and where everything on them came from."""

    images: torch.Tensor  # (B, 1, H, W) float in [0, 1], every value a multiple of 1/255
    labels: torch.Tensor  # (B,) int64
    digit_index: torch.Tensor  # (B,) index of the target digit in the split's bank
    digit_pos: torch.Tensor  # (B, 2) top-left (y, x) of the target digit (shifted: may be < 0)
    distractor_index: torch.Tensor  # (B, D) source digits of the distractors
    distractor_src: torch.Tensor  # (B, D, 2) top-left (y, x) of each crop inside its digit
    distractor_pos: torch.Tensor  # (B, D, 2) top-left (y, x) of each crop on the canvas


class CanvasGenerator:
    """Draws canvases of one split and spec, batched, on one device.

    Every random number comes from the ``torch.Generator`` passed to ``sample``, which must
    live on the generator's device; the same generator state gives the same canvases.
    """

    def __init__(
        self,
        digits: torch.Tensor,
        labels: torch.Tensor,
        spec: CanvasSpec,
        device: torch.device | str = "cpu",
    ) -> None:
        spec.validate()
        self.spec = spec
        self.device = torch.device(device)
        bank = digits.to(self.device, torch.float32)  # (N, 28, 28), values 0..255
        if spec.digit_size != DIGIT_SIZE:
            # Resize once for the whole bank, rounded back to integers so sums stay exact.
            bank = F.interpolate(bank[:, None], size=(spec.digit_size,) * 2, mode="bilinear",
                                 antialias=True, align_corners=False)[:, 0]
            bank = bank.round().clamp_(0, 255)
        # uint8 storage: a quarter of the memory traffic of float32; values stay exact integers.
        self.bank = bank.to(torch.uint8).contiguous()  # (N, d, d)
        self.labels = labels.to(self.device)
        d, s, W = spec.digit_size, spec.distractor_size, spec.width
        ar_d, ar_s = torch.arange(d, device=self.device), torch.arange(s, device=self.device)
        # Flat offsets of a d x d (or s x s) block relative to its top-left, in canvas and digit.
        self._digit_off = (ar_d[:, None] * W + ar_d[None, :]).reshape(1, d * d)  # (1, d*d)
        self._crop_dst = (ar_s[:, None] * W + ar_s[None, :]).reshape(1, 1, s * s)  # (1,1,s*s)
        self._crop_src = (ar_s[:, None] * d + ar_s[None, :]).reshape(1, 1, s * s)  # (1,1,s*s)

    @classmethod
    def from_split(
        cls,
        split: str,
        spec: CanvasSpec | str,
        root: str | os.PathLike | None = None,
        device: torch.device | str = "cpu",
        download: bool = True,
    ) -> CanvasGenerator:
        """Generator over one split of MNIST (``spec`` may be a preset name)."""
        digits, labels = load_mnist(split, root, download)
        return cls(digits, labels, get_spec(spec) if isinstance(spec, str) else spec, device)

    def __len__(self) -> int:
        return self.bank.shape[0]

    def sample(self, n: int, generator: torch.Generator,
               digits: torch.Tensor | None = None) -> Canvases:
        """Draw ``n`` canvases.

        Args:
            n: batch size (>= 1).
            generator: a seeded ``torch.Generator`` on this generator's device.
            digits: ``(n,)`` indices of the target digits in this split; default: drawn
                uniformly with replacement (training). The positions and distractors are drawn
                either way, in the same order.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r} must be a positive integer")
        spec, dev, N = self.spec, self.device, self.bank.shape[0]
        H, W, d, s, D = spec.height, spec.width, spec.digit_size, spec.distractor_size, \
            spec.n_distractors
        kw = dict(generator=generator, device=dev)
        if digits is None:
            idx = torch.randint(N, (n,), **kw)  # (n,)
        else:
            idx = torch.as_tensor(digits, dtype=torch.int64, device=dev)  # (n,)
            if idx.shape != (n,) or (n and not 0 <= int(idx.min()) <= int(idx.max()) < N):
                raise ValueError(f"digits must be ({n},) indices in [0, {N}), got shape "
                                 f"{tuple(idx.shape)}")
        pos = torch.stack([torch.randint(H - d + 1, (n,), **kw),
                           torch.randint(W - d + 1, (n,), **kw)], dim=1)  # (n, 2) = (y, x)
        didx = torch.randint(N, (n, D), **kw)  # (n, D)
        dsrc = torch.randint(d - s + 1, (n, D, 2), **kw)  # (n, D, 2) crop corner in the digit
        dpos = torch.stack([torch.randint(H - s + 1, (n, D), **kw),
                            torch.randint(W - s + 1, (n, D), **kw)], dim=2)  # (n, D, 2)

        canvas = torch.zeros(n, H * W, device=dev)  # (n, H*W), integer-valued floats
        if D:
            src_base = didx * (d * d) + dsrc[..., 0] * d + dsrc[..., 1]  # (n, D)
            # index_select, not advanced indexing: 5x faster on CPU for the same bytes.
            src = self.bank.view(-1).index_select(0, (src_base[..., None] + self._crop_src)
                                                  .view(-1)).float()  # (n*D*s*s,)
            dst = (dpos[..., 0] * W + dpos[..., 1])[..., None] + self._crop_dst  # (n, D, s*s)
            canvas.scatter_add_(1, dst.view(n, D * s * s), src.view(n, D * s * s))
        # Sums of non-negative values clipped once equal clipping after every addition.
        dst = (pos[:, 0] * W + pos[:, 1])[:, None] + self._digit_off  # (n, d*d)
        canvas.scatter_add_(1, dst, self.bank.index_select(0, idx).view(n, d * d).float())
        images = canvas.clamp_(max=255.0).div_(255.0).view(n, 1, H, W)  # (n, 1, H, W)
        if spec.shift:
            # Drawn last, so the canvases before the shift are those of shift=0.
            k = spec.shift
            off = torch.randint(-k, k + 1, (n, 2), **kw)  # (n, 2) = (dy, dx)
            images = translate(images, off, k)
            pos, dpos = pos + off, dpos + off[:, None]
        return Canvases(images, self.labels[idx], idx, pos, didx, dsrc, dpos)


def translate(images: torch.Tensor, offset: torch.Tensor, bound: int) -> torch.Tensor:
    """Move each image by whole pixels, zero-filled: ``out[b, :, y, x] = images[b, :, y - dy,
    x - dx]`` with ``(dy, dx) = offset[b]``.

    Args:
        images: ``(n, C, H, W)``.
        offset: ``(n, 2)`` integer ``(dy, dx)``, each in ``[-bound, bound]``.
        bound: the largest ``|dy|`` or ``|dx|`` (the padding width).
    """
    n, _, H, W = images.shape
    dev = images.device
    padded = F.pad(images, (bound, bound, bound, bound))  # (n, C, H+2k, W+2k)
    ys = (bound - offset[:, 0])[:, None] + torch.arange(H, device=dev)  # (n, H) source rows
    xs = (bound - offset[:, 1])[:, None] + torch.arange(W, device=dev)  # (n, W) source cols
    b = torch.arange(n, device=dev)[:, None, None]  # (n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[b, ys[:, :, None], xs[:, None, :]]  # (n, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()  # (n, C, H, W)


# ----------------------------------------------------------------------------- fixed sets


def _cache_dir(root: Path) -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    candidate = root / "hardattn_cache"
    probe = candidate if candidate.exists() else root
    # Mode bits too: root passes os.access on folders whose owner marked them read-only.
    if probe.exists() and os.access(probe, os.W_OK) and probe.stat().st_mode & 0o222:
        return candidate
    # A read-only data root (a shared mount) caches beside the user's other caches.
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hardattn"


def digit_order(N: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` digit indices of a split of ``N`` digits, each used once before any is used twice.

    Random permutations of ``range(N)`` laid end to end, cut at ``n``: a set of ``n = N``
    canvases holds every digit of its split exactly once (the official test set, scored once),
    ``n < N`` distinct digits, and ``n > N`` every digit ``n // N`` or ``n // N + 1`` times.
    Returns ``int64 (n,)`` on CPU.
    """
    rounds = -(-n // N)  # ceil
    return torch.cat([torch.randperm(N, generator=generator) for _ in range(rounds)])[:n]


def _fixed_seed(preset: str, split: str, seed: int) -> int:
    digest = hashlib.sha256(f"{preset}/{split}/{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _checksum(images: torch.Tensor, labels: torch.Tensor) -> str:
    h = hashlib.sha256(images.numpy().tobytes())
    h.update(labels.numpy().tobytes())
    return h.hexdigest()


def fixed_set(
    preset: str,
    split: str,
    n: int | None = None,
    seed: int = 0,
    root: str | os.PathLike | None = None,
    download: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed evaluation canvases of a preset: ``float32 (n, 1, H, W)`` and labels, on CPU.

    Generated once on CPU from a seed derived from (preset, split, seed), so every model and
    every device is scored on identical images. The target digits follow ``digit_order``: the
    default ``n`` places every digit of the split exactly once. Cached as uint8 with a sha256
    checksum and rebuilt when the cache is missing or does not match.

    Args:
        preset: a name from ``PRESETS``.
        split: ``"val"`` or ``"test"`` (or ``"train"`` for a fixed training sample).
        n: number of canvases; defaults to the split's size.
        seed: evaluation seed (keep the default to compare with published figures).
        root: data root.
    """
    spec = get_spec(preset)
    if split not in SPLITS:  # checked first: otherwise the default n=0 hides the real culprit
        raise ValueError(f"split={split!r} is not one of {SPLITS}")
    n = SPLIT_SIZES[split] if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be a positive integer")
    root_path = resolve_root(root)
    # The key names the canvas recipe too: a changed preset or generator never reads a stale set.
    recipe = hashlib.sha256(f"{GENERATOR_VERSION}/{spec!r}".encode()).hexdigest()[:10]
    path = _cache_dir(root_path) / f"{preset}-{split}-n{n}-seed{seed}-{recipe}.pt"
    if path.exists():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob.get("checksum") == _checksum(blob["images"], blob["labels"]):
                return blob["images"].float().div_(255.0), blob["labels"]
        except Exception:  # corrupt or truncated cache: rebuilt below
            pass
    gen = CanvasGenerator.from_split(split, spec, root_path, "cpu", download)
    g = torch.Generator().manual_seed(_fixed_seed(preset, split, seed))
    out = gen.sample(n, g, digits=digit_order(len(gen), n, g))
    images_u8 = (out.images * 255.0).round_().to(torch.uint8)  # exact: values are k/255
    labels = out.labels.clone()
    blob = {"images": images_u8, "labels": labels, "checksum": _checksum(images_u8, labels),
            "meta": json.dumps({"preset": preset, "split": split, "n": n, "seed": seed})}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".pt.tmp{os.getpid()}")
        torch.save(blob, tmp)
        os.replace(tmp, path)
    except OSError:
        pass  # an unwritable cache only costs regeneration next time
    return out.images, labels


def fixed_first_locs(n: int, seed: int = 0) -> torch.Tensor:
    """First-glimpse locations of the fixed evaluation canvases: ``float32 (n, 2)`` on CPU.

    With a random first glimpse, where a model starts is part of what it is scored on, so
    every evaluator (hard, SB3 and backprop agents) starts the ``i``-th canvas of a fixed set
    at row ``i`` of this table, whatever its batch size or device. Uniform in ``[-1, 1]^2``,
    drawn one value after another (numpy PCG64), so the table of a smaller ``n`` is a prefix
    of a larger one's.

    Args:
        n: number of canvases.
        seed: evaluation seed (keep the default to compare with published figures).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be a positive integer")
    rng = np.random.Generator(np.random.PCG64(_fixed_seed("first-glimpse", "eval", seed)))
    return torch.from_numpy(rng.random((n, 2)) * 2.0 - 1.0).to(torch.float32)  # (n, 2)
