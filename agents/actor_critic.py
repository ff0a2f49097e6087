"""RAM with an actor-critic location policy: per-step critic V(h_t), GAE(lambda) advantages.

The episode is the ``T``-step MDP of the glimpse task: steps ``0..T-2`` choose locations, step
``T-1`` classifies (trained by cross-entropy, no policy gradient), the reward (1 if right)
arrives on that last step. The critic reads the detached core state at every step, so its
value at ``h_{T-1}`` estimates the chance the classifier is right and bootstraps the
location decisions before it; ``lambda = 1`` recovers REINFORCE with a learned baseline.
"""

from __future__ import annotations

import torch

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


def loss_terms(cfg: TrainConfig, ro: Rollout) -> dict[str, torch.Tensor]:
    """GAE advantages of the location decisions and the hybrid loss with a critic term."""
    T, B = ro.values.shape
    rewards = torch.zeros(T, B, device=ro.reward.device)
    rewards[-1] = ro.reward  # (T, B): the classification step's reward
    dones = torch.zeros_like(rewards)
    dones[-1] = 1.0
    values = ro.values.detach()  # (T, B)
    adv = est.gae(rewards, values, dones, torch.zeros(B, device=values.device), cfg.gamma,
                  cfg.gae_lambda)  # (T, B)
    targets = est.lambda_returns(adv, values)  # (T, B) critic targets
    adv = adv[:-1]  # (T-1, B): the classification step takes no location decision
    if cfg.normalize_advantages:
        adv = est.normalize(adv)
    return hybrid_loss(ro.logits, ro.labels, ro.log_probs, adv.detach(), values=ro.values,
                       value_targets=targets, entropy=ro.entropy,
                       reinforce_coef=cfg.reinforce_coef, value_coef=cfg.value_coef,
                       entropy_coef=cfg.entropy_coef, value_key="loss_value")


def train(cfg: TrainConfig) -> dict:
    """Train RAM with an actor-critic location policy; returns the final report."""
    with Run(cfg) as run:
        cfg, dev = run.cfg, run.device
        torch.manual_seed(cfg.seed)  # initial weights
        env = make_env(cfg, dev, cfg.batch_size)
        model = make_model(cfg, env).to(dev)
        run.init_weights(model)  # --init-from (fine-tuning, curricula)
        distributed.broadcast_model(model)  # data-parallel (torchrun): same start everywhere
        distributed.average_gradients(model)  # ... and gradients averaged in backward
        optimizer = make_optimizer(model, cfg)
        seed = distributed.rank_seed(cfg.seed)  # cfg.seed on rank 0 / in one process
        noise = torch.Generator(device=dev).manual_seed(seed + 1)  # location noise
        env.reset(seed=seed)
        trainer = Trainer(run, env, model, optimizer, noise, baselines={})
        options = {"repeat": cfg.samples_per_image} if cfg.samples_per_image > 1 else None

        for update in run.updates(trainer.postfix):
            std = std_at(cfg, update)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(cfg, update)
            ro = rollout(model, env, std, noise, options=options)
            losses = distributed.agree_finite(loss_terms(cfg, ro))
            applied, grad_norm = safe_step(losses, model, optimizer, cfg)
            trainer.after_update(update, ro, losses, applied, grad_norm, std,
                                 lambda r, _b: loss_terms(cfg, r))
        return trainer.finish()
