"""What the backprop baselines share: task, training canvases, evaluation, bookkeeping, costs.

The soft and full-image agents (``soft_glimpse.py``, ``draw.py``, ``soft_cnn.py``,
``baselines_cnn.py``) have no environment and no REINFORCE: each update draws ``batch_size``
fresh canvases of the train split from a ``CanvasGenerator`` driven by a seeded
``torch.Generator``, runs the model and minimises the cross-entropy of its last step. Everything
around that update is here, mirroring ``training.Trainer`` so that the two families log the
same tags, select on the same fixed validation canvases, score the same fixed test canvases
once, and checkpoint/resume through ``Run`` in the same way. Seeds: initial weights
``torch.manual_seed(seed)``, training canvases ``seed``, first glimpses and location noise
``seed + 1``; all generator states are in every checkpoint (resume equals uninterrupted).

A model of this family is an ``nn.Module`` with::

    forward(images (B,1,H,W), first (B,2) | None, noise: Generator | None = None,
            std: float | None = None, steps: int | None = None, anytime: bool = False)
        -> SoftOutput
    look(images, first) -> Look | None        # where it attends, for pictures (no grad)
    n_steps: int | None                       # glimpses / reads per image (None: one pass)
    uses_first: bool                          # takes a first glimpse location
    pixels_read(H, W) -> int; extra_macs(H, W) -> int
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import hardattn.envs  # noqa: F401  (registers the env ids)
from hardattn import data
from hardattn.config import TrainConfig
from hardattn.envs.glimpse_task import GlimpseConfig

from .bookkeeping import Bookkeeper
from .ram_common import glimpse_paths_image
from .run import Run
from .trainer_state import torch_stream

# ----------------------------------------------------------------------------- task and data


def task_config(cfg: TrainConfig) -> GlimpseConfig:
    """The glimpse task of ``cfg.env`` (preset, sensor, glimpse count), resolved.

    The backprop agents use it for the canvases (preset), the sensor geometry (patch, scales,
    scale factor) and the number of glimpses / read steps, exactly as the hard agents' env does.
    """
    preset = gym.spec(cfg.env_id).kwargs["preset"]
    return GlimpseConfig(preset=preset, n_glimpses=cfg.n_glimpses, patch=cfg.patch,
                         scales=cfg.scales, first_glimpse=cfg.first_glimpse,
                         canvas=cfg.canvas_overrides()).resolved()


class CanvasStream:
    """Fresh training canvases of the train split, from one seeded generator on ``device``."""

    def __init__(self, task: GlimpseConfig, device: torch.device, seed: int) -> None:
        self.canvas = data.CanvasGenerator.from_split("train", task.spec, task.data_root, device)
        self.rng = torch.Generator(device=device).manual_seed(seed)

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images (n, 1, H, W), labels (n,))``."""
        batch = self.canvas.sample(n, self.rng)
        return batch.images, batch.labels


def first_locs(task: GlimpseConfig, n: int, generator: torch.Generator,
               device: torch.device) -> torch.Tensor:
    """Where the first glimpse is taken, ``(n, 2)``: the centre, or uniform in ``[-1, 1]^2``."""
    if task.first_glimpse == "center":
        return torch.zeros(n, 2, device=device)
    return torch.rand(n, 2, generator=generator, device=generator.device).to(device) * 2 - 1


def make_model(cfg: TrainConfig, task: GlimpseConfig) -> nn.Module:
    """The model of a backprop agent (each agent module defines ``make_model``)."""
    from .run import AGENT_MODULES

    return importlib.import_module(AGENT_MODULES[cfg.agent]).make_model(cfg, task)


@dataclass
class SoftOutput:
    """A forward pass of a backprop agent."""

    logits: torch.Tensor  # (B, K) after the last step
    locs: torch.Tensor | None = None  # (T, B, 2) centre of each glimpse / read, in [-1, 1]
    step_logits: torch.Tensor | None = None  # (T, B, K) classifier after each step (anytime)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # scalars, attention/<key>
    std: torch.Tensor | None = None  # (2,) location std of a stochastic model


