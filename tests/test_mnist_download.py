"""The built-in MNIST downloader, used when torchvision does not import: no network involved.

Every test makes torchvision unimportable (as its CUDA wheel is under the CPU-only torch build)
and points ``hardattn.mnist.MIRRORS`` at ``file://`` folders holding gzip copies of the official
files. Most tests narrow ``RAW_FILES`` to the two label files, which keeps them fast; the one that
goes through ``load_mnist`` serves all four.
"""

from __future__ import annotations

import filecmp
import gzip
import io
import shutil
import sys
import urllib.request
from pathlib import Path

import pytest
import torch

from hardattn import mnist
from hardattn.mnist import MNISTNotFoundError

LABELS = ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte")


def _make_mirror(folder: Path, official: Path, names, damage: str | None = None) -> str:
    """Gzip copies of ``names`` in ``folder``; returns its ``file://`` URL (with a final slash).

    ``damage="byte"`` flips one byte of each uncompressed file (a valid gzip of the wrong
    data); ``damage="cut"`` keeps only the first half of each gzip (a cut-off transfer).
    """
    folder.mkdir(parents=True)
    for name in names:
        body = bytearray((official / name).read_bytes())
        if damage == "byte":
            body[len(body) // 2] ^= 0xFF
        packed = gzip.compress(bytes(body), compresslevel=1, mtime=0)
        if damage == "cut":
            packed = packed[: len(packed) // 2]
        (folder / f"{name}.gz").write_bytes(packed)
    return folder.as_uri() + "/"


@pytest.fixture
def official(data_root: str) -> Path:
    return Path(data_root) / "MNIST" / "raw"


@pytest.fixture(scope="module")
def full_mirror(tmp_path_factory, data_root: str) -> str:
    """All four official files, gzipped once for the module (about half a second)."""
    folder = tmp_path_factory.mktemp("mirror") / "full"
    return _make_mirror(folder, Path(data_root) / "MNIST" / "raw", mnist.RAW_FILES)


@pytest.fixture(autouse=True)
def no_torchvision(monkeypatch):
    # None in sys.modules makes `import torchvision` raise ImportError, whatever is installed.
    monkeypatch.setitem(sys.modules, "torchvision", None)


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """The URLs the downloader opens, in order (the real urlopen still serves them)."""
    urls: list[str] = []
    real = urllib.request.urlopen

    def recording(request, *args, **kwargs):
        urls.append(getattr(request, "full_url", request))
        return real(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", recording)
    return urls


def test_download_into_empty_root_writes_the_official_files_and_load_mnist_reads_them(
        tmp_path, official, full_mirror, monkeypatch, opened):
    monkeypatch.setattr(mnist, "MIRRORS", (full_mirror,))
    root = tmp_path / "fresh"
    try:
        images, labels = mnist.load_mnist("val", root, download=True)
        test_images, test_labels = mnist.load_mnist("test", root, download=True)
        ref_images, ref_labels = mnist.load_mnist("val", official.parent.parent, download=False)
    finally:
        # _load_official caches per root: drop the 47 MB this throwaway root pinned.
        mnist._load_official.cache_clear()
    raw = root / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(mnist.RAW_FILES)  # no temp files
    for name in mnist.RAW_FILES:
        assert filecmp.cmp(raw / name, official / name, shallow=False), name
    assert opened == [f"{full_mirror}{name}.gz" for name in mnist.RAW_FILES]  # each file once
    assert torch.equal(images, ref_images) and torch.equal(labels, ref_labels)
    assert test_images.shape == (10_000, 28, 28) and test_labels.shape == (10_000,)


def test_file_failing_md5_on_first_mirror_is_rejected_and_second_mirror_used(
        tmp_path, official, monkeypatch, opened):
    bad = _make_mirror(tmp_path / "bad", official, LABELS, damage="byte")
    good = _make_mirror(tmp_path / "good", official, LABELS)
    monkeypatch.setattr(mnist, "RAW_FILES", LABELS)
    monkeypatch.setattr(mnist, "MIRRORS", (bad, good))
    root = tmp_path / "root"
    mnist._download(root)
    raw = root / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(LABELS)
    for name in LABELS:
        assert filecmp.cmp(raw / name, official / name, shallow=False), name
    assert opened == [f"{m}{name}.gz" for name in LABELS for m in (bad, good)]


def test_every_mirror_bad_raises_naming_folder_fix_and_each_failure_and_leaves_no_file(
        tmp_path, official, monkeypatch):
    cut = _make_mirror(tmp_path / "cut", official, LABELS, damage="cut")
    wrong = _make_mirror(tmp_path / "wrong", official, LABELS, damage="byte")
    monkeypatch.setattr(mnist, "RAW_FILES", LABELS)
    monkeypatch.setattr(mnist, "MIRRORS", (cut, wrong))
    root = tmp_path / "root"
    with pytest.raises(MNISTNotFoundError) as err:
        mnist.load_mnist("test", root, download=True)
    msg = str(err.value)
    raw = root / "MNIST" / "raw"
    assert str(raw.resolve()) in msg
    assert mnist.DATA_ENV in msg and "place" in msg  # the two fixes
    assert "torchvision does not import" in msg
    first = LABELS[0]
    assert f"{cut}{first}.gz" in msg and f"{wrong}{first}.gz" in msg  # one reason per mirror
    assert "MD5" in msg  # the wrong bytes were caught by their checksum
    assert isinstance(err.value, FileNotFoundError)
    assert list(raw.iterdir()) == [], "a failed download must leave no file, not even a temp one"


def test_interrupted_download_leaves_no_file_under_any_name(tmp_path, official, monkeypatch):
    packed = gzip.compress((official / LABELS[0]).read_bytes(), compresslevel=1, mtime=0)

    class CutByCtrlC(io.BytesIO):  # serves half the gzip, then the user presses Ctrl-C
        def read(self, size=-1):
            if self.tell() >= len(packed) // 2:
                raise KeyboardInterrupt
            return super().read(min(size, 4096) if size and size > 0 else 4096)

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: CutByCtrlC(packed))
    monkeypatch.setattr(mnist, "RAW_FILES", LABELS)
    monkeypatch.setattr(mnist, "MIRRORS", ("file:///unused/",))
    root = tmp_path / "root"
    with pytest.raises(KeyboardInterrupt):
        mnist._download(root)
    assert list((root / "MNIST" / "raw").iterdir()) == []


def test_files_already_present_are_not_fetched_again(tmp_path, official, monkeypatch, opened):
    present, absent = LABELS
    # The mirror lacks `present`: fetching it again would fail the download.
    mirror = _make_mirror(tmp_path / "mirror", official, (absent,))
    monkeypatch.setattr(mnist, "RAW_FILES", LABELS)
    monkeypatch.setattr(mnist, "MIRRORS", (mirror,))
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    shutil.copyfile(official / present, raw / present)
    before = (raw / present).stat()
    mnist._download(tmp_path / "root")
    after = (raw / present).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert filecmp.cmp(raw / absent, official / absent, shallow=False)
    assert opened == [f"{mirror}{absent}.gz"]
