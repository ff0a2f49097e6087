"""The official MNIST files: where they are, how they are read, and the train/val/test split.

``resolve_root`` finds the data root (argument, else ``$HARDATTN_DATA``, else ``./data``);
``load_mnist`` reads the four idx files once per process (``read_idx``), downloads them when
they are absent (``_download``: with torchvision, else with a built-in downloader from the same
mirrors), and cuts the split: ``train`` is the official training set minus its last 10,000
images, ``val`` those 10,000, ``test`` the official test set.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.client
import math
import os
import tempfile
import urllib.request
import zlib
from pathlib import Path

import torch

DATA_ENV = "HARDATTN_DATA"
SPLITS = ("train", "val", "test")
VAL_SIZE = 10_000
DIGIT_SIZE = 28
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# Where the built-in downloader looks, in order: the mirrors torchvision's MNIST uses, so both
# paths fetch the same files. ``<mirror><name>.gz``; tests point this at file:// folders.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# MD5 of each official file once uncompressed. Checked on the uncompressed bytes, not on the .gz
# (torchvision's sums), because those bytes are what lands on disk and what read_idx trusts.
RAW_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# Seconds a stalled connection may stay silent before that mirror counts as failed.
DOWNLOAD_TIMEOUT_S = 60.0
# Sent as User-Agent, as torchvision sends its own: servers may refuse urllib's default one.
_USER_AGENT = "hardattn"


class MNISTNotFoundError(FileNotFoundError):
    """MNIST is neither on disk nor downloadable; the message says where we looked and the fix."""


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$HARDATTN_DATA``, else ``./data``.

    Raises:
        ValueError: the root exists but is a file.
    """
    chosen = root if root is not None else (os.environ.get(DATA_ENV) or "./data")
    path = Path(chosen).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(
            f"data root {str(path)!r} is a file, not a folder; pass a folder that holds (or may "
            f"receive) MNIST/raw/, e.g. set {DATA_ENV}=/path/to/data"
        )
    return path


def _missing_message(root: Path, reason: str) -> str:
    return (
        f"MNIST not found under {str(root / 'MNIST' / 'raw')!r} ({reason}). Fix: set "
        f"{DATA_ENV} to a folder that holds MNIST/raw/ with the four official files "
        f"({', '.join(RAW_FILES)}), or place those files in {str(root / 'MNIST' / 'raw')!r}."
    )


class IdxFormatError(ValueError):
    """An idx file that does not parse; the message names the file and what is wrong."""


