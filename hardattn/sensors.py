"""Glimpse sensors: the RAM retina (hard, pixel-snapped) and its bilinear twin (soft).

Coordinates: ``loc`` is ``(x, y)`` in ``[-1, 1]``; ``(0, 0)`` is the image centre, ``(-1, -1)``
the top-left corner and ``(1, 1)`` the bottom-right. Scale ``i`` reads a square of
``patch * scale_factor**i`` pixels centred on ``loc`` and reduces it to ``patch x patch`` by
area averaging (mean over ``k x k`` blocks, ``k = scale_factor**i``); pixels outside the image
read as zero, so any location, even far outside ``[-1, 1]``, is valid.

The hard retina works in two parts so that environments do the per-image work once:
``build_pyramid`` (per image: a summed-area table) and ``read_pyramid`` (per glimpse: one
gather of the ``scales * (patch + 1)**2`` block corners). ``glimpse`` is the two composed; the
env calls ``build_pyramid`` in ``reset`` and ``read_pyramid`` in ``step``. Block means are
exact sums divided by ``k * k``, rounded once to the image dtype.

Images whose pixels are ``n / levels`` for integers ``n`` (8-bit canvases: ``levels=255``) can
say so: their table then holds the integer level sums in int32, half the bytes of the general
float64 table, and a block reads as its exact level sum (a float32 integer below ``2**24``)
divided in float32 by ``levels * k * k``, rounded once: the mean of the true pixel values
``n / levels`` rather than of their float32 roundings (at most one unit in the last place
apart).
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
# CPU build chunk: images whose tables fit in this many bytes, so the copy and both
# cumulative sums run in L2 (cluttered100, 1 MiB L2 per core: 4.0 ms per 128 canvases, not 7.4-8.7
# ms with the former chunks of 64 images).
_BUILD_BYTES = 1 << 20
_READ_ROWS = 256  # CPU read chunk (rows of the batch)
_F32_EXACT = 1 << 24  # float32 holds every integer up to this exactly


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


def _exact_f32(n: int) -> bool:
    """Whether the positive integer ``n`` is a float32: its odd part fits the 24-bit mantissa."""
    odd = n >> ((n & -n).bit_length() - 1)  # n without its factors of two
    return odd < _F32_EXACT and n < 2**128


def levels_fit(height: int, width: int, levels: int, scales: int = 1,
               scale_factor: int = 2) -> bool:
    """Whether ``levels`` reads of ``height x width`` images are exact in float32: every level
    sum and every block divisor ``k * k * levels`` is a float32 integer."""
    divisors = [scale_factor ** (2 * i) * levels for i in range(scales)]
    return height * width * levels <= _F32_EXACT and all(_exact_f32(d) for d in divisors)


def on_level_grid(images: torch.Tensor, levels: int) -> bool:
    """Whether every pixel is ``fl(n / levels)`` for an integer ``n`` in ``[0, levels]``."""
    n = (images * levels).round_().clamp_(0, levels)
    return torch.equal(n / levels, images)


def _check(images: torch.Tensor, loc: torch.Tensor | None, patch: int, scales: int,
           scale_factor: int, levels: int | None = None) -> None:
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    for name, value in (("patch", patch), ("scales", scales), ("scale_factor", scale_factor)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if levels is not None:
        if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= 65535:
            raise ValueError(f"levels={levels!r} must be an integer in [1, 65535] (255 for "
                             f"8-bit images) or None")
        if images.dtype != torch.float32:
            raise ValueError(f"levels={levels} needs float32 images, got {images.dtype}; pass "
                             f"levels=None")
        H, W = images.shape[2:]
        if not levels_fit(H, W, levels, scales, scale_factor):
            raise ValueError(f"levels={levels} on {H}x{W} images with scales={scales}, "
                             f"scale_factor={scale_factor}: level sums (H * W * levels <= 2**24) "
                             f"or block divisors (k * k * levels) are not exact in float32; "
                             f"pass levels=None")
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
    """Per-image summed-area tables: what the retina needs to read any scale at any offset.

    ``maps`` holds, for every image, the table ``T[r, c] = sum(image[:r, :c])`` for ``r`` in
    ``[0, H]`` and ``c`` in ``[0, W]``, flat: the sum of any block is four entries of it, so one
    table serves every scale and a read costs ``scales * (patch + 1)**2`` gathers. The table is
    float64 over the pixels, or int32 over the integer levels ``pixel * levels``.
    """

    maps: torch.Tensor  # (B, C, (H+1)*(W+1)) summed-area table, row-major
    height: int
    width: int
    patch: int
    scales: int
    scale_factor: int
    dtype: torch.dtype  # the images' dtype: reads are rounded to it
    levels: int | None = None  # pixels are n / levels; the table sums the n

    @functools.cached_property
    def _consts(self) -> tuple[torch.Tensor, ...]:
        # Index constants of read_pyramid, made once per pyramid rather than once per read.
        dev, S, p = self.maps.device, self.scales, self.patch
        k = self.scale_factor ** torch.arange(S, device=dev)  # (S,)
        half = (p * k).to(torch.float64)[None, None, :] / 2.0  # (1, 1, S)
        size = torch.tensor([self.width, self.height], device=dev)  # (2,) as loc's (x, y)
        centre = (size.to(torch.float64) / 2.0)[None, :, None]  # (1, 2, 1) pixels per unit
        step = torch.arange(p + 1, device=dev)[None, None, :] * k[:, None]  # (1, S, p+1)
        hi = size[None, :, None, None]  # (1, 2, 1, 1): corners clamp to [0, W] and [0, H]
        # Block sum -> mean: one division (float64, or float32 for level sums: exact integers
        # in, so the quotient is rounded once).
        dtype = torch.float64 if self.levels is None else torch.float32
        area = (k * k * (self.levels or 1)).to(dtype)[None, None, :, None, None]
        return half, centre, step, hi, area  # area: (1, 1, S, 1, 1)

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_consts", None)
        return state

    def assign_rows(self, rows: torch.Tensor, other: Pyramid) -> None:
        """Overwrite some images of the batch in place (used by partial resets)."""
        self.maps[rows] = other.maps


def build_pyramid(images: torch.Tensor, patch: int, scales: int, scale_factor: int = 2,
                  out: Pyramid | None = None, levels: int | None = None) -> Pyramid:
    """The per-image work of the retina: a summed-area table of every image.

    Block sums from the table are exact for float32 and bfloat16 pixels in [0, 1] (canvases
    are multiples of 1/255 rounded to float32; a 100x100 sum needs 46 of float64's 53 bits),
    so every glimpse value is the block mean rounded once to the image dtype. One table serves
    all scales: building it is two cumulative sums, about 10x cheaper on cluttered100 than
    materialising every scale's block means (the previous design), while a read gathers
    ``(patch + 1)**2`` corners per scale instead of ``patch**2`` means.

    Args:
        images: ``(B, C, H, W)``, float32 or bfloat16, any device.
        patch, scales, scale_factor: as in ``glimpse``.
        out: a pyramid of the same shape whose buffer is reused (no new allocation).
        levels: as in ``glimpse``: ``n`` when every pixel is an integer multiple of ``1/n``.
            The caller vouches for it (``glimpse`` checks; the envs know their canvases):
            off-grid pixels would be rounded to the grid here.
    """
    _check(images, None, patch, scales, scale_factor, levels)
    B, C, H, W = images.shape
    L = (H + 1) * (W + 1)
    # int32 for level sums: exact like float64 but half the bytes to gather, and a faster
    # cumulative sum than float32 (whose CPU kernel accumulates in float64).
    table_dtype = torch.float64 if levels is None else torch.int32
    if out is not None and out.maps.shape == (B, C, L) and out.dtype == images.dtype and \
            out.maps.device == images.device and out.levels == levels and \
            (out.height, out.width, out.patch, out.scales, out.scale_factor) == \
            (H, W, patch, scales, scale_factor):
        maps = out.maps
    else:
        maps = torch.empty(B, C, L, dtype=table_dtype, device=images.device)
    table = maps.view(B, C, H + 1, W + 1)  # (B, C, H+1, W+1)
    with _serial_on_cpu(images):
        table[:, :, 0, :] = 0.0
        table[:, :, :, 0] = 0.0
        # On CPU, chunks of images stay in cache through the copy and both sums; the GPU takes
        # the batch at once. The contiguous sum goes first: the strided one then runs over rows
        # already in cache. (Sums of canvas pixels are exact in float64: the order changes no bit.)
        chunk = B if images.is_cuda else max(1, _BUILD_BYTES // (C * L * maps.element_size()))
        for s in range(0, B, chunk):
            inner = table[s:s + chunk, :, 1:, 1:]  # (b, C, H, W) view
            if levels is None:
                inner.copy_(images[s:s + chunk])  # to float64
            else:
                # round(fl(n / levels) * levels) = n: the float32 pixel is within half a unit
                # in the last place of n / levels, far closer than 1/2 after the product.
                inner.copy_(images[s:s + chunk].mul(levels).round_())  # to int32
            inner.cumsum_(3).cumsum_(2)
    if out is not None and maps is out.maps:
        return out  # keeps its cached read constants
    return Pyramid(maps, H, W, patch, scales, scale_factor, images.dtype, levels)


def read_pyramid(pyr: Pyramid, loc: torch.Tensor) -> torch.Tensor:
    """Hard glimpses at ``loc``: every scale in one gather, ``(B, scales, C, patch, patch)``."""
    B, C = pyr.maps.shape[:2]
    S, p, H, W = pyr.scales, pyr.patch, pyr.height, pyr.width
    half, centre, step, hi, area = pyr._consts
    # Snap: the square of side p*k starts at floor(centre - p*k/2 + 0.5) (see crop_origin).
    origin = torch.floor((loc.detach().to(torch.float64)[:, :, None] + 1.0) * centre
                         - half + 0.5)  # (B, 2, S) as (x, y)
    lim = float(p * pyr.scale_factor ** (S - 1) + H + W)  # far origins stay in int64 range
    origin = origin.clamp_(-lim, lim).long()
    # Block corners clamped into the table = zero padding: a block's sum over the image is
    # T[r1, c1] - T[r0, c1] - T[r1, c0] + T[r0, c0] with every corner clamped to [0, H/W].
    corner = torch.minimum((origin[..., None] + step).clamp_(min=0), hi)  # (B, 2, S, p+1)
    c, r = corner[:, 0], corner[:, 1]  # (B, S, p+1) columns (x) and rows (y)
    idx = r[..., :, None] * (W + 1) + c[..., None, :]  # (B, S, p+1, p+1)
    q = S * (p + 1) * (p + 1)
    idx = idx.view(B, 1, q)
    if B <= _READ_ROWS or pyr.maps.is_cuda:
        return _block_means(pyr.maps, idx, S, p, area).to(pyr.dtype).transpose(1, 2)
    out = torch.empty(B, C, S, p, p, dtype=pyr.dtype, device=pyr.maps.device)
    # On CPU, chunks of rows keep the temporaries in cache (4x faster at N=4096).
    for s in range(0, B, _READ_ROWS):
        out[s:s + _READ_ROWS] = _block_means(pyr.maps[s:s + _READ_ROWS],
                                             idx[s:s + _READ_ROWS], S, p, area)
    return out.transpose(1, 2)  # (B, S, C, p, p)


def _block_means(maps: torch.Tensor, idx: torch.Tensor, S: int, p: int,
                 area: torch.Tensor) -> torch.Tensor:
    """Block means from table ``maps (b, C, L)`` at corner indices ``idx (b, 1, q)``."""
    b, C = maps.shape[:2]
    v = torch.gather(maps, 2, idx.expand(b, C, idx.shape[2]))  # (b, C, q)
    v = v.view(b, C, S, p + 1, p + 1)
    rows = v[..., 1:, :] - v[..., :-1, :]  # (b, C, S, p, p+1): column sums of blocks
    sums = rows[..., 1:] - rows[..., :-1]  # (b, C, S, p, p) block sums, exact
    return sums.to(area.dtype) / area  # int32 level sums < 2**24 convert to float32 exactly


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
    levels: int | None = None,
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
        levels: hard mode only: ``n`` when every pixel is an integer multiple of ``1/n`` (255
            for 8-bit images such as the canvases), for exact int32 level sums (a faster
            table; see the module docstring); ``None`` for any pixels.

    Raises:
        ValueError: bad sizes or shapes, or ``levels`` given for pixels off its grid.

    Returns:
        ``(B, scales, C, patch, patch)`` in the dtype of ``images``.
    """
    _check(images, loc, patch, scales, scale_factor)
    if levels is not None and mode == "hard" and images.dtype == torch.float32 and \
            not on_level_grid(images, levels):
        raise ValueError(f"levels={levels}: some pixels are not multiples of 1/{levels}; pass "
                         f"levels=None to read them as they are")
    if mode == "hard":
        return read_pyramid(build_pyramid(images, patch, scales, scale_factor, levels=levels),
                            loc)
    if mode == "soft":
        return _soft_glimpse(images, loc, patch, scales, scale_factor)
    raise ValueError(f"mode={mode!r} is not one of {MODES}")
