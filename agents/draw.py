"""DRAW-style attention read for classification (Gregor et al. 2015, "DRAW", sec. 3.2 and the
cluttered-MNIST classification experiment of sec. 4.1), trained end to end by backprop.

At each of ``T`` steps the previous core state ``h`` emits five numbers through one linear
layer: the grid centre ``(gx~, gy~)``, the log variance ``log sigma^2`` of the filters, the log
stride ``log delta~`` and the log intensity ``log gamma`` (bounded: ``gamma = exp(2 tanh(log
gamma / 2))``, see ``DrawRead.params``). With canvas ``H x W`` and ``N x N``
filters (``--draw-grid``, default the env's patch)::

    gX = (gx~ + 1) W / 2,  gY = (gy~ + 1) H / 2            (pixel units; (0, 0) = centre)
    delta = (max(H, W) - 1) / (N - 1) * delta~
    mu_i = g + (i - (N - 1) / 2) delta,  i = 0..N-1        (filter centres)
    F[i, a] = exp(-(a + 1/2 - mu_i)^2 / (2 sigma^2)) / Z_i   (a: pixel index, rows sum to 1)
    read = gamma * F_Y  x  F_X^T                              (N x N)

The read head sees the core state detached unless ``--location-grad core`` (full backprop,
as in the DRAW paper): on cluttered60 that path's gradient norm reached 1e6 under a clip of 5
and the class loss stalled (see ``soft_glimpse.py``).

The read goes through RAM's GlimpseNetwork (as a one-scale ``N x N`` patch, with ``(gx~, gy~)``
as its location) and the same Core; the classifier reads the last state. The first read comes
from the zero state, i.e. from the head's bias, initialised to a grid over the whole canvas
(``delta~ = 1``, ``sigma = delta / 2``, ``gamma = 1``). The read's cost grows with the canvas
(``N H W + N^2 W`` multiply-adds per step), unlike a retina's.

``train(cfg)`` reads top to bottom: canvases -> model -> cross-entropy -> update -> logging /
validation / checkpoints (``soft_common.SoftTrainer``).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from hardattn.config import TrainConfig
from hardattn.envs.glimpse_task import GlimpseConfig
from hardattn.networks import Core, GlimpseNetwork, RAMSpec

from .ram_common import lr_at, make_optimizer, safe_step
from .run import Run
from .soft_common import (
    CanvasStream,
    Look,
    SoftOutput,
    SoftTrainer,
    classification_losses,
    task_config,
)


def filterbank(centre: torch.Tensor, delta: torch.Tensor, var: torch.Tensor, n: int,
               size: int) -> torch.Tensor:
    """Normalised 1-D Gaussian filters ``(B, n, size)`` over pixel centres ``a + 1/2``.

    Args:
        centre: ``(B,)`` grid centre in pixels; delta: ``(B,)`` stride; var: ``(B,)`` sigma^2.
    """
    i = torch.arange(n, device=centre.device, dtype=centre.dtype) - (n - 1) / 2.0  # (n,)
    mu = centre[:, None] + i[None] * delta[:, None]  # (B, n)
    a = torch.arange(size, device=centre.device, dtype=centre.dtype) + 0.5  # (size,)
    f = torch.exp(-((a[None, None] - mu[..., None]) ** 2) / (2.0 * var[:, None, None]))
    return f / f.sum(-1, keepdim=True).clamp_min(1e-8)  # (B, n, size)


class DrawRead(nn.Module):
    """The attention head: core state -> the 5 read parameters -> an ``N x N`` read."""

    def __init__(self, hidden: int, n: int, height: int, width: int) -> None:
        super().__init__()
        self.n, self.height, self.width = n, height, width
        self.fc = nn.Linear(hidden, 5)
        self.stride0 = (max(height, width) - 1) / (n - 1)  # delta at delta~ = 1: whole canvas
        with torch.no_grad():  # first read (zero state = the bias): a grid over the whole canvas
            self.fc.weight.mul_(0.1)
            self.fc.bias.copy_(torch.tensor([0.0, 0.0, 2 * math.log(self.stride0 / 2), 0.0, 0.0]))

    def params(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        gx, gy, log_var, log_delta, log_gamma = self.fc(h).unbind(-1)
        # Bounded exponents: a runaway stride/width only saturates, it never overflows. The
        # intensity is bounded smoothly to (e^-2, e^2) (slope 1 at gamma = 1): with DRAW's
        # unbounded exp the class loss inflates gamma until the ReLU core diverges.
        return {"loc": torch.stack([gx, gy], -1),  # (B, 2) centre in [-1, 1] coordinates
                "var": log_var.clamp(-6.0, 2 * math.log(max(self.height, self.width))).exp(),
                "delta": self.stride0 * log_delta.clamp(-6.0, 3.0).exp(),
                "gamma": torch.exp(2.0 * torch.tanh(log_gamma / 2.0))}

    def filters(self, p: dict) -> tuple[torch.Tensor, torch.Tensor]:
        cx = (p["loc"][:, 0] + 1.0) * self.width / 2.0
        cy = (p["loc"][:, 1] + 1.0) * self.height / 2.0
        fx = filterbank(cx, p["delta"], p["var"], self.n, self.width)  # (B, N, W)
        fy = filterbank(cy, p["delta"], p["var"], self.n, self.height)  # (B, N, H)
        return fx, fy

    def forward(self, images: torch.Tensor, p: dict) -> torch.Tensor:
        fx, fy = self.filters(p)
        read = fy @ images[:, 0] @ fx.transpose(1, 2)  # (B, N, N)
        return p["gamma"][:, None, None] * read


class DrawClassifier(nn.Module):
    """Recurrent DRAW reads -> RAM's GlimpseNetwork and Core -> classifier."""

    uses_first = False

    def __init__(self, spec: RAMSpec, task: GlimpseConfig, grid: int,
                 location_grad: str = "head") -> None:
        super().__init__()
        self.location_grad = location_grad  # "head": the read head sees h detached
        canvas = task.spec
        self.spec = spec.validate()  # scales=1, patch=N: the read is one N x N patch
        self.read = DrawRead(spec.core_hidden, grid, canvas.height, canvas.width)
        self.glimpse_net = GlimpseNetwork(spec)
        self.core = Core(spec)
        self.classifier = nn.Linear(spec.core_hidden, spec.n_classes)
        self.n_steps, self.grid = task.n_glimpses, grid

    def _run(self, images, steps, anytime, keep_filters=False):
        T = steps or self.n_steps
        B = images.shape[0]
        state = self.core.initial_state(B, images.device, images.dtype)
        h = Core.output(state)
        locs, step_logits, stats, maps = [], [], [], []
        for _ in range(T):
            # from the previous state (zero at the first read); detached unless
            # --location-grad core (see soft_glimpse.py: that gradient path explodes)
            p = self.read.params(h if self.location_grad == "core" else h.detach())
            patch = self.read(images, p)  # (B, N, N)
            state = self.core(self.glimpse_net(patch[:, None, None], p["loc"]), state)
            h = Core.output(state)
            locs.append(p["loc"])
            stats.append(p)
            if anytime:
                step_logits.append(self.classifier(h))
            if keep_filters:
                fx, fy = self.read.filters(p)
                maps.append(fy.sum(1)[:, :, None] * fx.sum(1)[:, None, :])  # (B, H, W)
        extras = {"draw_stride_px": torch.stack([s["delta"] for s in stats]).mean(),
                  "draw_sigma_px": torch.stack([s["var"] for s in stats]).sqrt().mean(),
                  "draw_gamma": torch.stack([s["gamma"] for s in stats]).mean()}
        out = SoftOutput(logits=self.classifier(h), locs=torch.stack(locs),
                         step_logits=torch.stack(step_logits) if anytime else None,
                         extras=extras)
        return out, (torch.stack(maps) if keep_filters else None)

    def forward(self, images: torch.Tensor, first: torch.Tensor | None = None,
                noise: torch.Generator | None = None, std: float | None = None,
                steps: int | None = None, anytime: bool = False) -> SoftOutput:
        return self._run(images, steps, anytime)[0]

    def look(self, images: torch.Tensor, first: torch.Tensor | None) -> Look:
        out, maps = self._run(images, None, False, keep_filters=True)
        return Look(locs=out.locs, maps=maps)  # maps: weight of each pixel in each read

    def pixels_read(self, H: int, W: int) -> int:
        return self.n_steps * self.grid**2

    def extra_macs(self, H: int, W: int) -> int:
        n = self.grid
        # Filterbanks (about 4 ops per filter tap) and the two products of the read.
        return self.n_steps * (4 * n * (H + W) + n * H * W + n * n * W)


