"""The MNIST data layer keeps the cluttered-MNIST protocol: splits, canvases, fixed sets, errors.

Canvases are checked against an independent, deliberately slow reconstruction: the official idx
files are parsed here with numpy (not through ``hardattn.data.read_idx``), and every canvas
is redrawn pixel by pixel from the ``Canvases`` metadata. Equality proves the number, size,
source and position of every distractor and of the target digit, and the clipping at 255.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from hardattn import data
from hardattn.data import Canvases, CanvasGenerator, CanvasSpec, MNISTNotFoundError

REPO = Path(__file__).resolve().parent.parent
# What the protocol says each preset must be, written out here rather than read from PRESETS.
EXPECTED = {
    "mnist28": {"height": 28, "width": 28, "n_distractors": 0, "distractor_size": 8},
    "translated60": {"height": 60, "width": 60, "n_distractors": 0, "distractor_size": 8},
    "cluttered60": {"height": 60, "width": 60, "n_distractors": 4, "distractor_size": 8},
    "cluttered100": {"height": 100, "width": 100, "n_distractors": 8, "distractor_size": 8},
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- helpers


def _read_idx(path: Path) -> np.ndarray:
    """Parse an idx file (big-endian header: magic, dims) with numpy alone."""
    raw = path.read_bytes()
    n_dims = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(n_dims)]
    return np.frombuffer(bytearray(raw), np.uint8, offset=4 + 4 * n_dims).reshape(dims)


@pytest.fixture(scope="session")
def official(data_root: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The official train (60k) and test (10k) arrays, parsed independently of the package."""
    raw = Path(data_root) / "MNIST" / "raw"
    return {
        part: (_read_idx(raw / f"{prefix}-images-idx3-ubyte"),
               _read_idx(raw / f"{prefix}-labels-idx1-ubyte"))
        for part, prefix in (("train", "train"), ("test", "t10k"))
    }


