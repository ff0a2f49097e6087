"""Baselines for the score-function (REINFORCE) gradient: leave-one-out, EMA, variance-optimal.

A baseline ``b`` is subtracted from the return in ``(R - b) * grad log p``; any ``b`` that does not
depend on the action sampled keeps the estimate unbiased and a good one lowers its variance.
Like :mod:`hardattn.estimators`, every function detaches its inputs (baselines are targets), and
each fast function has a slow twin ``*_loop`` in Python floats that the tests compare against.
The two stateful baselines (``EMABaseline``, ``RunningOptimalBaseline``) save and restore their
state with ``state_dict`` / ``load_state_dict`` so that a resumed run continues them exactly.

References: Weaver & Tao 2001, "The Optimal Reward Baseline for Gradient-Based Reinforcement
Learning" (UAI); Greensmith, Bartlett & Baxter 2004 (JMLR 5); Kool et al. 2019, "Buy 4
REINFORCE Samples, Get a Baseline for Free!" (leave-one-out).
"""

from __future__ import annotations

import torch

from .estimators import _check_float, _check_same

__all__ = [
    "EMABaseline", "RunningOptimalBaseline", "gaussian_score_sq_norm", "leave_one_out_baseline",
    "leave_one_out_baseline_loop", "optimal_scalar_baseline", "optimal_scalar_baseline_loop",
]


def leave_one_out_baseline(returns: torch.Tensor) -> torch.Tensor:
    """Leave-one-out baseline over ``S`` samples of the glimpse path per image.

    ``b_{s, i} = sum_{s' != s} R_{s', i} / (S - 1)``, so ``(R - b) * grad log p`` stays unbiased.
    Built from exclusive prefix and suffix sums, never ``total - R_s``: ``R_s`` takes no part in
    its own baseline, not even through rounding, and a large return causes no cancellation.

    Args:
        returns: ``(S, *batch)`` with ``S >= 2``, e.g. ``(S, B)``.

    Returns:
        Baseline of ``returns``'s shape, detached.
    """
    _check_float("returns", returns)
    if returns.dim() < 2 or returns.shape[0] < 2:
        raise ValueError(f"returns must be (S, B) with S >= 2, got {tuple(returns.shape)}")
    returns = returns.detach()
    zero = torch.zeros_like(returns[:1])  # (1, *batch)
    before = torch.cat([zero, returns.cumsum(0)[:-1]])  # (S, *batch): sum_{s' < s}
    after = torch.cat([returns.flip(0).cumsum(0).flip(0)[1:], zero])  # (S, *batch): s' > s
    return (before + after) / (returns.shape[0] - 1)


def leave_one_out_baseline_loop(returns: torch.Tensor) -> torch.Tensor:
    """Slow twin of :func:`leave_one_out_baseline` for ``(S, B)`` input, in Python floats."""
    _check_float("returns", returns)
    if returns.dim() != 2 or returns.shape[0] < 2:
        raise ValueError(f"returns must be (S, B) with S >= 2, got {tuple(returns.shape)}")
    S, B = returns.shape
    r = returns.tolist()
    out = [[sum(r[o][b] for o in range(S) if o != s) / (S - 1) for b in range(B)]
           for s in range(S)]
    return torch.tensor(out, dtype=returns.dtype, device=returns.device).reshape(S, B)


class _EMA:
    """Shared state: an EMA ``avg`` started at 0, its update ``count`` and the ``decay``."""

    def __init__(self, decay: float = 0.9) -> None:
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"decay={decay!r} must lie in [0, 1)")
        self.decay = float(decay)
        self.avg: torch.Tensor | None = None
        self.count = 0

    def _config(self) -> dict:
        return {"decay": self.decay}

    def _fold(self, batch: torch.Tensor) -> None:
        if self.avg is None:
            self.avg = torch.zeros_like(batch)
        elif self.avg.shape != batch.shape:
            raise ValueError(f"batch statistic of shape {tuple(batch.shape)} does not match "
                             f"the shape {tuple(self.avg.shape)} seen before")
        self.avg = self.decay * self.avg + (1.0 - self.decay) * batch.to(self.avg)
        self.count += 1

    def _corrected(self) -> torch.Tensor:
        return self.avg / (1.0 - self.decay ** self.count)  # Adam-style bias correction

    def state_dict(self) -> dict:
        """Plain tensors and numbers (loadable with ``torch.load(weights_only=True)``)."""
        avg = None if self.avg is None else self.avg.clone()
        return {**self._config(), "count": self.count, "avg": avg}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; the configuration must match the constructor's."""
        saved = {k: state[k] for k in self._config()}
        if saved != self._config():
            raise ValueError(f"state {saved} does not match {self._config()}")
        self.count = int(state["count"])
        self.avg = None if state["avg"] is None else state["avg"].detach().clone()


