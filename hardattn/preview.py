"""``hardattn data preview``: a labelled grid of sample canvases, so a person can see the data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from hardattn import data


@dataclass(frozen=True)
class PreviewConfig:
    """Write a labelled grid of sample canvases to a PNG."""

    preset: str = "cluttered60"
    """Canvas preset: mnist28, translated60, cluttered60 or cluttered100."""
    out: Path = Path("preview.png")
    """PNG file to write."""
    split: Literal["train", "val", "test"] = "train"
    """MNIST split the digits come from."""
    n: int = 16
    """Number of canvases in the grid."""
    seed: int = 0
    """Seed of the torch generator that draws the canvases."""
    data_root: str | None = None
    """MNIST root (else $HARDATTN_DATA, else ./data)."""
    download: bool = True
    """Download MNIST with torchvision when the files are absent."""


def preview(cfg: PreviewConfig) -> Path:
    """Draw ``cfg.n`` canvases and save them as a labelled grid; returns the PNG path."""
    if cfg.n < 1 or cfg.n > 400:
        raise ValueError(f"n={cfg.n} must be in [1, 400]")
    spec = data.get_spec(cfg.preset)
    gen = data.CanvasGenerator.from_split(cfg.split, spec, cfg.data_root, download=cfg.download)
    batch = gen.sample(cfg.n, torch.Generator().manual_seed(cfg.seed))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(cfg.n, 8)
    rows = (cfg.n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 2.1 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < cfg.n:
            ax.imshow(batch.images[i, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"label {int(batch.labels[i])}", fontsize=8)
    fig.suptitle(f"{cfg.preset} ({spec.height}x{spec.width}, {spec.n_distractors} distractors), "
                 f"{cfg.split} split, seed {cfg.seed}", fontsize=9)
    fig.tight_layout()
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(cfg.out, dpi=100)
    plt.close(fig)
    return cfg.out