def _split_of(official: dict, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The protocol's split, cut from the official arrays: val is the last 10,000 of train."""
    if split == "test":
        return official["test"]
    images, labels = official["train"]
    cut = slice(None, 50_000) if split == "train" else slice(50_000, None)
    return images[cut], labels[cut]


def _reconstruct(c: Canvases, bank: np.ndarray, spec: CanvasSpec) -> np.ndarray:
    """Redraw each canvas in integers from its metadata, one crop at a time, clipped at 255.

    Bounds are asserted before slicing because numpy silently wraps negative indices.
    """
    H, W, d, s = spec.height, spec.width, spec.digit_size, spec.distractor_size
    B, D = c.images.shape[0], spec.n_distractors
    out = np.zeros((B, H, W), np.int64)
    for b in range(B):
        for j in range(D):
            src = int(c.distractor_index[b, j])
            sy, sx = (int(v) for v in c.distractor_src[b, j])
            py, px = (int(v) for v in c.distractor_pos[b, j])
            assert 0 <= sy <= d - s and 0 <= sx <= d - s, "crop leaves its source digit"
            assert 0 <= py <= H - s and 0 <= px <= W - s, "distractor leaves the canvas"
            out[b, py:py + s, px:px + s] += bank[src, sy:sy + s, sx:sx + s]
        y, x = (int(v) for v in c.digit_pos[b])
        assert 0 <= y <= H - d and 0 <= x <= W - d, "target digit not fully inside the canvas"
        out[b, y:y + d, x:x + d] += bank[int(c.digit_index[b])]
    return out


def _assert_matches(c: Canvases, bank: np.ndarray, labels: np.ndarray, spec: CanvasSpec) -> None:
    """The generator's canvases equal the independent reconstruction, bit for bit."""
    expected = np.minimum(_reconstruct(c, bank, spec), 255)
    got = c.images[:, 0]
    assert torch.equal(got, torch.from_numpy(expected).float() / 255.0)
    np.testing.assert_array_equal(c.labels.numpy(), labels[c.digit_index.numpy()])


def _generator(split: str, preset: str | CanvasSpec, root: str) -> CanvasGenerator:
    spec = data.get_spec(preset) if isinstance(preset, str) else preset
    return CanvasGenerator.from_split(split, spec, root, download=False)


# ----------------------------------------------------------------------------- splits


def test_presets_have_the_protocol_sizes_and_distractor_counts():
    for name, fields in EXPECTED.items():
        spec = data.get_spec(name)
        for field, value in fields.items():
            assert getattr(spec, field) == value, (name, field)
        assert spec.digit_size == 28
    assert set(data.PRESETS) == set(EXPECTED)


def test_splits_are_50k_10k_10k_and_val_is_the_last_10k_of_official_train(data_root, official):
    for split, size in (("train", 50_000), ("val", 10_000), ("test", 10_000)):
        images, labels = data.load_mnist(split, data_root, download=False)
        assert images.shape == (size, 28, 28) and images.dtype == torch.uint8
        assert labels.shape == (size,) and labels.dtype == torch.int64
        ref_images, ref_labels = _split_of(official, split)
        np.testing.assert_array_equal(images.numpy(), ref_images)
        np.testing.assert_array_equal(labels.numpy(), ref_labels)


# ----------------------------------------------------------------------------- canvases


@pytest.mark.parametrize("preset", sorted(EXPECTED))
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_canvases_are_redrawn_exactly_from_their_split_and_metadata(data_root, official, preset,
                                                                    split):
    # Reconstructing from this split's own official array (and only it) proves that test
    # canvases hold only test digits and train canvases only train digits, distractors included.
    spec = data.get_spec(preset)
    gen = _generator(split, spec, data_root)
    bank, labels = _split_of(official, split)
    assert torch.equal(gen.bank.float(), torch.from_numpy(bank).float())
    c = gen.sample(48, torch.Generator().manual_seed(7))
    assert c.images.shape == (48, 1, spec.height, spec.width) and c.images.dtype == torch.float32
    assert c.distractor_index.shape == (48, spec.n_distractors)
    assert c.distractor_pos.shape == c.distractor_src.shape == (48, spec.n_distractors, 2)
    _assert_matches(c, bank, labels, spec)


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_canvas_pixels_lie_in_0_1_and_are_multiples_of_1_over_255(data_root, preset):
    c = _generator("val", preset, data_root).sample(256, torch.Generator().manual_seed(1))
    assert float(c.images.min()) >= 0.0 and float(c.images.max()) <= 1.0
    k = (c.images * 255.0).round()
    assert torch.equal(k / 255.0, c.images)
    assert float(c.images.max()) == 1.0  # MNIST strokes reach 255, so the top is really used


@pytest.mark.parametrize("preset", ["cluttered60", "cluttered100"])
def test_overlaps_are_clipped_at_255_and_never_hide_the_target(data_root, official, preset):
    spec = data.get_spec(preset)
    c = _generator("val", spec, data_root).sample(256, torch.Generator().manual_seed(3))
    bank, _ = _split_of(official, "val")
    unclipped = _reconstruct(c, bank, spec)
    assert unclipped.max() > 255, "batch too small to exercise the clip; raise it"
    got = (c.images[:, 0] * 255).round().numpy()
    np.testing.assert_array_equal(got, np.minimum(unclipped, 255))
    # Distractors only add ink: under the target every pixel is at least the digit's own value.
    d = spec.digit_size
    for b in range(c.images.shape[0]):
        y, x = (int(v) for v in c.digit_pos[b])
        window = (c.images[b, 0, y:y + d, x:x + d] * 255).round().numpy()
        assert (window >= bank[int(c.digit_index[b])]).all()


def test_positions_cover_every_valid_offset_uniformly_at_the_edges(data_root):
    # An off-by-one in a randint bound would silently drop the last row/column of positions.
    spec = data.get_spec("cluttered60")
    c = _generator("val", spec, data_root).sample(8192, torch.Generator().manual_seed(5))
    d, s = spec.digit_size, spec.distractor_size
    for axis in (0, 1):
        assert int(c.digit_pos[:, axis].min()) == 0
        assert int(c.digit_pos[:, axis].max()) == spec.height - d
        assert int(c.distractor_pos[..., axis].min()) == 0
        assert int(c.distractor_pos[..., axis].max()) == spec.height - s
        assert int(c.distractor_src[..., axis].min()) == 0
        assert int(c.distractor_src[..., axis].max()) == d - s
    # Uniform: each of the 33 target rows gets its share (8192/33 ~ 248, far from 0 or 2x).
    counts = torch.bincount(c.digit_pos[:, 0], minlength=spec.height - d + 1)
    assert int(counts.min()) > 150 and int(counts.max()) < 350
    assert len(set(c.digit_index.tolist())) > 5000  # digits drawn across the whole bank


def test_mnist28_canvas_is_the_digit_itself(data_root, official):
    c = _generator("test", "mnist28", data_root).sample(64, torch.Generator().manual_seed(2))
    assert torch.equal(c.digit_pos, torch.zeros(64, 2, dtype=c.digit_pos.dtype))
    digits = torch.from_numpy(official["test"][0][c.digit_index.numpy()]).float() / 255.0
    assert torch.equal(c.images[:, 0], digits)


@pytest.mark.parametrize("preset", ["translated60", "cluttered100"])
def test_same_seed_gives_identical_canvases_and_another_seed_different_ones(data_root, preset):
    gen = _generator("train", preset, data_root)
    a = gen.sample(64, torch.Generator().manual_seed(11))
    b = gen.sample(64, torch.Generator().manual_seed(11))
    other = gen.sample(64, torch.Generator().manual_seed(12))
    for field in Canvases.__dataclass_fields__:
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert not torch.equal(a.images, other.images)
    assert not torch.equal(a.digit_index, other.digit_index)
    # A fresh generator over the same split draws the same canvases too (no hidden state).
    again = _generator("train", preset, data_root).sample(64, torch.Generator().manual_seed(11))
    assert torch.equal(a.images, again.images)


@pytest.mark.parametrize("preset, scale, size",
                         [("cluttered60", 0.5, 14), ("translated60", 2.0, 56)])
def test_digit_scale_override_resizes_the_digits(data_root, official, preset, scale, size):
    spec = data.get_spec(preset, digit_scale=scale)
    assert spec.digit_size == size
    gen = _generator("val", spec, data_root)
    assert gen.bank.shape == (10_000, size, size)
    bank = gen.bank.numpy()
    assert np.array_equal(bank, np.clip(np.round(bank), 0, 255))  # integer levels, exact sums
    # Resizing keeps ink per unit area: total ink scales with the area, digit by digit.
    ref = _split_of(official, "val")[0].reshape(10_000, -1).sum(1).astype(np.float64)
    ratio = bank.reshape(10_000, -1).sum(1) / ref / scale**2
    assert 0.9 < float(np.median(ratio)) < 1.1
    c = gen.sample(32, torch.Generator().manual_seed(4))
    assert int(c.digit_pos.max()) <= spec.height - size
    _assert_matches(c, bank.astype(np.int64), _split_of(official, "val")[1], spec)


# ----------------------------------------------------------------------------- fixed sets


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """A cache folder of this test's own, so file counts and corruption stay local."""
    path = tmp_path / "cache"
    monkeypatch.setenv(data.CACHE_ENV, str(path))
    return path


@pytest.fixture
def builds(monkeypatch) -> list[str]:
    """Counts how many times fixed_set builds canvases (instead of reading its cache)."""
    calls: list[str] = []
    real = CanvasGenerator.from_split.__func__

    def counting(cls, split, *args, **kwargs):
        calls.append(split)
        return real(cls, split, *args, **kwargs)

    monkeypatch.setattr(CanvasGenerator, "from_split", classmethod(counting))
    return calls


def test_fixed_set_is_deterministic_across_fresh_caches(data_root, tmp_path, monkeypatch, official):
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "a"))
    images, labels = data.fixed_set("cluttered60", "val", n=64, root=data_root)
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "b"))
    images_b, labels_b = data.fixed_set("cluttered60", "val", n=64, root=data_root)
    assert torch.equal(images, images_b) and torch.equal(labels, labels_b)
    assert images.shape == (64, 1, 60, 60) and labels.shape == (64,)
    assert set(labels.tolist()) <= set(range(10))
    other, _ = data.fixed_set("cluttered60", "val", n=64, seed=1, root=data_root)
    assert not torch.equal(images, other)
    test_set, _ = data.fixed_set("cluttered60", "test", n=64, root=data_root)
    assert not torch.equal(images, test_set)