class EMABaseline(_EMA):
    """Exponential moving average of the return, scalar or one per step ``t``.

    ``avg <- decay * avg + (1 - decay) * batch_mean``, started at 0 and bias-corrected as in
    Adam (``value = avg / (1 - decay ** n)`` after ``n`` updates), so the first update already
    gives the batch mean. Before any update the value is 0.

    Args:
        decay: in ``[0, 1)``; 0 keeps only the last batch.
        per_step: if True, keep one average per step: ``update`` takes ``(T, B)`` and averages
            over ``B``, ``value()`` is ``(T, 1)`` (broadcasts against ``(T, B)``). If False,
            ``update`` averages over everything and ``value()`` is a 0-dim tensor.

    The state lives on the device/dtype of the first update; ``value()`` is detached.
    """

    def __init__(self, decay: float = 0.9, per_step: bool = False) -> None:
        super().__init__(decay)
        self.per_step = bool(per_step)

    def _config(self) -> dict:
        return {"decay": self.decay, "per_step": self.per_step}

    def update(self, returns: torch.Tensor) -> None:
        """Fold in a batch of returns: ``(T, B)`` if ``per_step``, else any non-empty shape."""
        _check_float("returns", returns)
        if (self.per_step and returns.dim() != 2) or returns.numel() == 0:
            raise ValueError(f"returns must be non-empty{' (T, B)' if self.per_step else ''}, "
                             f"got shape {tuple(returns.shape)}")
        returns = returns.detach()
        self._fold(returns.mean(dim=1) if self.per_step else returns.mean())  # (T,) or ()

    def value(self) -> torch.Tensor:
        """The bias-corrected average: ``(T, 1)`` if ``per_step`` else ``()``; 0 before updates."""
        if self.avg is None:
            return torch.zeros(())
        out = self._corrected()
        return out[:, None] if self.per_step else out  # (T,) -> (T, 1)


def _check_score(returns: torch.Tensor, score_sq_norm: torch.Tensor) -> None:
    _check_float("returns", returns)
    _check_float("score_sq_norm", score_sq_norm)
    if returns.dim() not in (1, 2) or returns.numel() == 0:
        raise ValueError(f"returns must be non-empty (B,) or (T, B), got "
                         f"{tuple(returns.shape)}")
    _check_same("score_sq_norm", score_sq_norm, "returns", returns)


def optimal_scalar_baseline(returns: torch.Tensor, score_sq_norm: torch.Tensor) -> torch.Tensor:
    """Variance-optimal constant baseline ``b* = E[R ||g||^2] / E[||g||^2]``.

    Derivation (Weaver & Tao 2001; Greensmith, Bartlett & Baxter 2004, sec. 3): the REINFORCE
    estimate ``(R - b) g`` with score ``g = grad log pi`` is unbiased for any constant ``b``
    because ``E[g] = 0``. Its total variance (trace of the covariance) is
    ``E[(R - b)^2 ||g||^2] - ||E[R g]||^2``; the second term does not depend on ``b``, and the
    first is a quadratic in ``b`` with derivative ``-2 E[(R - b) ||g||^2]``, zero at
    ``b* = E[R g.g] / E[g.g]``. It is the mean return weighted by how loud each sample's score
    is; with ``||g||^2`` constant it reduces to the plain mean.

    Here ``g`` is the score with respect to the policy *outputs* (e.g. the Gaussian location
    mean, see :func:`gaussian_score_sq_norm`), not the parameters: a cheap, per-sample proxy.
    For ``(T, B)`` input every ``(t, b)`` term is treated as one sample (cross-step products in
    ``sum_t (R_t - b) g_t`` are ignored), the usual per-term approximation.

    Args:
        returns: ``(B,)`` or ``(T, B)`` returns.
        score_sq_norm: ``||g||^2`` of the same shape, non-negative.

    Returns:
        0-dim tensor, detached. Falls back to ``mean(R)`` when ``sum ||g||^2 == 0``.
    """
    _check_score(returns, score_sq_norm)
    r = returns.detach()
    g2 = score_sq_norm.detach().to(r.dtype)
    num, den = (r * g2).sum(), g2.sum()
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(r.dtype).tiny), r.mean())


