"""Glimpse sensors: the RAM retina (hard, pixel-snapped) and its bilinear twin (soft).

Coordinates: ``loc`` is ``(x, y)`` in ``[-1, 1]``; ``(0, 0)`` is the image centre, ``(-1, -1)``
the top-left corner and ``(1, 1)`` the bottom-right. Scale ``i`` reads a square of
``patch * scale_factor**i`` pixels centred on ``loc`` and reduces it to ``patch x patch`` by
area averaging (mean over ``k x k`` blocks, ``k = scale_factor**i``); pixels outside the image
read as zero, so any location, even far outside ``[-1, 1]``, is valid.

The hard retina works in two parts so that environments do the per-image work once:
``build_pyramid`` (per image: block means of every scale at every offset, from a float64
summed-area table) and ``read_pyramid`` (per glimpse: one gather of ``scales * patch * patch``
values). ``glimpse`` is the two composed; the env calls ``build_pyramid`` in ``reset`` and
``read_pyramid`` in ``step``. Block means are exact sums divided by ``k * k``, rounded once to
the image dtype.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

MODES = ("hard", "soft")
# ATen's grain size: elementwise kernels run serially below it. Replicate-pad and cumsum
# ignore it and open a parallel region for any input; on a loaded 2-core machine waking the
# pool costs milliseconds: with 2 threads the single env ran 300-900 steps/s instead of ~6000.
_SERIAL_NUMEL = 32768


@contextlib.contextmanager
def _serial_on_cpu(images: torch.Tensor):
    """Run torch single-threaded while building a small CPU pyramid (restored on exit)."""
    threads = torch.get_num_threads()
    if images.is_cuda or images.numel() > _SERIAL_NUMEL or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _check(images: torch.Tensor, loc: torch.Tensor | None, patch: int, scales: int,
           scale_factor: int) -> None:
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    for name, value in (("patch", patch), ("scales", scales), ("scale_factor", scale_factor)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if loc is not None and (loc.dim() != 2 or loc.shape != (images.shape[0], 2)):
        raise ValueError(f"loc must be (B, 2) = ({images.shape[0]}, 2), got {tuple(loc.shape)}")


def crop_origin(loc: torch.Tensor, size: int, height: int, width: int) -> torch.Tensor:
    """Top-left pixel ``(y0, x0)`` of the ``size x size`` square centred on ``loc``, snapped.

    The centre in pixel units is ``(loc + 1) / 2 * (W, H)``; the square starts at
    ``floor(centre - size / 2 + 0.5)``. Computed in float64 so the snap does not depend on the
    dtype of ``loc``.

    Returns:
        ``int64 (B, 2)`` as ``(y0, x0)``.
    """
    loc64 = loc.detach().to(torch.float64)  # (B, 2) = (x, y)
    cx = (loc64[:, 0] + 1.0) * (width / 2.0)
    cy = (loc64[:, 1] + 1.0) * (height / 2.0)
    x0 = torch.floor(cx - size / 2.0 + 0.5)
    y0 = torch.floor(cy - size / 2.0 + 0.5)
    # Far-away locations would overflow int64 arithmetic below; any origin beyond one crop
    # outside the image reads only zeros anyway.
    x0 = x0.clamp(-4.0 * size - 1, width + 1.0)
    y0 = y0.clamp(-4.0 * size - 1, height + 1.0)
    return torch.stack([y0, x0], dim=1).long()  # (B, 2)


@dataclass
class Pyramid:
    """Per-image block means of every scale, at every pixel offset, flat in one buffer."""

    maps: torch.Tensor  # (B, C, L): scale i's (H+k+1) x (W+k+1) map at offsets[i], k=f**i
    offsets: list[int]  # start of each scale's map in the last dim of ``maps``
    height: int
    width: int
    patch: int
    scale_factor: int

    @property
    def scales(self) -> int:
        return len(self.offsets)

    @functools.cached_property
    def _consts(self) -> tuple[torch.Tensor, ...]:
        # Index constants of read_pyramid, made once per pyramid rather than once per read.
        dev, S, p = self.maps.device, self.scales, self.patch
        k = self.scale_factor ** torch.arange(S, device=dev)  # (S,)
        half = (p * k).to(torch.float64)[None] / 2.0  # (1, S)
        step = torch.arange(p, device=dev)[None, None, :] * k[None, :, None]  # (1, S, p)
        kk = k[None, :, None]  # (1, S, 1)
        base = torch.tensor(self.offsets, device=dev)[None, :, None, None]  # (1, S, 1, 1)
        width = (self.width + k + 1)[None, :, None, None]  # (1, S, 1, 1)
        hmax = torch.full_like(kk, self.height)
        wmax = torch.full_like(kk, self.width)
        return half, step, kk, base, width, hmax, wmax

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_consts", None)
        return state

    def assign_rows(self, rows: torch.Tensor, other: Pyramid) -> None:
        """Overwrite some images of the batch in place (used by partial resets)."""
        self.maps[rows] = other.maps


def build_pyramid(images: torch.Tensor, patch: int, scales: int, scale_factor: int = 2,
                  out: Pyramid | None = None) -> Pyramid:
    """The per-image work of the retina: block means of every scale at every offset.

    For scale ``i`` (block side ``k = scale_factor**i``) the map holds, at row ``u + k`` and
    column ``v + k``, the mean of ``images[..., u:u+k, v:v+k]`` (zeros outside the image) for
    ``u`` in ``[-k, H]``; the outermost rows and columns (``u = -k`` or ``u = H``) are blocks
    fully outside, i.e. zero, so reads clamp into them instead of masking.

    Sums come from a float64 summed-area table: exact for float32 and bfloat16 pixels in
    [0, 1] (canvases are multiples of 1/255 rounded to float32), so every map value is the
    block mean rounded once to the image dtype.

    Args:
        images: ``(B, C, H, W)``, float32 or bfloat16, any device.
        patch, scales, scale_factor: as in ``glimpse``.
        out: a pyramid of the same shape whose buffer is reused (no new allocation).
    """
    _check(images, None, patch, scales, scale_factor)
    B, C, H, W = images.shape
    ks = [scale_factor**i for i in range(scales)]
    sizes = [(H + k + 1) * (W + k + 1) for k in ks]
    offsets = [sum(sizes[:i]) for i in range(scales)]
    if out is not None and out.maps.shape == (B, C, sum(sizes)) and \
            out.maps.dtype == images.dtype and out.maps.device == images.device and \
            (out.height, out.width, out.patch, out.scale_factor) == (H, W, patch, scale_factor):
        maps = out.maps
    else:
        maps = torch.empty(B, C, sum(sizes), dtype=images.dtype, device=images.device)
    # On CPU, chunks of images keep the float64 temporaries in cache (about 5x faster at
    # B=4096 than one pass over the batch); the GPU takes the batch at once.
    chunk = B if images.is_cuda else 64
    with _serial_on_cpu(images):
        _fill_maps(images, maps, ks, offsets, sizes, chunk)
    if out is not None and maps is out.maps:
        return out  # keeps its cached read constants
    return Pyramid(maps, offsets, H, W, patch, scale_factor)


def _fill_maps(images: torch.Tensor, maps: torch.Tensor, ks: list[int], offsets: list[int],
               sizes: list[int], chunk: int) -> None:
    """Write every scale's block means of ``images`` into ``maps``, ``chunk`` images at a time."""
    B, C, H, W = images.shape
    for s in range(0, B, chunk):
        x, m = images[s:s + chunk], maps[s:s + chunk]  # (b, C, H, W), (b, C, L)
        b = x.shape[0]
        sat = F.pad(x.to(torch.float64).cumsum(2).cumsum(3), (1, 0, 1, 0))  # (b,C,H+1,W+1)
        for k, off, size in zip(ks, offsets, sizes):
            view = m[:, :, off:off + size].view(b, C, H + k + 1, W + k + 1)
            # Replicate-padding the table by k clamps every block corner into the image.
            P = F.pad(sat, (k, k, k, k), mode="replicate")  # (b, C, H+2k+1, W+2k+1)
            sums = P[:, :, k:, k:] - P[:, :, :-k, k:] - P[:, :, k:, :-k] + P[:, :, :-k, :-k]
            view.copy_(sums / float(k * k))  # (b, C, H+k+1, W+k+1), rounded once


