"""The glimpse sensor: the hard retina against a slow per-pixel reference, the soft twin's
gradients, shapes, input validation and device placement.

The reference below is written from the spec in ``hardattn/sensors.py`` and shares no code
with it: scale ``i`` reads the ``patch * f**i`` square whose top-left pixel is
``floor(centre - size / 2 + 0.5)`` with ``centre = (loc + 1) / 2 * (W, H)``, pixels outside the
image read 0, and each ``k x k`` block (``k = f**i``) is averaged in float64 and rounded once
to the image dtype.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hardattn import sensors
from hardattn.sensors import glimpse

CUDA = torch.cuda.is_available()


def reference_glimpse(images: torch.Tensor, loc: torch.Tensor, patch: int, scales: int,
                      scale_factor: int) -> torch.Tensor:
    """Hard glimpses by per-pixel Python loops: ``(B, scales, C, patch, patch)``.

    Args:
        images: ``(B, C, H, W)`` float32 or bfloat16 on CPU.
        loc: ``(B, 2)`` as ``(x, y)``, any float dtype.
    """
    B, C, H, W = images.shape
    pixels = images.to(torch.float64).tolist()  # exact: float32 and bfloat16 embed in float64
    means = [[[[[0.0] * patch for _ in range(patch)] for _ in range(C)] for _ in range(scales)]
             for _ in range(B)]
    for b in range(B):
        x, y = float(loc[b, 0]), float(loc[b, 1])
        for i in range(scales):
            k = scale_factor**i
            size = patch * k
            x0 = math.floor((x + 1.0) / 2.0 * W - size / 2.0 + 0.5)
            y0 = math.floor((y + 1.0) / 2.0 * H - size / 2.0 + 0.5)
            for c in range(C):
                for r in range(patch):
                    for q in range(patch):
                        total = 0.0
                        for yy in range(y0 + r * k, y0 + r * k + k):
                            for xx in range(x0 + q * k, x0 + q * k + k):
                                if 0 <= yy < H and 0 <= xx < W:
                                    total += pixels[b][c][yy][xx]
                        means[b][i][c][r][q] = total / (k * k)
    return torch.tensor(means, dtype=torch.float64).to(images.dtype)


def special_locations(H: int, W: int, patch: int) -> torch.Tensor:
    """Corners, centre, snap boundaries and locations far outside ``[-1, 1]``, as ``(n, 2)``."""
    # A centre exactly half a pixel off the grid puts ``centre - size/2 + 0.5`` on an integer
    # for odd ``size``: the floor's tie case.
    half_x, half_y = 2.0 * (W // 3 + 0.5) / W - 1.0, 2.0 * (H // 2 + 0.5) / H - 1.0
    return torch.tensor([
        [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0],  # the four corners
        [0.0, 0.0],  # exact centre
        [half_x, half_y], [-half_x, half_y],
        [1.1, -1.05], [-1.2, 0.3],  # partly outside
        [5.0, -3.0], [-40.0, 0.25], [0.1, 17.0],  # fully outside
        [1e6, -1e6], [1e30, 0.0], [-1e30, -1e30], [3e38, -3e38],  # far outside (int64 range)
    ], dtype=torch.float32)


def random_images(B: int, C: int, H: int, W: int, dtype: torch.dtype,
                  gen: torch.Generator) -> torch.Tensor:
    """Half canvases-like pixels (multiples of 1/255), half arbitrary uniform pixels."""
    canvas_like = torch.randint(0, 256, (B, C, H, W), generator=gen).float() / 255.0
    uniform = torch.rand(B, C, H, W, generator=gen)
    mask = torch.rand(B, C, H, W, generator=gen) < 0.5
    return torch.where(mask, canvas_like, uniform).to(dtype)


CONFIGS = [
    # (H, W, C, patch, scales, scale_factor)
    (28, 28, 1, 8, 1, 2),  # mnist28
    (60, 60, 1, 12, 3, 2),  # cluttered60
    (13, 21, 3, 3, 3, 2),  # non-square, C > 1, crops larger than the image
    (17, 9, 2, 5, 2, 3),  # non-square, odd patch, scale_factor 3 (block means not dyadic)
    (7, 11, 1, 1, 4, 2),  # 1-pixel patch: plain block means
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("H,W,C,patch,scales,scale_factor", CONFIGS,
                         ids=[f"{c[0]}x{c[1]}c{c[2]}p{c[3]}s{c[4]}f{c[5]}" for c in CONFIGS])
def test_hard_glimpse_equals_per_pixel_reference_exactly(H, W, C, patch, scales, scale_factor,
                                                          dtype):
    gen = torch.Generator().manual_seed(H * 1000 + W * 10 + patch)
    special = special_locations(H, W, patch)
    rand = torch.rand(8, 2, generator=gen) * 2.0 - 1.0
    loc = torch.cat([special, rand])  # (B, 2)
    images = random_images(loc.shape[0], C, H, W, dtype, gen)
    got = glimpse(images, loc, patch, scales, scale_factor, mode="hard")
    want = reference_glimpse(images, loc, patch, scales, scale_factor)
    assert got.dtype == dtype
    assert got.shape == want.shape
    bad = (got != want).nonzero()
    assert torch.equal(got, want), f"first mismatches at (b, scale, c, r, q) = {bad[:5].tolist()}"


@settings(max_examples=25, deadline=None)
@given(
    H=st.integers(1, 16), W=st.integers(1, 16), patch=st.integers(1, 6),
    scales=st.integers(1, 3), scale_factor=st.integers(1, 3),
    xy=st.lists(st.floats(-1.5, 1.5, width=32), min_size=2, max_size=2),
    seed=st.integers(0, 2**16),
)
def test_hard_glimpse_equals_reference_for_any_geometry(H, W, patch, scales, scale_factor, xy,
                                                       seed):
    gen = torch.Generator().manual_seed(seed)
    images = random_images(1, 1, H, W, torch.float32, gen)
    loc = torch.tensor([xy], dtype=torch.float32)
    got = glimpse(images, loc, patch, scales, scale_factor)
    assert torch.equal(got, reference_glimpse(images, loc, patch, scales, scale_factor))


def test_hard_glimpse_snaps_in_float64_whatever_the_dtype_of_loc():
    gen = torch.Generator().manual_seed(1)
    images = random_images(6, 1, 20, 30, torch.float32, gen)
    loc64 = torch.rand(6, 2, generator=gen, dtype=torch.float64) * 2.4 - 1.2
    for loc in (loc64, loc64.float(), loc64.bfloat16()):
        want = reference_glimpse(images, loc, 4, 2, 2)
        assert torch.equal(glimpse(images, loc, 4, 2, 2), want), loc.dtype


def test_reused_pyramid_buffer_reads_like_a_fresh_one():
    # The env rebuilds its pyramid into the previous episode's buffer on every reset.
    gen = torch.Generator().manual_seed(2)
    first = random_images(5, 1, 24, 24, torch.float32, gen)
    second = random_images(5, 1, 24, 24, torch.float32, gen)
    loc = torch.rand(5, 2, generator=gen) * 2.0 - 1.0
    old = sensors.build_pyramid(first, 6, 2, 2)
    sensors.read_pyramid(old, loc)  # caches the read constants
    reused = sensors.build_pyramid(second, 6, 2, 2, out=old)
    assert reused.maps.data_ptr() == old.maps.data_ptr()
    assert torch.equal(sensors.read_pyramid(reused, loc), reference_glimpse(second, loc, 6, 2, 2))


def reference_level_glimpse(images: torch.Tensor, loc: torch.Tensor, patch: int, scales: int,
                            scale_factor: int, levels: int) -> torch.Tensor:
    """Hard glimpses of images whose pixels are ``n / levels``: each block's integer level sum,
    divided by ``levels * k * k`` in IEEE float32 (both operands exact, so rounded once)."""
    ints = (images.double() * levels).round().long()  # (B, C, H, W) the levels n
    # The float64 reference over integer "pixels" gives exact block sums * k * k / (k * k).
    sums = reference_glimpse(ints.double(), loc, patch, scales, scale_factor)
    area = torch.tensor([scale_factor ** (2 * i) for i in range(scales)], dtype=torch.float64)
    totals = (sums * area[None, :, None, None, None]).round().numpy().astype(np.float32)
    divisor = (area * levels).numpy().astype(np.float32)[None, :, None, None, None]
    return torch.from_numpy(totals / divisor)  # float32 / float32: one IEEE rounding


@pytest.mark.parametrize("H,W,C,patch,scales,scale_factor", CONFIGS,
                         ids=[f"{c[0]}x{c[1]}c{c[2]}p{c[3]}s{c[4]}f{c[5]}" for c in CONFIGS])
def test_level_glimpse_equals_the_rounded_exact_level_mean(H, W, C, patch, scales, scale_factor):
    gen = torch.Generator().manual_seed(H * 7 + W)
    loc = torch.cat([special_locations(H, W, patch), torch.rand(8, 2, generator=gen) * 2 - 1])
    images = torch.randint(0, 256, (loc.shape[0], C, H, W), generator=gen).float() / 255.0
    got = glimpse(images, loc, patch, scales, scale_factor, levels=255)
    want = reference_level_glimpse(images, loc, patch, scales, scale_factor, 255)
    assert got.dtype == torch.float32
    assert torch.equal(got, want), f"mismatches at {(got != want).nonzero()[:5].tolist()}"
    # Against the float64 table over the float32 pixels: at most one unit in the last place.
    general = glimpse(images, loc, patch, scales, scale_factor)
    assert torch.equal(got, general) or \
        ((got - general).abs() <= torch.finfo(torch.float32).eps * general.abs()).all()


def test_levels_for_pixels_off_their_grid_raise_naming_the_fix():
    images = torch.full((1, 1, 8, 8), 0.3)  # 0.3 * 255 = 76.5: not a level
    with pytest.raises(ValueError, match=r"levels=255: some pixels.*levels=None"):
        glimpse(images, torch.zeros(1, 2), 2, 1, levels=255)
    assert sensors.on_level_grid(torch.full((1, 1, 8, 8), 77 / 255.0), 255)


@pytest.mark.parametrize("kwargs,shape,dtype,named", [
    (dict(levels=0), (1, 1, 8, 8), torch.float32, "levels=0"),
    (dict(levels=True), (1, 1, 8, 8), torch.float32, "levels=True"),
    (dict(levels=70000), (1, 1, 8, 8), torch.float32, "levels=70000"),
    (dict(levels=255), (1, 1, 8, 8), torch.bfloat16, "bfloat16"),
    (dict(levels=255), (1, 1, 300, 300), torch.float32, "300x300"),
    (dict(levels=255, scales=8, scale_factor=3), (1, 1, 8, 8), torch.float32, "scale_factor=3"),
])
def test_bad_levels_raise_value_error_naming_the_value_and_the_fix(kwargs, shape, dtype, named):
    call = {**dict(patch=2, scales=1, scale_factor=2), **kwargs}
    with pytest.raises(ValueError, match=re.escape(named)) as err:
        glimpse(torch.zeros(shape, dtype=dtype), torch.zeros(shape[0], 2), **call)
    assert "None" in str(err.value)  # the fix: levels=None


@pytest.mark.parametrize("tables_per_chunk", [0, 1, 3, 100])
def test_pyramid_built_in_cache_sized_chunks_equals_reference(monkeypatch, tables_per_chunk):
    # On CPU the tables are built a cache-sized chunk of images at a time; a remainder chunk,
    # one-image chunks (a table larger than the chunk budget) and one chunk must agree.
    B, C, H, W = 8, 2, 19, 23
    monkeypatch.setattr(sensors, "_BUILD_BYTES", tables_per_chunk * C * (H + 1) * (W + 1) * 8)
    gen = torch.Generator().manual_seed(3)
    images = random_images(B, C, H, W, torch.float32, gen)
    loc = torch.rand(B, 2, generator=gen) * 2.2 - 1.1
    got = sensors.read_pyramid(sensors.build_pyramid(images, 5, 3, 2), loc)
    assert torch.equal(got, reference_glimpse(images, loc, 5, 3, 2))


@pytest.mark.parametrize("mode", sensors.MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_output_is_batch_scales_channels_patch_patch_in_image_dtype(mode, dtype):
    images = torch.rand(4, 3, 19, 23).to(dtype)
    loc = torch.rand(4, 2) * 2.0 - 1.0
    out = glimpse(images, loc, 5, 3, 2, mode=mode)
    assert out.shape == (4, 3, 3, 5, 5)
    assert out.dtype == dtype


def test_soft_glimpse_gradients_to_loc_and_image_pass_gradcheck():
    gen = torch.Generator().manual_seed(3)
    images = torch.rand(2, 2, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    # Away from pixel centres, where bilinear sampling is not differentiable in loc.
    loc = (torch.rand(2, 2, generator=gen, dtype=torch.float64) * 1.6 - 0.8).requires_grad_()

    def fn(img: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        return glimpse(img, where, 2, 2, 2, mode="soft")

    assert torch.autograd.gradcheck(fn, (images, loc), eps=1e-6, atol=1e-5)
    loc_grad = torch.autograd.grad(fn(images, loc).sum(), loc)[0]
    assert loc_grad.abs().sum() > 0  # loc really receives a gradient


def test_hard_glimpse_gives_no_gradient_to_loc():
    images = torch.rand(1, 1, 8, 8, requires_grad=True)
    loc = torch.zeros(1, 2, requires_grad=True)
    out = glimpse(images, loc, 2, 2)
    assert not out.requires_grad or torch.autograd.grad(
        out.sum(), loc, allow_unused=True)[0] is None


@pytest.mark.parametrize("H,W,patch,scales", [(16, 16, 4, 2), (12, 20, 2, 3), (9, 15, 6, 1)])
def test_soft_equals_hard_where_crops_are_pixel_aligned(H, W, patch, scales):
    # With an even patch, every scale's square starts on a pixel edge when the centre is an
    # integer pixel coordinate; bilinear sampling at pixel centres then reads pixels exactly.
    assert patch % 2 == 0
    gen = torch.Generator().manual_seed(H + W)
    cx = torch.tensor([W // 2, 0, W, 3, W - 1, -4, W + 3], dtype=torch.float64)
    cy = torch.tensor([H // 2, 0, H, H - 2, 1, H + 2, -1], dtype=torch.float64)
    loc = torch.stack([2.0 * cx / W - 1.0, 2.0 * cy / H - 1.0], dim=1)  # (B, 2)
    images = torch.rand(loc.shape[0], 2, H, W, generator=gen, dtype=torch.float64)
    hard = glimpse(images.float(), loc.float(), patch, scales, 2, mode="hard")
    soft = glimpse(images, loc, patch, scales, 2, mode="soft")
    torch.testing.assert_close(soft.float(), hard, atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", sensors.MODES)
@pytest.mark.parametrize("images_shape,loc_shape,match", [
    ((1, 8, 8), (1, 2), r"images must be \(B, C, H, W\), got shape \(1, 8, 8\)"),
    ((1, 1, 1, 8, 8), (1, 2), r"got shape \(1, 1, 1, 8, 8\)"),
    ((2, 1, 8, 8), (2, 3), r"loc must be \(B, 2\).*got \(2, 3\)"),
    ((2, 1, 8, 8), (3, 2), r"loc must be \(B, 2\).*got \(3, 2\)"),
    ((2, 1, 8, 8), (2,), r"loc must be \(B, 2\).*got \(2,\)"),
])
def test_wrong_dimensions_raise_value_error_naming_the_shape(mode, images_shape, loc_shape,
                                                             match):
    with pytest.raises(ValueError, match=match):
        glimpse(torch.zeros(images_shape), torch.zeros(loc_shape), 2, 1, mode=mode)


@pytest.mark.parametrize("mode", sensors.MODES)
@pytest.mark.parametrize("kwargs,match", [
    ({"patch": 0, "scales": 1, "scale_factor": 2}, "patch=0"),
    ({"patch": -3, "scales": 1, "scale_factor": 2}, "patch=-3"),
    ({"patch": 2.0, "scales": 1, "scale_factor": 2}, "patch=2.0"),
    ({"patch": True, "scales": 1, "scale_factor": 2}, "patch=True"),
    ({"patch": 2, "scales": 0, "scale_factor": 2}, "scales=0"),
    ({"patch": 2, "scales": 1, "scale_factor": 0}, "scale_factor=0"),
])
def test_bad_sizes_raise_value_error_naming_the_value(mode, kwargs, match):
    with pytest.raises(ValueError, match=match):
        glimpse(torch.zeros(1, 1, 8, 8), torch.zeros(1, 2), mode=mode, **kwargs)


def test_unknown_mode_raises_value_error_naming_it():
    with pytest.raises(ValueError, match="mode='x'"):
        glimpse(torch.zeros(1, 1, 8, 8), torch.zeros(1, 2), 2, 1, mode="x")


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_cuda_glimpse_stays_on_device_and_equals_cpu(dtype):
    gen = torch.Generator().manual_seed(4)
    special = special_locations(60, 60, 12)
    loc = torch.cat([special, torch.rand(48, 2, generator=gen) * 2.2 - 1.1])
    images = random_images(loc.shape[0], 2, 60, 60, dtype, gen)
    cpu = glimpse(images, loc, 12, 3, 2)
    gpu = glimpse(images.cuda(), loc.cuda(), 12, 3, 2)
    assert gpu.device.type == "cuda" and gpu.dtype == dtype
    assert torch.equal(gpu.cpu(), cpu)
    soft_cpu = glimpse(images.float(), loc, 12, 3, 2, mode="soft")
    soft_gpu = glimpse(images.float().cuda(), loc.cuda(), 12, 3, 2, mode="soft")
    assert soft_gpu.device.type == "cuda"
    torch.testing.assert_close(soft_gpu.cpu(), soft_cpu, atol=1e-5, rtol=1e-5)
    if dtype == torch.float32:  # the 8-bit level table (float32 sums) on the device
        eight = (images * 255).round() / 255
        assert torch.equal(glimpse(eight.cuda(), loc.cuda(), 12, 3, 2, levels=255).cpu(),
                           glimpse(eight, loc, 12, 3, 2, levels=255))


def test_small_cpu_pyramids_restore_the_thread_count_and_match_threaded_ones():
    # Small CPU pyramids are built single-threaded (torch's pad and cumsum kernels wake the
    # thread pool for any size); the caller's setting must come back, and values not change.
    gen = torch.Generator().manual_seed(5)
    small = random_images(1, 1, 60, 60, torch.float32, gen)  # below the serial threshold
    large = random_images(80, 1, 60, 60, torch.float32, gen)  # above it: threads kept
    loc = torch.rand(1, 2, generator=gen) * 2 - 1
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        out = glimpse(small, loc, 12, 3)
        assert torch.get_num_threads() == 2
        glimpse(large, loc.expand(80, 2), 12, 3)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert torch.equal(out, reference_glimpse(small, loc, 12, 3, 2))
