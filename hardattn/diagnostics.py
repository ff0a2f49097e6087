"""Estimator quality, measured: variance and signal-to-noise ratio of gradient estimates."""

from __future__ import annotations

from collections.abc import Callable

import torch


def gradient_statistics(estimate: Callable[[], torch.Tensor], draws: int = 16) -> dict[str, float]:
    """Draw ``draws`` independent gradient estimates on one batch and summarise them.

    Args:
        estimate: returns one flattened gradient estimate ``(P,)`` per call; each call must
            use fresh policy noise on the *same* inputs, so the spread is the estimator's own.
        draws: number of estimates (>= 2).

    Returns:
        ``grad_var``: total variance, the trace of the covariance, ``sum_p Var[g_p]``;
        ``grad_snr``: ``||E[g]||^2 / sum_p Var[g_p]`` (how many noise "units" the mean
        gradient is worth; higher is better); ``grad_norm``: ``||E[g]||``.
    """
    if draws < 2:
        raise ValueError(f"draws={draws} must be >= 2")
    g = torch.stack([estimate().detach().double() for _ in range(draws)])  # (draws, P)
    mean = g.mean(0)  # (P,)
    var = g.var(0, unbiased=True).sum()
    signal = mean.pow(2).sum()
    return {"grad_var": float(var), "grad_snr": float(signal / var.clamp_min(1e-30)),
            "grad_norm": float(signal.sqrt())}
