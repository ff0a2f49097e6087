"""Shared fixtures. Tests read MNIST from $HARDATTN_DATA (CI: ../shared/data), never the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def _default_data() -> str | None:
    if os.environ.get("HARDATTN_DATA"):
        return os.environ["HARDATTN_DATA"]
    shared = REPO.parent / "shared" / "data"
    return str(shared) if shared.is_dir() else None


_DATA = _default_data()
if _DATA:
    os.environ["HARDATTN_DATA"] = _DATA


@pytest.fixture(scope="session")
def data_root() -> str:
    """The MNIST root; tests that need real digits skip with a reason when it is absent."""
    if not _DATA or not (Path(_DATA) / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.skip("MNIST not found: set HARDATTN_DATA to a folder holding MNIST/raw/")
    return _DATA


@pytest.fixture(autouse=True)
def _small_threads():
    # Tests run on 2 cores; keep torch from oversubscribing them.
    torch.set_num_threads(2)
    yield


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path_factory, monkeypatch):
    # Fixed evaluation sets are cached per session in a temporary folder, never in the repo.
    monkeypatch.setenv("HARDATTN_CACHE", str(tmp_path_factory.getbasetemp() / "hardattn_cache"))
    # Stable-Baselines3 runs without a custom logger make a folder SB3-<time> in the system
    # temp folder; point them at pytest's temporary folder instead.
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path_factory.getbasetemp() / "sb3_logs"))
