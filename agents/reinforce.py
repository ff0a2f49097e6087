"""RAM trained by the hybrid loss: cross-entropy + REINFORCE with a baseline (Mnih et al. 2014).

``train(cfg)`` reads top to bottom in data-flow order: env -> model -> rollout -> returns ->
baseline -> advantages -> losses -> update -> logging / evaluation / checkpoints.
"""

from __future__ import annotations

import torch

from hardattn import baselines as bl
from hardattn import estimators as est
from hardattn.config import TrainConfig
from hardattn.losses import hybrid_loss

from . import distributed
from .ram_common import (
    Rollout,
    lr_at,
    make_env,
    make_model,
    make_optimizer,
    rollout,
    safe_step,
    std_at,
)
from .run import Run
from .training import Trainer


def advantages(cfg: TrainConfig, ro: Rollout, baselines: dict) -> tuple[torch.Tensor, ...]:
    """Returns, baseline and detached advantages of the ``T - 1`` location decisions.

    Returns:
        ``(returns (T-1, B), baseline (T-1, B), advantages (T-1, B))``.
    """
    T1, B = ro.log_probs.shape
    rewards = torch.zeros(T1, B, device=ro.reward.device)
    rewards[-1] = ro.reward  # the classification's reward follows the last location decision
    dones = torch.zeros_like(rewards)
    dones[-1] = 1.0
    returns = est.discounted_returns(rewards, dones, cfg.gamma)  # (T-1, B)
    if cfg.baseline == "none":
        base = torch.zeros_like(returns)
    elif cfg.baseline == "learned":
        base = ro.values[:-1].detach()  # b_t(h_t), on the detached core state
    elif cfg.baseline == "ema":
        base = baselines["ema"].value().to(returns).expand_as(returns)
        baselines["ema"].update(returns)  # after use: the baseline never sees its own sample
    elif cfg.baseline == "optimal":
        score = bl.gaussian_score_sq_norm(ro.actions, ro.means.detach(), ro.std.detach())
        base = baselines["optimal"].value().to(returns).expand_as(returns)
        baselines["optimal"].update(returns, score)
    else:  # leave-one-out over the S paths of each canvas (consecutive rows)
        S = cfg.samples_per_image
        grouped = returns.view(T1, B // S, S).permute(2, 0, 1).reshape(S, T1 * B // S)
        base = bl.leave_one_out_baseline(grouped)  # (S, T1 * B/S)
        base = base.view(S, T1, B // S).permute(1, 2, 0).reshape(T1, B)
    adv = returns - base
    if cfg.normalize_advantages:
        adv = est.normalize(adv)
    return returns, base, adv.detach()


def loss_terms(cfg: TrainConfig, ro: Rollout, baselines: dict) -> dict[str, torch.Tensor]:
    returns, _, adv = advantages(cfg, ro, baselines)
    learned = cfg.baseline == "learned"
    return hybrid_loss(ro.logits, ro.labels, ro.log_probs, adv,
                       values=ro.values[:-1] if learned else None,
                       value_targets=returns if learned else None, entropy=ro.entropy,
                       reinforce_coef=cfg.reinforce_coef, value_coef=cfg.value_coef,
                       entropy_coef=cfg.entropy_coef, value_key="loss_baseline")


def train(cfg: TrainConfig) -> dict:
    """Train RAM with REINFORCE; returns the final report (val and test error, timings)."""
    with Run(cfg) as run:
        cfg, dev = run.cfg, run.device
        torch.manual_seed(cfg.seed)  # initial weights
        env = make_env(cfg, dev, cfg.batch_size)
        model = make_model(cfg, env).to(dev)
        run.init_weights(model)  # --init-from (fine-tuning, curricula)
        distributed.broadcast_model(model)  # data-parallel (torchrun): same start everywhere
        distributed.average_gradients(model)  # ... and gradients averaged in backward
        optimizer = make_optimizer(model, cfg)
        baselines = {"ema": bl.EMABaseline(cfg.ema_decay),
                     "optimal": bl.RunningOptimalBaseline(cfg.ema_decay)}
        seed = distributed.rank_seed(cfg.seed)  # cfg.seed on rank 0 / in one process
        noise = torch.Generator(device=dev).manual_seed(seed + 1)  # location noise
        env.reset(seed=seed)
        trainer = Trainer(run, env, model, optimizer, noise, baselines)
        options = {"repeat": cfg.samples_per_image} if cfg.samples_per_image > 1 else None

        for update in run.updates(trainer.postfix):
            std = std_at(cfg, update)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(cfg, update)
            ro = rollout(model, env, std, noise, options=options)
            losses = distributed.agree_finite(loss_terms(cfg, ro, baselines))
            applied, grad_norm = safe_step(losses, model, optimizer, cfg)
            trainer.after_update(update, ro, losses, applied, grad_norm, std,
                                 lambda r, b: loss_terms(cfg, r, b))
        return trainer.finish()