def test_fixed_set_second_call_reads_the_cache_file(data_root, cache_dir, builds, monkeypatch):
    first = data.fixed_set("translated60", "test", n=32, root=data_root)
    files = list(cache_dir.glob("*.pt"))
    assert len(files) == 1 and builds == ["test"]
    second = data.fixed_set("translated60", "test", n=32, root=data_root)
    assert builds == ["test"], "second call regenerated instead of reading the cache"
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    # The cache is the file, not something held in memory: without it, fixed_set rebuilds.
    files[0].unlink()
    data.fixed_set("translated60", "test", n=32, root=data_root)
    assert builds == ["test", "test"] and files[0].exists()
    assert not list(cache_dir.glob("*.tmp*")), "temporary file left behind"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "tampered_pixels"])
def test_fixed_set_rebuilds_a_corrupted_or_truncated_cache(data_root, cache_dir, builds, damage):
    images, labels = data.fixed_set("cluttered60", "val", n=32, root=data_root)
    (path,) = cache_dir.glob("*.pt")
    blob = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not a torch file" * 64)
    elif damage == "truncated":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # a loadable file whose pixels no longer match the stored checksum
        stored = torch.load(path, weights_only=True)
        stored["images"][0, 0, 0, 0] ^= 0xFF
        torch.save(stored, path)
    again, again_labels = data.fixed_set("cluttered60", "val", n=32, root=data_root)
    assert builds == ["val", "val"], "damaged cache was not rebuilt"
    assert torch.equal(again, images) and torch.equal(again_labels, labels)
    # The rebuilt file is whole again: the next call reads it without building.
    data.fixed_set("cluttered60", "val", n=32, root=data_root)
    assert builds == ["val", "val"]