def read_pyramid(pyr: Pyramid, loc: torch.Tensor) -> torch.Tensor:
    """Hard glimpses at ``loc``: every scale in one gather, ``(B, scales, C, patch, patch)``."""
    B, C = pyr.maps.shape[:2]
    S, p, H, W = pyr.scales, pyr.patch, pyr.height, pyr.width
    half, step, kk, base, width, hmax, wmax = pyr._consts
    loc64 = loc.detach().to(torch.float64)  # (B, 2) = (x, y)
    # Snap: the square of side p*k starts at floor(centre - p*k/2 + 0.5) (see crop_origin).
    x0 = torch.floor((loc64[:, 0:1] + 1.0) * (W / 2.0) - half + 0.5)  # (B, S)
    y0 = torch.floor((loc64[:, 1:2] + 1.0) * (H / 2.0) - half + 0.5)  # (B, S)
    lim = float(p * pyr.scale_factor ** (S - 1) + H + W)  # far origins stay in int64 range
    x0, y0 = x0.clamp_(-lim, lim).long(), y0.clamp_(-lim, lim).long()
    # Block rows/columns clamp into the zero border (-k or H) when fully outside the image.
    r = torch.clamp(y0[:, :, None] + step, min=-kk, max=hmax) + kk  # (B, S, p)
    c = torch.clamp(x0[:, :, None] + step, min=-kk, max=wmax) + kk  # (B, S, p)
    idx = base + r[..., :, None] * width + c[..., None, :]  # (B, S, p, p)
    vals = torch.gather(pyr.maps, 2, idx.view(B, 1, S * p * p).expand(B, C, -1))
    return vals.view(B, C, S, p, p).transpose(1, 2)  # (B, S, C, p, p)