# idx type byte -> torch dtype and bytes per element; MNIST only uses 0x08 (unsigned byte).
_IDX_TYPES = {0x08: (torch.uint8, 1)}


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """One idx file (the official MNIST format) as a tensor, checked against its own header.

    The format is a 4-byte magic ``00 00 <type> <ndim>``, then ``ndim`` big-endian int32 sizes,
    then the data. Read by hand rather than through torchvision: it is twenty lines, it costs
    no torchvision import, and it works with the CPU-only torch build, under which
    torchvision's CUDA wheels do not import.

    Raises:
        IdxFormatError: bad magic, unsupported type, or a body whose length the header
            does not predict.
    """
    raw = Path(path).read_bytes()
    name = Path(path).name
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise IdxFormatError(f"{name}: not an idx file (its first bytes are {raw[:4]!r})")
    kind, ndim = raw[2], raw[3]
    if kind not in _IDX_TYPES:
        raise IdxFormatError(f"{name}: idx element type 0x{kind:02x} is not unsigned bytes (0x08)")
    body_start = 4 + 4 * ndim
    if len(raw) < body_start:
        raise IdxFormatError(f"{name}: {len(raw)} bytes, too short for a {ndim}-d idx header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype, width = _IDX_TYPES[kind]
    expected = body_start + width * math.prod(shape)
    if len(raw) != expected:
        raise IdxFormatError(
            f"{name}: header says shape {shape} ({expected} bytes) but the file has {len(raw)} "
            f"bytes (truncated or damaged)"
        )
    # bytearray: torch.frombuffer wants a writable buffer; clone() detaches from it.
    return torch.frombuffer(bytearray(raw[body_start:]), dtype=dtype).reshape(shape).clone()


def _download(root: Path) -> None:
    """Fetch the four raw files into ``root/MNIST/raw``.

    torchvision's MNIST downloader first (the project's documented path); when torchvision does
    not import (e.g. its CUDA wheel under the CPU-only torch build), the built-in
    ``_fetch_raw``, which uses the same mirrors and needs only the standard library.

    Raises:
        MNISTNotFoundError: every way to download failed; the message says why.
    """
    try:
        import torchvision  # deferred: only a download needs it, and it costs about a second
    except Exception as exc:  # ImportError, or a torchvision built for another torch
        _fetch_raw(root, f"torchvision does not import ({exc})")
        return
    try:
        torchvision.datasets.MNIST(root=str(root), train=True, download=True)
        torchvision.datasets.MNIST(root=str(root), train=False, download=True)
    except Exception as exc:  # URLError, checksum mismatch, no space left...
        raise MNISTNotFoundError(_missing_message(root, f"download failed: {exc}")) from exc


# What a mirror can do wrong: unreachable or HTTP error (URLError is an OSError), a body that is
# not gzip (BadGzipFile is too), a cut-off stream (EOFError, zlib.error, IncompleteRead), or
# bytes that are not the official file (ValueError from _fetch_verified).
_MIRROR_ERRORS = (OSError, EOFError, zlib.error, http.client.HTTPException, ValueError)


def _fetch_raw(root: Path, why: str) -> None:
    """Download each absent file of ``RAW_FILES`` into ``root/MNIST/raw``, trying ``MIRRORS``.

    Files already present are left alone (an earlier, interrupted call keeps what it finished:
    each file lands only complete and verified). A mirror that fails or serves a file whose
    MD5 is not the official one is skipped for the next.

    Args:
        root: the data root.
        why: why torchvision was not used; it opens the failure message.

    Raises:
        MNISTNotFoundError: some file failed on every mirror; the message lists, per mirror,
            what went wrong. No partial or unverified file is left behind.
    """
    raw = root / "MNIST" / "raw"
    try:
        raw.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MNISTNotFoundError(
            _missing_message(root, f"download failed: {why}, and {exc}")
        ) from exc
    for name in RAW_FILES:
        dest = raw / name
        if dest.exists():
            continue
        errors = []
        for mirror in MIRRORS:
            url = f"{mirror}{name}.gz"
            try:
                _fetch_verified(url, dest, RAW_MD5[name])
                break
            except _MIRROR_ERRORS as exc:
                errors.append(f"{url}: {str(exc) or type(exc).__name__}")
        else:
            raise MNISTNotFoundError(
                _missing_message(
                    root,
                    f"download failed: {why}, and the built-in downloader got no valid "
                    f"{name} from any mirror: {'; '.join(errors) or 'no mirrors configured'}",
                )
            )


def _fetch_verified(url: str, dest: Path, md5: str) -> None:
    """Stream the gzip file at ``url``, uncompressed, into ``dest`` if its MD5 is ``md5``.

    The bytes go to a temporary file in ``dest``'s folder, are fsynced, and are renamed over
    ``dest`` only once their MD5 matches: a crash, a kill or a cut connection never leaves a
    truncated file under the real name, where ``_load_official`` would take it for data.

    Raises:
        ValueError: the uncompressed bytes are not the official file (MD5 mismatch).
        OSError, EOFError, zlib.error, http.client.HTTPException: transfer or gzip failure.
    """
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response,
            gzip.GzipFile(fileobj=response) as unzipped,
        ):
            while chunk := unzipped.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != md5:
            raise ValueError(
                f"MD5 of the uncompressed file is {digest.hexdigest()}, not the official {md5}"
            )
        os.replace(tmp, dest)
    except BaseException:  # Ctrl-C included: never leave the temporary file behind
        tmp.unlink(missing_ok=True)
        raise
    # Make the rename itself durable; a folder that cannot be opened (Windows) only loses that.
    with contextlib.suppress(OSError):
        dir_fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@functools.lru_cache(maxsize=4)
def _load_official(root_str: str, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    root = Path(root_str)
    raw = root / "MNIST" / "raw"
    present = all((raw / f).exists() for f in RAW_FILES)
    if not present:
        if not download:
            raise MNISTNotFoundError(_missing_message(root, "downloads disabled"))
        _download(root)
    prefix = "train" if train else "t10k"
    try:
        images = read_idx(raw / f"{prefix}-images-idx3-ubyte")
        labels = read_idx(raw / f"{prefix}-labels-idx1-ubyte")
    except (OSError, IdxFormatError) as exc:
        raise MNISTNotFoundError(_missing_message(root, f"files unreadable: {exc}")) from exc
    expected = 60_000 if train else 10_000
    if images.shape != (expected, DIGIT_SIZE, DIGIT_SIZE) or labels.shape != (expected,):
        raise MNISTNotFoundError(
            _missing_message(
                root,
                f"{prefix} files hold images {tuple(images.shape)} and "
                f"labels {tuple(labels.shape)}, expected ({expected}, 28, 28) and ({expected},): "
                f"the files are truncated or not the official ones",
            )
        )
    return images.contiguous(), labels.long().contiguous()


def load_mnist(
    split: str, root: str | os.PathLike | None = None, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits of one split as ``uint8 (N, 28, 28)`` and labels ``int64 (N,)``, on CPU.

    ``train`` is the official training set minus its last 10,000 images, ``val`` those last
    10,000, ``test`` the official test set. Model selection must only ever read ``val``.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        root: data root (see ``resolve_root``).
        download: download the files when they are absent (torchvision, else the built-in
            downloader; see ``_download``).

    Raises:
        ValueError: unknown split.
        MNISTNotFoundError: files absent and not downloadable, or unreadable.
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")
    path = resolve_root(root)
    images, labels = _load_official(str(path.resolve()), split != "test", download)
    if split == "train":
        return images[:-VAL_SIZE], labels[:-VAL_SIZE]
    if split == "val":
        return images[-VAL_SIZE:], labels[-VAL_SIZE:]
    return images, labels