def test_fixed_set_matches_the_generator_it_documents(data_root, cache_dir, official):
    # Cached uint8 round-trips exactly to the float canvases (values are k/255).
    images, labels = data.fixed_set("cluttered100", "test", n=16, root=data_root)
    cached, cached_labels = data.fixed_set("cluttered100", "test", n=16, root=data_root)
    assert torch.equal(images, cached) and torch.equal(labels, cached_labels)
    assert torch.equal((images * 255).round() / 255, images)


@pytest.mark.parametrize("split", ["val", "test"])
def test_a_full_fixed_set_scores_every_digit_of_its_split_exactly_once(data_root, cache_dir,
                                                                        official, split):
    # The protocol reports the official test set: every test digit once, none twice. mnist28
    # canvases are the digits themselves, so the set must be a permutation of the split.
    images, labels = data.fixed_set("mnist28", split, root=data_root)
    digits, digit_labels = _split_of(official, split)
    got = np.sort((images[:, 0].numpy() * 255).round().astype(np.uint8)
                  .reshape(len(images), -1).view(f"V{28 * 28}").ravel())
    want = np.sort(digits.reshape(len(digits), -1).view(f"V{28 * 28}").ravel())
    assert len(got) == len(want) and (got == want).all(), "digits missing or repeated"
    # With clutter too: the labels of a full set are exactly the split's labels.
    _, cluttered_labels = data.fixed_set("cluttered60", split, root=data_root)
    for got_labels in (labels, cluttered_labels):
        assert np.array_equal(np.bincount(got_labels.numpy(), minlength=10),
                              np.bincount(digit_labels, minlength=10))


@pytest.mark.parametrize("digits", [[0, 1], [0, 1, 2, 10_000], [-1, 0, 1, 2]])
def test_sample_rejects_digit_indices_of_the_wrong_shape_or_range(data_root, digits):
    gen = CanvasGenerator.from_split("test", "mnist28", data_root)
    with pytest.raises(ValueError, match=r"digits must be \(4,\) indices in \[0, 10000\)"):
        gen.sample(4, torch.Generator().manual_seed(0), digits=torch.tensor(digits))


