"""What the RAM agents share: env and model construction, the rollout, evaluation, the update.

The agents (``reinforce.py``, ``actor_critic.py``) differ only in how they turn a rollout into
advantages; everything else is here so that their ``train(cfg)`` reads top to bottom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

import hardattn.envs  # noqa: F401  (registers the env ids)
from hardattn import data
from hardattn.config import TrainConfig
from hardattn.networks import RAM, RAMSpec, gaussian_entropy, gaussian_log_prob


def make_env(cfg: TrainConfig, device: torch.device, num_envs: int, split: str = "train"):
    """The batched glimpse env of the run (torch tensors on ``device``)."""
    kwargs = {k: getattr(cfg, k) for k in ("n_glimpses", "patch", "scales")
              if getattr(cfg, k) is not None}
    if split == "train":
        kwargs["canvas"] = cfg.canvas_overrides()
    return gym.make_vec(cfg.env_id, num_envs=num_envs, split=split, device=device,
                        first_glimpse=cfg.first_glimpse, **kwargs).unwrapped


def make_model(cfg: TrainConfig, env) -> RAM:
    """A RAM network sized for ``env``'s sensor and ``cfg``'s widths."""
    g = env.cfg
    spec = RAMSpec(scales=g.scales, patch=g.patch, what_hidden=cfg.what_hidden,
                   where_hidden=cfg.where_hidden, glimpse_hidden=cfg.glimpse_hidden,
                   core_hidden=cfg.core_hidden, core=cfg.core)
    return RAM(spec, std=cfg.std, learn_std=cfg.std_schedule == "learned",
               compute_dtype=torch.bfloat16 if cfg.precision == "bf16" else None)


def std_at(cfg: TrainConfig, update: int) -> float | None:
    """The location std for this update (None: the model's learned std)."""
    if cfg.std_schedule == "learned":
        return None
    if cfg.std_schedule == "fixed":
        return cfg.std
    frac = min(1.0, update / max(1, cfg.n_updates - 1))
    return cfg.std + frac * (cfg.std_end - cfg.std)


def lr_at(cfg: TrainConfig, update: int) -> float:
    """Cosine decay from ``lr`` to ``lr / 100`` over the budget (or constant)."""
    if not cfg.lr_decay:
        return cfg.lr
    frac = min(1.0, update / max(1, cfg.n_updates))
    return cfg.lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * frac)))


@dataclass
class Rollout:
    """One batch of episodes, time-major. ``T`` glimpses give ``T - 1`` location decisions."""

    logits: torch.Tensor  # (B, K) class scores after the last glimpse
    labels: torch.Tensor  # (B,)
    reward: torch.Tensor  # (B,) 1 if the argmax class was right
    log_probs: torch.Tensor  # (T-1, B) of the sampled (unclamped) locations
    means: torch.Tensor  # (T-1, B, 2) policy means
    actions: torch.Tensor  # (T-1, B, 2) sampled locations
    locs: torch.Tensor  # (T, B, 2) where each glimpse was taken (clamped)
    values: torch.Tensor  # (T, B) baseline / critic on the detached core states
    std: torch.Tensor  # (2,) the std used
    entropy: torch.Tensor  # (T-1,) policy entropy per decision


def rollout(model: RAM, env, std: float | None, generator: torch.Generator,
            deterministic: bool = False, options: dict | None = None) -> Rollout:
    """Run ``T`` glimpses on a fresh batch of canvases, keeping the graph for the update.

    Args:
        model: the RAM network.
        env: a ``GlimpseVecEnv`` (reset here, with ``options``).
        std: location std (None: the model's learned std).
        generator: draws the policy's location noise (seeded by the caller).
        deterministic: send the policy means (evaluation) instead of samples.
    """
    obs, _ = env.reset(options=options)
    B, T, dev = env.num_envs, env.cfg.n_glimpses, env.device
    state = model.initial_state(B, dev)
    std_t = model.location.std(std)  # (2,)
    no_class = torch.zeros(B, dtype=torch.long, device=dev)
    log_probs, means, actions, locs, values = [], [], [], [], []
    for t in range(T):
        locs.append(obs["loc"])
        state, h = model.step(obs["glimpse"], obs["loc"], state)  # h: (B, core_hidden)
        values.append(model.value(h))
        if t < T - 1:
            mean = model.location_mean(h)  # (B, 2)
            if deterministic:
                loc = mean.detach()
            else:
                noise = torch.randn(mean.shape, generator=generator, device=dev)
                loc = (mean + std_t * noise).detach()  # the action actually sent
            # log-prob of the sampled location, before the env clamps it to [-1, 1]
            log_probs.append(gaussian_log_prob(loc, mean, std_t))
            means.append(mean)
            actions.append(loc)
            obs, _, _, _, _ = env.step((loc, no_class))
        else:
            logits = model.classify(h)  # (B, K), float32
            obs, reward, terminated, _, info = env.step((torch.zeros(B, 2, device=dev),
                                                         logits.argmax(1)))
    return Rollout(logits=logits, labels=info["label"], reward=reward,
                   log_probs=torch.stack(log_probs), means=torch.stack(means),
                   actions=torch.stack(actions), locs=torch.stack(locs),
                   values=torch.stack(values), std=std_t,
                   entropy=gaussian_entropy(std_t).expand(T - 1))