@dataclass
class Look:
    """Where a model attends on some canvases, for pictures."""

    locs: torch.Tensor | None = None  # (T, n, 2) centres (drawn as a path)
    maps: torch.Tensor | None = None  # (T, n, H, W) non-negative attention weight per pixel
    boxes: bool = False  # draw the glimpse squares of the task's retina at ``locs``


# ----------------------------------------------------------------------------- evaluation


class SoftEvaluator:
    """Deterministic evaluation on a fixed split (val for selection, test for the report).

    Same canvases and, with a random first glimpse, the same first glimpses as the hard
    agents' ``Evaluator`` (``data.fixed_set``, ``data.fixed_first_locs``).
    """

    def __init__(self, cfg: TrainConfig, task: GlimpseConfig, device: torch.device, split: str,
                 n: int) -> None:
        self.images, self.labels = data.fixed_set(task.preset, split, n=n)
        self.first = (data.fixed_first_locs(n) if task.first_glimpse == "random"
                      else torch.zeros(n, 2))  # (n, 2) on CPU
        self.batch = min(cfg.eval_batch, n)
        self.device, self.split, self.n, self.task = device, split, n, task

    @torch.no_grad()
    def __call__(self, model: nn.Module, steps: int | None = None,
                 anytime: bool = False) -> dict:
        """Accuracy/error in percent; ``anytime``: also the error after every step
        (``error_by_step``, the classifier read after each glimpse of a ``steps``-long pass)."""
        was_training = model.training
        model.eval()
        correct, by_step = 0, None
        for start in range(0, self.n, self.batch):
            sl = slice(start, start + self.batch)
            images = self.images[sl].to(self.device)
            labels = self.labels[sl].to(self.device)
            first = self.first[sl].to(self.device) if model.uses_first else None
            out = model(images, first, steps=steps, anytime=anytime)
            correct += int((out.logits.argmax(1) == labels).sum())
            if anytime and out.step_logits is not None:
                hits = (out.step_logits.argmax(2) == labels[None]).sum(1).cpu()  # (T,)
                by_step = hits if by_step is None else by_step + hits
        model.train(was_training)
        acc = 100.0 * correct / self.n
        res = {"accuracy": acc, "error": 100.0 - acc}
        if by_step is not None:
            res["error_by_step"] = [100.0 - 100.0 * float(h) / self.n for h in by_step]
        return res

    def picture(self, model: nn.Module, n: int = 8) -> np.ndarray:
        """Where ``model`` looks on the first ``n`` canvases of the split (uint8 HWC)."""
        first = self.first[:n].to(self.device) if model.uses_first else None
        return attention_image(model, self.images[:n].to(self.device), first, self.task)


# ----------------------------------------------------------------------------- pictures


def saliency(model: nn.Module, images: torch.Tensor, first: torch.Tensor | None) -> torch.Tensor:
    """``|d max-logit / d pixel|`` (1, n, H, W): where a model without attention 'looks'."""
    was_training = model.training
    model.eval()
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x, first).logits
        (grad,) = torch.autograd.grad(logits.max(1).values.sum(), x)
    model.train(was_training)
    return grad.abs()[:, 0][None]  # (1, n, H, W)