@pytest.mark.parametrize("n", [1, 999, 10_000, 25_001])
def test_fixed_set_digit_order_uses_every_digit_before_any_twice(n):
    order = data.digit_order(10_000, n, torch.Generator().manual_seed(3))
    counts = torch.bincount(order, minlength=10_000)
    assert order.shape == (n,) and order.dtype == torch.int64
    assert counts.max() - counts.min() <= 1 and counts.sum() == n
    assert torch.equal(data.digit_order(10_000, n, torch.Generator().manual_seed(3)), order)


# ----------------------------------------------------------------------------- errors


def test_missing_data_folder_without_download_names_the_folder_and_both_fixes(tmp_path):
    for root in (tmp_path / "empty", tmp_path / "absent"):
        if root.name == "empty":
            root.mkdir()
        with pytest.raises(MNISTNotFoundError) as err:
            data.load_mnist("train", root, download=False)
        msg = str(err.value)
        assert str(root.resolve() / "MNIST" / "raw") in msg
        assert data.DATA_ENV in msg  # fix 1: point HARDATTN_DATA at a folder with the files
        assert "place" in msg and "train-images-idx3-ubyte" in msg  # fix 2: put the files there
        assert isinstance(err.value, FileNotFoundError)
    assert not (tmp_path / "absent").exists(), "a failed load must not create folders"


def test_generators_and_fixed_sets_pass_the_missing_data_error_through(tmp_path, cache_dir):
    with pytest.raises(MNISTNotFoundError):
        CanvasGenerator.from_split("val", "cluttered60", tmp_path, download=False)
    with pytest.raises(MNISTNotFoundError):
        data.fixed_set("cluttered60", "val", n=8, root=tmp_path, download=False)
    assert not cache_dir.exists() or not list(cache_dir.iterdir())


def test_data_root_that_is_a_file_raises_value_error_naming_it(tmp_path):
    not_a_dir = tmp_path / "mnist.zip"
    not_a_dir.write_bytes(b"x")
    with pytest.raises(ValueError, match="mnist.zip"):
        data.load_mnist("train", not_a_dir, download=False)
    with pytest.raises(ValueError, match="mnist.zip"):
        data.resolve_root(not_a_dir)


def _raw_copy(tmp_path: Path, data_root: str) -> Path:
    """A root whose raw folder links to the official files; the test then damages one."""
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data.RAW_FILES:
        (raw / name).symlink_to(Path(data_root) / "MNIST" / "raw" / name)
    return raw


def test_truncated_label_file_gives_a_clear_error_naming_the_files(tmp_path, data_root):
    raw = _raw_copy(tmp_path, data_root)
    labels = (raw / "t10k-labels-idx1-ubyte").read_bytes()
    (raw / "t10k-labels-idx1-ubyte").unlink()
    (raw / "t10k-labels-idx1-ubyte").write_bytes(labels[: 8 + 1000])  # header + 1,000 labels
    with pytest.raises(MNISTNotFoundError) as err:
        data.load_mnist("test", tmp_path / "root", download=False)
    msg = str(err.value)
    assert "unreadable" in msg and "t10k-labels-idx1-ubyte" in msg and str(raw.resolve()) in msg


def test_consistent_but_short_label_file_is_rejected_as_not_official(tmp_path, data_root):
    # A well-formed idx file with 1,000 labels reads fine; the shape check must still catch it.
    raw = _raw_copy(tmp_path, data_root)
    labels = (raw / "t10k-labels-idx1-ubyte").read_bytes()
    (raw / "t10k-labels-idx1-ubyte").unlink()
    header = labels[:4] + (1000).to_bytes(4, "big")
    (raw / "t10k-labels-idx1-ubyte").write_bytes(header + labels[8: 8 + 1000])
    with pytest.raises(MNISTNotFoundError, match=r"truncated or not the official") as err:
        data.load_mnist("test", tmp_path / "root", download=False)
    assert "(1000,)" in str(err.value) and "t10k" in str(err.value)


