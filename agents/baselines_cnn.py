"""Full-image baselines of the RAM paper's tables (Mnih et al. 2014, tables 1-2): ``cnn`` and
``mlp``, trained by backprop on the whole canvas.

- ``cnn`` ("Convolutional, 2 layers"): one conv layer of ``--cnn-channels`` (8) 10x10 filters
  with stride 5, ReLU, a fully connected layer of ``--fc-hidden`` (256) ReLU units, softmax.
- ``mlp`` ("FC, 2 layers"): two fully connected layers of ``--fc-hidden`` (256) ReLU units on the
  flattened canvas, softmax.

They have no attention; their pictures show the input-gradient saliency ``|d logit / d x|``.

``train(cfg)`` reads top to bottom: canvases -> model -> cross-entropy -> update -> logging /
validation / checkpoints (``soft_common.SoftTrainer``).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from hardattn.config import TrainConfig
from hardattn.envs.glimpse_task import GlimpseConfig

from .ram_common import lr_at, make_optimizer, safe_step
from .run import Run
from .soft_common import (
    CanvasStream,
    SoftOutput,
    SoftTrainer,
    classification_losses,
    task_config,
    train_autocast,
)

N_CLASSES = 10


class FullImageNet(nn.Module):
    """A feed-forward classifier of the whole canvas (no glimpses, no steps)."""

    uses_first = False
    n_steps = None

    def __init__(self, body: nn.Sequential) -> None:
        super().__init__()
        self.body = body

    def forward(self, images: torch.Tensor, first: torch.Tensor | None = None,
                noise: torch.Generator | None = None, std: float | None = None,
                steps: int | None = None, anytime: bool = False) -> SoftOutput:
        return SoftOutput(logits=self.body(images))

    def look(self, images: torch.Tensor, first: torch.Tensor | None) -> None:
        return None  # no attention: pictures show the saliency

    def pixels_read(self, H: int, W: int) -> int:
        return H * W

    def extra_macs(self, H: int, W: int) -> int:
        return 0


def cnn(height: int, width: int, channels: int = 8, hidden: int = 256) -> FullImageNet:
    """The RAM paper's convolutional baseline."""
    k, s = min(10, height, width), 5
    oh, ow = (height - k) // s + 1, (width - k) // s + 1
    return FullImageNet(nn.Sequential(
        nn.Conv2d(1, channels, k, stride=s), nn.ReLU(), nn.Flatten(),
        nn.Linear(channels * oh * ow, hidden), nn.ReLU(), nn.Linear(hidden, N_CLASSES)))


def mlp(height: int, width: int, hidden: int = 256) -> FullImageNet:
    """The RAM paper's fully connected baseline."""
    return FullImageNet(nn.Sequential(
        nn.Flatten(), nn.Linear(height * width, hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, N_CLASSES)))


def make_model(cfg: TrainConfig, task: GlimpseConfig) -> FullImageNet:
    spec = task.spec
    if cfg.agent == "cnn":
        return cnn(spec.height, spec.width, cfg.cnn_channels, cfg.fc_hidden)
    return mlp(spec.height, spec.width, cfg.fc_hidden)


def train(cfg: TrainConfig) -> dict:
    """Train the full-image CNN or MLP; returns the final report."""
    with Run(cfg) as run:
        cfg, dev = run.cfg, run.device
        task = task_config(cfg)
        torch.manual_seed(cfg.seed)  # initial weights
        model = make_model(cfg, task).to(dev)
        run.init_weights(model)  # --init-from (fine-tuning, curricula)
        optimizer = make_optimizer(model, cfg)
        canvases = CanvasStream(task, dev, cfg.seed)  # fresh training canvases
        noise = torch.Generator(device=dev).manual_seed(cfg.seed + 1)  # unused: no sampling
        trainer = SoftTrainer(run, task, model, optimizer, canvases, noise)

        for update in run.updates(trainer.postfix):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(cfg, update)
            images, labels = canvases.sample(cfg.batch_size)
            with train_autocast(cfg, dev):  # --precision bf16
                out = model(images)
            losses = classification_losses(out, labels)
            applied, grad_norm = safe_step(losses, model, optimizer, cfg)
            trainer.after_update(update, out, labels, losses, applied, grad_norm)
        return trainer.finish()