def _soft_glimpse(images: torch.Tensor, loc: torch.Tensor, patch: int, scales: int,
                  scale_factor: int) -> torch.Tensor:
    B, C, H, W = images.shape
    out = []
    for i in range(scales):
        k = scale_factor**i
        s = patch * k
        # Pixel centres of the (unsnapped) s x s square, in pixel units then in grid_sample's
        # normalised coordinates (align_corners=False: -1 and 1 are the outer pixel edges).
        offs = torch.arange(s, device=images.device, dtype=loc.dtype) + 0.5 - s / 2.0  # (s,)
        cx = (loc[:, 0:1] + 1.0) * (W / 2.0) + offs  # (B, s)
        cy = (loc[:, 1:2] + 1.0) * (H / 2.0) + offs  # (B, s)
        gx = (2.0 * cx / W - 1.0)[:, None, :].expand(B, s, s)  # (B, s, s)
        gy = (2.0 * cy / H - 1.0)[:, :, None].expand(B, s, s)  # (B, s, s)
        grid = torch.stack([gx, gy], dim=-1).to(images.dtype)  # (B, s, s, 2)
        crop = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                             align_corners=False)  # (B, C, s, s)
        out.append(F.avg_pool2d(crop, k) if k > 1 else crop)  # (B, C, p, p)
    return torch.stack(out, dim=1)  # (B, scales, C, p, p)


def glimpse(
    images: torch.Tensor,
    loc: torch.Tensor,
    patch: int,
    scales: int,
    scale_factor: int = 2,
    mode: str = "hard",
) -> torch.Tensor:
    """Multi-scale glimpses of ``images`` centred on ``loc``.

    Args:
        images: ``(B, C, H, W)``, any H and W, float32 or bfloat16, CPU or CUDA.
        loc: ``(B, 2)`` as ``(x, y)``; ``[-1, 1]`` spans the image, values outside read zeros.
        patch: side of each returned patch.
        scales: number of scales; scale ``i`` covers ``patch * scale_factor**i`` pixels.
        scale_factor: growth of the covered square from one scale to the next.
        mode: ``"hard"`` snaps the squares to the pixel grid (no gradient to ``loc``; the RAM
            retina); ``"soft"`` samples bilinearly with gradients to ``loc`` and ``images``.

    Returns:
        ``(B, scales, C, patch, patch)`` in the dtype of ``images``.
    """
    _check(images, loc, patch, scales, scale_factor)
    if mode == "hard":
        return read_pyramid(build_pyramid(images, patch, scales, scale_factor), loc)
    if mode == "soft":
        return _soft_glimpse(images, loc, patch, scales, scale_factor)
    raise ValueError(f"mode={mode!r} is not one of {MODES}")