@pytest.mark.parametrize(
    "content, named",
    [
        (b"PK\x03\x04zipfile", "not an idx file"),
        (b"\x00\x00\x0d\x01" + (4).to_bytes(4, "big") + bytes(16), "element type 0x0d"),
        (b"\x00\x00\x08\x03" + (2).to_bytes(4, "big"), "too short for a 3-d idx header"),
        (b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + bytes(6), "shape (5,) (13 bytes)"),
    ],
)
def test_read_idx_rejects_damaged_files_naming_the_file_and_the_damage(tmp_path, content, named):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(data.IdxFormatError, match=re.escape(named)) as err:
        data.read_idx(path)
    assert "t10k-labels-idx1-ubyte" in str(err.value)


def test_read_idx_reads_a_hand_written_file_in_big_endian_order(tmp_path):
    body = bytes(range(6))
    path = tmp_path / "tiny-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x02" + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + body)
    out = data.read_idx(path)
    assert out.dtype == torch.uint8 and out.tolist() == [[0, 1, 2], [3, 4, 5]]


def _fake_torchvision(monkeypatch, mnist_cls) -> None:
    fake = types.ModuleType("torchvision")
    fake.datasets = types.SimpleNamespace(MNIST=mnist_cls)
    monkeypatch.setitem(sys.modules, "torchvision", fake)


def test_download_goes_through_torchvision_then_reads_the_files_it_wrote(tmp_path, data_root,
                                                                          monkeypatch):
    calls = []

    class FakeMNIST:  # writes the official files where torchvision's MNIST would put them
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            raw = Path(root) / "MNIST" / "raw"
            raw.mkdir(parents=True, exist_ok=True)
            for name in data.RAW_FILES:
                if not (raw / name).exists():
                    (raw / name).symlink_to(Path(data_root) / "MNIST" / "raw" / name)

    _fake_torchvision(monkeypatch, FakeMNIST)
    root = tmp_path / "fresh"
    images, labels = data.load_mnist("val", root, download=True)
    assert [c[1:] for c in calls] == [(True, True), (False, True)]
    ref_images, ref_labels = data.load_mnist("val", data_root, download=False)
    assert torch.equal(images, ref_images) and torch.equal(labels, ref_labels)


@pytest.mark.parametrize("failure", ["import", "network"])
def test_failed_download_says_why_and_names_both_fixes(tmp_path, monkeypatch, failure):
    if failure == "import":  # e.g. torchvision's CUDA wheel under the CPU-only torch build
        monkeypatch.setitem(sys.modules, "torchvision", None)
        # The built-in fallback then tries the mirrors: an empty local one, never the network.
        import hardattn.mnist

        (tmp_path / "empty").mkdir()
        monkeypatch.setattr(hardattn.mnist, "MIRRORS", ((tmp_path / "empty").as_uri() + "/",))
    else:
        class Offline:
            def __init__(self, root, train, download):
                raise OSError("URLError: <urlopen error [Errno -3] name resolution>")

        _fake_torchvision(monkeypatch, Offline)
    with pytest.raises(MNISTNotFoundError) as err:
        data.load_mnist("test", tmp_path / "r", download=True)
    msg = str(err.value)
    assert ("torchvision does not import" if failure == "import" else "urlopen error") in msg
    assert data.DATA_ENV in msg and "train-images-idx3-ubyte" in msg


@pytest.mark.parametrize(
    "call, named",
    [
        (lambda: data.get_spec("cluttered61"), "'cluttered61'"),
        (lambda: data.get_spec("mnist28", height=20), "20x28"),
        (lambda: data.get_spec("translated60", width=27), "60x27"),
        (lambda: data.get_spec("cluttered60", n_distractors=-1), "n_distractors=-1"),
        (lambda: data.get_spec("cluttered60", n_distractors=1.5), "n_distractors=1.5"),
        (lambda: data.get_spec("cluttered60", distractor_size=0), "distractor_size=0"),
        (lambda: data.get_spec("cluttered60", digit_scale=0), "digit_scale=0"),
        (lambda: data.get_spec("cluttered60", colour=1), "colour"),
        (lambda: data.load_mnist("validation"), "'validation'"),
        (lambda: data.fixed_set("nope60", "val", n=8), "'nope60'"),
        (lambda: data.fixed_set("cluttered60", "val", n=0), "n=0"),
        (lambda: data.fixed_set("cluttered60", "dev"), "'dev'"),
    ],
)
def test_bad_input_raises_value_error_naming_the_value(call, named):
    with pytest.raises(ValueError) as err:
        call()
    assert named in str(err.value)


