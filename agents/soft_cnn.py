"""Global soft attention over CNN features, recurrent, trained by backprop (``soft-cnn``).

A small CNN turns the canvas into a feature map (conv 5x5 stride 2 -> ReLU -> conv 3x3
stride 2 -> ReLU: ``H/4 x W/4`` positions of ``--feature-channels`` channels), two coordinate
channels are appended (CoordConv, Liu et al. 2018, so a read can depend on position) and a 1x1
conv plus LayerNorm embeds every position into ``d = --core-hidden`` dimensions: keys = values
``k_i``. At
each of ``T`` steps (the env's glimpse count) the core state ``h`` scores every position,
``alpha = softmax_i(score(h, k_i))``, reads the context ``c = sum_i alpha_i k_i`` and feeds
``g = ReLU(W c)`` to the same recurrent Core as RAM (show, attend and tell style: Xu et al.
2015). Scores (``--score``):

- ``dot``: ``h . k`` (Luong et al. 2015), no parameters of its own;
- ``scaled``: ``h . k / sqrt(d)`` (Vaswani et al. 2017);
- ``general``: ``h^T W k``, a learned bilinear form (Luong et al. 2015);
- ``additive`` (the default): ``v . tanh(W h + U k)`` (Bahdanau et al. 2015); it learned
  fastest of the four on a small mnist28 problem. ``W h`` and ``U k`` are
  ``--attention-dim`` wide (default ``d``); the per-step work is ``B x positions x`` that.

With the zero initial state the first read of the three dot-product scores is uniform
(global average pooling); the additive score is already content-based there.

``train(cfg)`` reads top to bottom: canvases -> model -> cross-entropy -> update -> logging /
validation / checkpoints (``soft_common.SoftTrainer``).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from hardattn import attention
from hardattn.config import TrainConfig
from hardattn.envs.glimpse_task import GlimpseConfig
from hardattn.networks import Core, RAMSpec

from .ram_common import lr_at, make_optimizer, safe_step
from .run import Run
from .soft_common import (
    CanvasStream,
    Look,
    SoftOutput,
    SoftTrainer,
    classification_losses,
    task_config,
    train_autocast,
)


class Score(nn.Module):
    """``score(h, K)``: ``(B, d)``, ``(B, P, d)`` -> ``(B, P)`` logits over positions."""

    def __init__(self, kind: str, d: int, attention_dim: int | None = None) -> None:
        super().__init__()
        self.kind, self.d = kind, d
        self.a = attention_dim or d  # additive: width of W h and U k
        if kind == "general":
            self.W = nn.Linear(d, d, bias=False)  # applied to the keys once per image
        elif kind == "additive":
            self.W = nn.Linear(d, self.a)  # query side
            self.U = nn.Linear(d, self.a, bias=False)  # key side, once per image
            self.v = nn.Linear(self.a, 1, bias=False)

    def prepare(self, bank: attention.KeyBank) -> attention.KeyBank | torch.Tensor:
        """The per-image part of the score, computed once for all steps: the keys (dot,
        scaled), ``W k`` (general), both as a ``KeyBank``; ``U k`` (additive), a tensor."""
        if self.kind == "general":
            return attention.KeyBank(self.W(bank.keys))  # (B, P, d)
        if self.kind == "additive":
            return self.U(bank.keys)  # (B, P, a)
        return bank

    def forward(self, h: torch.Tensor, prepared: attention.KeyBank | torch.Tensor) -> torch.Tensor:
        if self.kind == "additive":  # v . tanh(U k + W h); v applied inside (one fused backward)
            return attention.additive_scores(prepared, self.W(h), self.v.weight[0])  # (B, P)
        e = prepared.scores(h)  # (B, P)
        return e / math.sqrt(self.d) if self.kind == "scaled" else e


class SoftAttentionCNN(nn.Module):
    """CNN features, then ``T`` recurrent soft reads over their positions, then a classifier."""

    uses_first = False

    def __init__(self, spec: RAMSpec, task: GlimpseConfig, channels: int, score: str,
                 attention_dim: int | None = None) -> None:
        super().__init__()
        self.spec = spec.validate()
        d = spec.core_hidden
        self.features = nn.Sequential(
            nn.Conv2d(1, max(1, channels // 2), 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(max(1, channels // 2), channels, 3, stride=2, padding=1), nn.ReLU())
        self.embed = nn.Linear(channels + 2, d)  # per position (a 1x1 conv): keys = values
        self.norm = nn.LayerNorm(d)  # unit-scale keys: dot scores and contexts start O(1)
        self.score = Score(score, d, attention_dim)
        self.glimpse = nn.Linear(d, spec.glimpse_hidden)
        self.core = Core(spec)
        self.classifier = nn.Linear(spec.core_hidden, spec.n_classes)
        self.n_steps, self.channels, self.d = task.n_glimpses, channels, d

    def _keys(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(images)  # (B, C, h, w)
        B, _, h, w = f.shape
        ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=f.device, dtype=f.dtype)
        xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=f.device, dtype=f.dtype)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        pos = torch.stack([gx, gy])  # (2, h, w): (x, y) of each position in [-1, 1]
        f = torch.cat([f, pos[None].expand(B, -1, -1, -1)], 1)  # (B, C + 2, h, w)
        # Channels last before the embedding, so that the wide (B, P, d) keys come out
        # contiguous: transposing them instead cost two 7M-value copies per update.
        keys = self.norm(self.embed(f.flatten(2).transpose(1, 2)))  # (B, P, d)
        return keys, pos.flatten(1).T  # (B, P, d), (P, 2)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints before this version hold the embedding as a 1x1 conv: (d, C + 2, 1, 1).
        w = state_dict.get(prefix + "embed.weight")
        if w is not None and w.dim() == 4:
            state_dict[prefix + "embed.weight"] = w.flatten(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _run(self, images, steps, anytime):
        T = steps or self.n_steps
        keys, pos = self._keys(images)
        bank = attention.KeyBank(keys)  # read (and scored) T times: one gradient sum for all
        prepared = self.score.prepare(bank)
        state = self.core.initial_state(images.shape[0], images.device, images.dtype)
        h = Core.output(state)
        alphas, step_logits = [], []
        for _ in range(T):
            alpha = F.softmax(self.score(h, prepared), dim=1)  # (B, P)
            context = bank.read(alpha)  # (B, d)
            state = self.core(F.relu(self.glimpse(context)), state)
            h = Core.output(state)
            alphas.append(alpha)
            if anytime:
                step_logits.append(self.classifier(h))
        alpha = torch.stack(alphas)  # (T, B, P)
        entropy = -(alpha * alpha.clamp_min(1e-12).log()).sum(-1).mean()
        out = SoftOutput(logits=self.classifier(h), locs=alpha @ pos,  # centre of mass (T, B, 2)
                         step_logits=torch.stack(step_logits) if anytime else None,
                         extras={"attention_entropy": entropy,
                                 "attention_max_weight": alpha.max(-1).values.mean()})
        return out, alpha

    def forward(self, images: torch.Tensor, first: torch.Tensor | None = None,
                noise: torch.Generator | None = None, std: float | None = None,
                steps: int | None = None, anytime: bool = False) -> SoftOutput:
        return self._run(images, steps, anytime)[0]

    def look(self, images: torch.Tensor, first: torch.Tensor | None) -> Look:
        out, alpha = self._run(images, None, False)
        T, B = alpha.shape[:2]
        H, W = images.shape[-2:]
        f = self.features(images[:1])
        grid = alpha.view(T * B, 1, *f.shape[-2:])
        maps = F.interpolate(grid, size=(H, W), mode="nearest").view(T, B, H, W)
        return Look(locs=out.locs, maps=maps)

    def pixels_read(self, H: int, W: int) -> int:
        return H * W  # the CNN reads the whole canvas

    def extra_macs(self, H: int, W: int) -> int:
        P = math.ceil(math.ceil(H / 2) / 2) * math.ceil(math.ceil(W / 2) / 2)
        # Per step: the scores (additive: v . tanh(..), a MACs per position; dot-product
        # kinds: k . h, d; W h and U k are Linear calls that the hooks count) and the
        # weighted sum of the values (d per position).
        score = self.score.a if self.score.kind == "additive" else self.d
        return self.n_steps * (P * score + P * self.d)


def make_model(cfg: TrainConfig, task: GlimpseConfig) -> SoftAttentionCNN:
    spec = RAMSpec(scales=1, patch=1, what_hidden=cfg.what_hidden, where_hidden=cfg.where_hidden,
                   glimpse_hidden=cfg.glimpse_hidden, core_hidden=cfg.core_hidden, core=cfg.core)
    return SoftAttentionCNN(spec, task, cfg.feature_channels, cfg.score, cfg.attention_dim)


def train(cfg: TrainConfig) -> dict:
    """Train the soft-attention CNN reader; returns the final report."""
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
            with train_autocast(cfg, dev):  # --precision bf16
                out = model(images)  # features once, then T soft reads
            losses = classification_losses(out, labels)
            applied, grad_norm = safe_step(losses, model, optimizer, cfg)
            trainer.after_update(update, out, labels, losses, applied, grad_norm)
        return trainer.finish()