def attention_image(model: nn.Module, images: torch.Tensor, first: torch.Tensor | None,
                    task: GlimpseConfig, upscale: int = 3) -> np.ndarray:
    """A row of canvases with where ``model`` attends: glimpse squares and path (glimpse models,
    drawn as for the hard agents), an attention heat map with the path of its centre (DRAW,
    soft-cnn), or the input-gradient saliency (full-image models)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        look = model.look(images, first)
    model.train(was_training)
    cpu = images.detach().float().cpu()
    if look is not None and look.boxes:
        return glimpse_paths_image(cpu, look.locs.cpu(), task, n=images.shape[0],
                                   upscale=upscale)
    maps = saliency(model, images, first) if look is None or look.maps is None else look.maps
    locs = None if look is None or look.locs is None else look.locs.cpu().numpy()
    return heat_row(cpu[:, 0].numpy(), maps.detach().float().cpu().numpy(), locs, upscale)


def heat_row(images: np.ndarray, maps: np.ndarray, locs: np.ndarray | None,
             upscale: int = 3) -> np.ndarray:
    """Canvases (n, H, W) tinted by ``max_t`` of the maps (T, n, H, W), each normalised to its
    maximum, with the path of ``locs`` (T, n, 2) as magenta dots; uint8 (H', W', 3)."""
    frames = []
    n, H, W = images.shape
    for i in range(n):
        heat = maps[:, i].max(0)
        heat = heat / max(float(heat.max()), 1e-12)
        grey = np.clip(images[i], 0, 1)[..., None] * np.array([1.0, 1.0, 1.0])
        tint = np.array([1.0, 0.35, 0.0])
        f = (1 - 0.65 * heat[..., None]) * grey + 0.65 * heat[..., None] * tint
        frame = (np.clip(f, 0, 1) * 255).astype(np.uint8)
        if locs is not None:
            c = np.stack([(locs[:, i, 1] + 1) * H / 2, (locs[:, i, 0] + 1) * W / 2], 1)
            for a, b in zip(c[:-1], c[1:]):
                for s in np.linspace(0.0, 1.0, int(np.abs(b - a).max()) + 2):
                    y, x = (a + s * (b - a)).astype(int)
                    if 0 <= y < H and 0 <= x < W:
                        frame[y, x] = (255, 0, 255)
            for y, x in c.astype(int):
                if 0 <= y < H and 0 <= x < W:
                    frame[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] = (0, 255, 0)
        frames.append(np.kron(frame, np.ones((upscale, upscale, 1), dtype=np.uint8)))
        frames.append(np.full((frames[-1].shape[0], 2, 3), 255, np.uint8))
    return np.concatenate(frames[:-1], axis=1)


# ----------------------------------------------------------------------------- costs


def count_macs(fn, root: nn.Module) -> int:
    """Multiply-adds of the ``Linear``, ``Conv2d``, ``LSTMCell`` and ``GRUCell`` calls that
    ``fn()`` makes inside ``root`` (forward hooks; call ``fn`` on a batch of one image)."""
    total = 0

    def hook(mod, inputs, out):
        nonlocal total
        if isinstance(mod, nn.Linear):
            total += out.numel() * mod.in_features
        elif isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            total += out.numel() * (mod.in_channels // mod.groups) * k
        elif isinstance(mod, (nn.LSTMCell, nn.GRUCell)):
            gates = 4 if isinstance(mod, nn.LSTMCell) else 3
            rows = inputs[0].shape[0] if inputs[0].dim() > 1 else 1
            total += rows * gates * mod.hidden_size * (mod.input_size + mod.hidden_size)

    handles = [m.register_forward_hook(hook) for m in root.modules()
               if isinstance(m, (nn.Linear, nn.Conv2d, nn.LSTMCell, nn.GRUCell))]
    try:
        with torch.no_grad():
            fn()
    finally:
        for h in handles:
            h.remove()
    return int(total)


def retina_macs(task: GlimpseConfig, soft: bool) -> int:
    """Sensor cost of one multi-scale glimpse: each scale area-averages ``(p k)^2`` pixels
    (one add each); the bilinear (soft) sensor first interpolates each of them (4 MACs)."""
    area = sum((task.patch * task.scale_factor**i) ** 2 for i in range(task.scales))
    return area * (5 if soft else 1)


def model_costs(model: nn.Module, task: GlimpseConfig) -> dict:
    """``pixels_read_per_image``, ``macs_per_image`` (inference, one image) and ``params``.

    Pixels read: the values the model's input layer receives per image (the sensor's
    bandwidth): ``T x scales x patch^2`` for glimpse models, ``T x N^2`` for DRAW, ``H x W``
    for models that read the whole canvas. MACs: the layers (hooks) plus ``extra_macs`` (sensor,
    filterbanks, attention products), for one deterministic forward pass.
    """
    spec = task.spec
    H, W = spec.height, spec.width
    dev = next(model.parameters()).device
    images = torch.zeros(1, 1, H, W, device=dev)
    first = torch.zeros(1, 2, device=dev) if model.uses_first else None
    was_training = model.training
    model.eval()
    macs = count_macs(lambda: model(images, first), model) + model.extra_macs(H, W)
    model.train(was_training)
    return {"pixels_read_per_image": int(model.pixels_read(H, W)), "macs_per_image": int(macs),
            "params": int(sum(p.numel() for p in model.parameters() if p.requires_grad))}


# ----------------------------------------------------------------------------- training


def classification_losses(out: SoftOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The whole loss of a backprop agent: cross-entropy of the last step's class scores (in
    float32, also after a bfloat16 forward)."""
    ce = F.cross_entropy(out.logits.float(), labels)
    return {"loss": ce, "loss_classify": ce}


