"""Losses as dicts of named tensors: the hybrid RAM loss (classify + REINFORCE + baseline).

``hybrid_loss`` is shared by the REINFORCE agent (value term = the learned per-step baseline,
``loss_baseline``) and the actor-critic agent (value term = the critic, ``loss_value``); they
differ only in the advantages they pass in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reinforce_loss(log_probs: torch.Tensor, advantages: torch.Tensor,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """Score-function surrogate ``-sum_t log pi(a_t) A_t``, averaged over the batch.

    Args:
        log_probs: ``(T, B)`` log-probabilities of the actions actually taken.
        advantages: ``(T, B)``, detached (raises otherwise: a gradient through the advantage
            would bias the estimator).
        mask: optional ``(T, B)`` of valid steps.
    """
    if advantages.requires_grad:
        raise ValueError("advantages carry a gradient; detach them before the REINFORCE loss")
    if log_probs.shape != advantages.shape:
        raise ValueError(f"log_probs {tuple(log_probs.shape)} and advantages "
                         f"{tuple(advantages.shape)} must have the same (T, B) shape")
    terms = log_probs * advantages  # (T, B)
    if mask is not None:
        terms = terms * mask
    return -terms.sum(0).mean()


def hybrid_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    log_probs: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor | None = None,
    value_targets: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    *,
    reinforce_coef: float = 1.0,
    value_coef: float = 1.0,
    entropy_coef: float = 0.0,
    value_key: str = "loss_baseline",
) -> dict[str, torch.Tensor]:
    """The RAM loss: cross-entropy + REINFORCE on the locations + value regression.

    Args:
        logits: ``(B, K)`` class scores after the last glimpse.
        labels: ``(B,)`` true classes.
        log_probs: ``(T, B)`` location log-probabilities (of the sampled, unclamped locations).
        advantages: ``(T, B)`` detached advantages of those locations.
        values: ``(T, B)`` baseline or critic predictions (on detached core states), or None.
        value_targets: ``(T, B)`` regression targets for ``values`` (detached).
        entropy: policy entropy per step ``(T, B)`` or ``(T,)``, or None.
        value_key: name of the value term: ``"loss_baseline"`` (REINFORCE) or ``"loss_value"``.

    Returns:
        ``{"loss", "loss_classify", "loss_reinforce", value_key, "entropy"}``; ``loss`` is the
        weighted sum that is backpropagated.
    """
    out = {"loss_classify": F.cross_entropy(logits, labels),
           "loss_reinforce": reinforce_loss(log_probs, advantages)}
    total = out["loss_classify"] + reinforce_coef * out["loss_reinforce"]
    if values is not None:
        if value_targets is None:
            raise ValueError("values given without value_targets")
        out[value_key] = F.mse_loss(values, value_targets.detach())
        total = total + value_coef * out[value_key]
    if entropy is not None:
        out["entropy"] = entropy.mean()
        total = total - entropy_coef * out["entropy"]
    out["loss"] = total
    return out