def optimal_scalar_baseline_loop(returns: torch.Tensor,
                                 score_sq_norm: torch.Tensor) -> torch.Tensor:
    """Slow twin of :func:`optimal_scalar_baseline`, in Python floats."""
    _check_score(returns, score_sq_norm)
    r, g2 = returns.reshape(-1).tolist(), score_sq_norm.reshape(-1).tolist()
    den = sum(g2)
    out = sum(a * b for a, b in zip(r, g2)) / den if den > 0 else sum(r) / len(r)
    return torch.tensor(out, dtype=returns.dtype, device=returns.device)


class RunningOptimalBaseline(_EMA):
    """:func:`optimal_scalar_baseline` with running (EMA) numerator and denominator.

    Keeps ``avg = EMA([mean(R ||g||^2), mean(||g||^2), mean(R)])`` (shape ``(3,)``) across
    updates; ``value() = avg[0] / avg[1]`` (the EMA bias correction cancels in the ratio), or
    the bias-corrected ``avg[2]`` when ``avg[1] == 0``, or 0 before any update.

    Args:
        decay: in ``[0, 1)``; 0 reproduces :func:`optimal_scalar_baseline` of the last batch.
    """

    def update(self, returns: torch.Tensor, score_sq_norm: torch.Tensor) -> None:
        """Fold in a batch: ``returns`` and ``score_sq_norm`` both ``(B,)`` or ``(T, B)``."""
        _check_score(returns, score_sq_norm)
        r = returns.detach()
        g2 = score_sq_norm.detach().to(r.dtype)
        self._fold(torch.stack([(r * g2).mean(), g2.mean(), r.mean()]))  # (3,)

    def value(self) -> torch.Tensor:
        """The running optimal baseline, a detached 0-dim tensor."""
        if self.avg is None:
            return torch.zeros(())
        num, den = self.avg[0], self.avg[1]
        tiny = torch.finfo(den.dtype).tiny
        return torch.where(den > 0, num / den.clamp_min(tiny), self._corrected()[2])


def gaussian_score_sq_norm(action: torch.Tensor, mean: torch.Tensor,
                           std: torch.Tensor | float) -> torch.Tensor:
    """``||d log N(a; mu, sigma) / d mu||^2 = sum_k ((a_k - mu_k) / sigma_k^2)^2``.

    Args:
        action: ``(..., D)`` sampled actions (e.g. glimpse locations, ``D = 2``).
        mean: ``(..., D)`` Gaussian means, same shape as ``action``.
        std: scalar or tensor broadcastable to ``(..., D)``, positive.

    Returns:
        ``(...,)`` squared score norms, detached (a baseline statistic, never differentiated).
    """
    _check_float("action", action)
    _check_same("mean", mean, "action", action)
    if action.dim() < 1:
        raise ValueError(f"action must be (..., D), got shape {tuple(action.shape)}")
    std_t = torch.as_tensor(std, dtype=action.dtype, device=action.device).detach()
    fits = std_t.dim() <= action.dim() and all(
        s in (1, a) for s, a in zip(reversed(std_t.shape), reversed(action.shape)))
    if not fits:
        raise ValueError(f"std shape {tuple(std_t.shape)} must broadcast to action shape "
                         f"{tuple(action.shape)}")
    score = (action.detach() - mean.detach()) / std_t.square()  # (..., D)
    return score.square().sum(dim=-1)  # (...,)