def train_autocast(cfg: TrainConfig, device: torch.device):
    """The context of a training forward: bfloat16 autocast under ``--precision bf16``, else
    none at all (a disabled autocast would switch off one the caller set)."""
    if cfg.precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


class SoftTrainer:
    """Everything a backprop agent does after its optimiser step, and the state it checkpoints.

    The twin of ``training.Trainer``: the same tags (``rollout/accuracy`` is the accuracy of the
    training batch), validation every ``eval_every`` updates on the fixed val canvases, the
    best model by validation in ``best.pt``, periodic checkpoints, and a report scored once on
    the fixed test canvases, with ``pixels_read_per_image``, ``macs_per_image`` and ``params``.
    ``wall_s`` in the report adds up the time of every session of the run (resumes included).
    """

    def __init__(self, run: Run, task: GlimpseConfig, model: nn.Module,
                 optimizer: torch.optim.Optimizer, canvases: CanvasStream,
                 noise: torch.Generator) -> None:
        self.run, self.cfg, self.task, self.model = run, run.cfg, task, model
        self.canvases, self.noise = canvases, noise
        self.val = SoftEvaluator(self.cfg, task, run.device, "val", self.cfg.eval_size)
        self.keep = Bookkeeper(run, model, optimizer, {"noise": torch_stream(noise),
                                                       "canvas_rng": torch_stream(canvases.rng)})
        self.postfix = self.keep.postfix

    # ------------------------------------------------------------------ per update
    def after_update(self, update: int, out: SoftOutput, labels: torch.Tensor, losses: dict,
                     applied: bool, grad_norm: float) -> None:
        cfg, log, keep = self.cfg, self.run.logger, self.keep
        step, last = keep.begin(update, applied)
        if keep.due(update, cfg.log_every, last):
            correct = (out.logits.detach().argmax(1) == labels).float().mean()
            attention = {}
            if out.std is not None:
                attention["location_std"] = out.std.detach().mean()
            if out.locs is not None:  # as the RAM agents: the locations after the first
                chosen = out.locs[1:] if out.locs.shape[0] > 1 else out.locs
                attention["mean_abs_location"] = chosen.detach().abs().mean()
            attention.update({k: v.detach() for k, v in out.extras.items()})
            keep.log_update(step, {"accuracy": correct * 100.0, "reward": correct}, losses,
                            grad_norm, attention)
        if out.locs is not None and keep.due(update, cfg.image_every, last):
            log.histogram("attention/locations_x", out.locs[..., 0].detach().cpu(), step)
            log.histogram("attention/locations_y", out.locs[..., 1].detach().cpu(), step)
        if keep.eval_due(update, last):
            self.validate(update, step)
        if keep.checkpoint_due(update, last):
            keep.checkpoint(update)

    def validate(self, update: int, step: int) -> None:
        res = self.val(self.model)
        self.run.logger.image("attention/glimpse_paths_val", self.val.picture(self.model), step)
        self.keep.select(update, step, res)

    # ------------------------------------------------------------------ the end
    def finish(self) -> dict:
        """Checkpoint on a signal (and exit), else report the best model's test error once."""
        cfg, keep = self.cfg, self.keep
        keep.load_best()
        test_eval = SoftEvaluator(cfg, self.task, self.run.device, "test", cfg.test_size)
        test = test_eval(self.model)
        report = {**keep.report(test),
                  "canvas_set_version": data.GENERATOR_VERSION,  # of the val/test sets
                  **model_costs(self.model, self.task)}
        self.run.logger.image("attention/glimpse_paths_test", test_eval.picture(self.model),
                              keep.count(cfg.n_updates))
        return keep.write_report(report, keep.error_line(report,
                                                         "test canvases (deterministic)"))