class Evaluator:
    """Deterministic evaluation on a fixed split (val for selection, test for the report).

    A random first glimpse is the fixed set's own (``data.fixed_first_locs``), the same for
    every model, evaluation batch and device, so every model is scored on the same canvases
    and the same first glimpses.
    """

    def __init__(self, cfg: TrainConfig, device: torch.device, split: str, n: int) -> None:
        preset = gym.spec(cfg.env_id).kwargs["preset"]
        self.images, self.labels = data.fixed_set(preset, split, n=n)
        self.first = data.fixed_first_locs(n) if cfg.first_glimpse == "random" else None
        self.batch = min(cfg.eval_batch, n)
        self.env = make_env(cfg, device, self.batch, split=split)
        # hardattn eval --n need not be a multiple of the batch: the rest gets an env of its own.
        self.tail_env = make_env(cfg, device, n % self.batch, split=split) \
            if n % self.batch else None
        self.split, self.n = split, n

    @torch.no_grad()
    def __call__(self, model: RAM, mc_samples: int = 1, std: float | None = None,
                 seed: int = 12345) -> dict:
        """Accuracy/error in percent; ``mc_samples > 1`` averages class probabilities over
        that many stochastic glimpse paths with location std ``std`` (off by default)."""
        was_training = model.training
        model.eval()
        for env in (self.env, self.tail_env):
            if env is not None:
                env.reset(seed=seed)
        gen = torch.Generator(device=self.env.device).manual_seed(seed)
        correct, locs = 0, []
        for start in range(0, self.n, self.batch):
            sl = slice(start, start + self.batch)
            options = {"canvases": (self.images[sl], self.labels[sl])}
            if self.first is not None:
                options["first_locs"] = self.first[sl]
            env = self.env if start + self.batch <= self.n else self.tail_env
            probs = 0.0
            for _ in range(mc_samples):
                ro = rollout(model, env, std, gen, deterministic=mc_samples == 1,
                             options=options)
                probs = probs + ro.logits.softmax(1)
            correct += int((probs.argmax(1) == ro.labels).sum())
            if start == 0:
                locs.append(ro.locs[:, :16].cpu())
        model.train(was_training)
        acc = 100.0 * correct / self.n
        return {"accuracy": acc, "error": 100.0 - acc, "locs": locs[0]}


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam over the model's parameters, fused: one kernel updates them all.

    The default (a Python loop over the parameters on the CPU) took 3-4 ms of a 23 ms mnist28
    update on 2 CPU cores; fused, the network's update (``floor``) ran 1.3x faster there.
    """
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)


def safe_step(losses: dict[str, torch.Tensor], model: torch.nn.Module,
              optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> tuple[bool, float]:
    """Backward, check, clip, step. A non-finite loss or gradient is never applied.

    Returns:
        (applied, gradient norm before clipping).

    Raises:
        FloatingPointError: non-finite values with ``on_nonfinite="stop"``; the message names
            the offending loss term.
    """
    bad = [k for k, v in losses.items() if not bool(torch.isfinite(v).all())]
    optimizer.zero_grad(set_to_none=True)
    if not bad:
        losses["loss"].backward()
        params = [p for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or float("inf"),
                                              foreach=True)  # one kernel, not a loop
        if not bool(torch.isfinite(norm)):
            bad = ["gradient (norm is not finite)"]
    if bad:
        optimizer.zero_grad(set_to_none=True)
        if cfg.on_nonfinite == "stop":
            raise FloatingPointError(f"non-finite {', '.join(bad)}; the step was not applied "
                                     f"(use --on-nonfinite skip to skip and count such steps)")
        return False, float("nan")
    optimizer.step()
    return True, float(norm)


def glimpse_paths_image(images: torch.Tensor, locs: torch.Tensor, env_cfg, n: int = 8,
                        upscale: int = 3) -> np.ndarray:
    """A row of canvases with their glimpse paths, ``uint8 (H', W', 3)`` for TensorBoard."""
    from hardattn.envs.glimpse_task import render_frame

    frames = []
    for i in range(min(n, images.shape[0])):
        f = render_frame(images[i, 0].numpy(), locs[:, i].numpy(), env_cfg)
        frames.append(np.kron(f, np.ones((upscale, upscale, 1), dtype=np.uint8)))
        frames.append(np.full((frames[-1].shape[0], 2, 3), 255, np.uint8))
    return np.concatenate(frames[:-1], axis=1)