def make_model(cfg: TrainConfig, task: GlimpseConfig) -> DrawClassifier:
    grid = cfg.draw_grid or task.patch
    spec = RAMSpec(scales=1, patch=grid, what_hidden=cfg.what_hidden,
                   where_hidden=cfg.where_hidden, glimpse_hidden=cfg.glimpse_hidden,
                   core_hidden=cfg.core_hidden, core=cfg.core)
    return DrawClassifier(spec, task, grid, cfg.location_grad)


def train(cfg: TrainConfig) -> dict:
    """Train the DRAW-read classifier; returns the final report."""
    with Run(cfg) as run:
        cfg, dev = run.cfg, run.device
        task = task_config(cfg)
        torch.manual_seed(cfg.seed)  # initial weights
        model = make_model(cfg, task).to(dev)
        run.init_weights(model)  # --init-from (fine-tuning, curricula)
        optimizer = make_optimizer(model, cfg)
        canvases = CanvasStream(task, dev, cfg.seed)  # fresh training canvases
        noise = torch.Generator(device=dev).manual_seed(cfg.seed + 1)  # unused: deterministic reads
        trainer = SoftTrainer(run, task, model, optimizer, canvases, noise)

        for update in run.updates(trainer.postfix):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(cfg, update)
            images, labels = canvases.sample(cfg.batch_size)
            out = model(images)  # T reads, each placed by the previous core state
            losses = classification_losses(out, labels)
            applied, grad_norm = safe_step(losses, model, optimizer, cfg)
            trainer.after_update(update, out, labels, losses, applied, grad_norm)
        return trainer.finish()