@pytest.mark.parametrize("n", [0, -3, 2.0, True])
def test_sample_rejects_a_non_positive_or_non_integer_batch(n):
    digits, labels = torch.zeros(4, 28, 28, dtype=torch.uint8), torch.zeros(4)
    gen = CanvasGenerator(digits, labels, data.PRESETS["cluttered60"])
    with pytest.raises(ValueError, match=rf"n={n!r}"):
        gen.sample(n, torch.Generator().manual_seed(0))


def test_generator_refuses_an_invalid_spec_built_directly():
    digits, labels = torch.zeros(4, 28, 28, dtype=torch.uint8), torch.zeros(4)
    with pytest.raises(ValueError, match="n_distractors=-1"):
        CanvasGenerator(digits, labels, CanvasSpec(60, 60, n_distractors=-1))
    with pytest.raises(ValueError, match="smaller than the digit"):
        CanvasGenerator(digits, labels, CanvasSpec(60, 20))


# ----------------------------------------------------------------------------- CLI


def _cli(*args: str, data_root: str) -> subprocess.CompletedProcess:
    env = {**os.environ, data.DATA_ENV: data_root}
    return subprocess.run([sys.executable, "-m", "hardattn.cli", "data", "preview", *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
                          check=False)


def test_cli_preview_writes_a_valid_png(tmp_path, data_root):
    out = tmp_path / "sub" / "p.png"
    proc = _cli("--preset", "cluttered60", "--out", str(out), "--n", "8", data_root=data_root)
    assert proc.returncode == 0, proc.stderr
    blob = out.read_bytes()
    assert blob[:8] == PNG_MAGIC and blob[12:16] == b"IHDR" and blob.endswith(b"IEND\xaeB`\x82")
    width, height = int.from_bytes(blob[16:20], "big"), int.from_bytes(blob[20:24], "big")
    assert width >= 400 and height >= 100 and len(blob) > 10_000  # a grid, not a blank stub


def test_cli_unknown_preset_exits_non_zero_with_one_line_naming_it(tmp_path, data_root):
    proc = _cli("--preset", "cluttered61", "--out", str(tmp_path / "p.png"), data_root=data_root)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cluttered61" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "p.png").exists()


def test_fixed_set_cache_key_follows_the_canvas_recipe(data_root, monkeypatch, tmp_path):
    from hardattn import data

    monkeypatch.setenv("HARDATTN_CACHE", str(tmp_path))
    data.fixed_set("cluttered60", "val", n=4)
    first = {p.name for p in tmp_path.iterdir()}
    monkeypatch.setitem(data.PRESETS, "cluttered60",
                        data.CanvasSpec(60, 60, n_distractors=2))
    data.fixed_set("cluttered60", "val", n=4)
    assert len({p.name for p in tmp_path.iterdir()} - first) == 1  # a new file, not the old one


def test_presets_without_distractors_ignore_the_distractor_size():
    from hardattn import data

    spec = data.get_spec("translated60", digit_scale=0.25)
    assert spec.digit_size == 7


def test_cli_missing_data_is_one_line(tmp_path):
    import subprocess
    import sys

    empty = tmp_path / "empty"
    empty.mkdir()
    out = subprocess.run([sys.executable, "-m", "hardattn.cli", "data", "preview", "--data-root",
                          str(empty), "--out", str(tmp_path / "p.png"), "--no-download"],
                         capture_output=True,
                         text=True, env={**__import__("os").environ,
                                         "HARDATTN_DATA": str(empty)}, timeout=120)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "HARDATTN_DATA" in out.stderr
