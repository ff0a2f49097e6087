"""Return, advantage and baseline estimators: pure functions over time-major ``(T, B)`` tensors.

In the style of TorchRL's ``objectives/value/functional.py``; every fast function has a slow
twin ``*_loop`` in Python floats that the tests compare against. Conventions:

* ``(T, B)`` is time-major: ``T`` steps of ``B`` parallel episodes. ``dones[t] = 1`` when the
  episode ended at step ``t``, after reward ``r_t`` (bool, int or 0/1 float); nothing after ``t``
  flows back into ``t``. Truncations are not terminations: fold ``gamma * V(final_obs)`` into
  the truncated step's reward, or do not mark it done.
* Returns, advantages and baselines are targets: their functions detach the inputs, so outputs
  never carry a ``grad_fn``. ``normalize`` is the exception: it is differentiable.
* No global RNG, no device synchronisation; CPU or CUDA, float32 or float64 (kept from inputs).

References: Greensmith, Bartlett & Baxter 2004, "Variance Reduction Techniques for Gradient
Estimates in Reinforcement Learning" (JMLR 5); Weaver & Tao 2001, "The Optimal Reward Baseline
for Gradient-Based Reinforcement Learning" (UAI); Schulman et al. 2016 (GAE).
"""

from __future__ import annotations

import torch

__all__ = [
    "EMABaseline", "RunningOptimalBaseline", "discounted_returns", "discounted_returns_loop",
    "gae", "gae_loop", "gaussian_score_sq_norm", "lambda_returns", "leave_one_out_baseline",
    "leave_one_out_baseline_loop", "normalize", "normalize_loop", "optimal_scalar_baseline",
    "optimal_scalar_baseline_loop",
]


# ----------------------------------------------------------------------------- validation
def _check_float(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got "
                         f"{getattr(x, 'dtype', type(x).__name__)}")


def _check_same(name: str, x: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.shape != ref.shape:
        raise ValueError(f"{name} must have the shape of {ref_name} {tuple(ref.shape)}, got "
                         f"{tuple(getattr(x, 'shape', ()))}")


def _check_unit(name: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name}={value!r} must lie in [0, 1]")


def _check_rollout(rewards: torch.Tensor, dones: torch.Tensor, gamma: float,
                   last: torch.Tensor | None, last_name: str) -> None:
    """rewards (T, B) float; dones (T, B); gamma in [0, 1]; last (B,) float or None."""
    _check_float("rewards", rewards)
    if rewards.dim() != 2 or rewards.shape[0] == 0:
        raise ValueError(f"rewards must be (T, B) with T >= 1, got {tuple(rewards.shape)}")
    _check_same("dones", dones, "rewards", rewards)
    _check_unit("gamma", gamma)
    if last is not None:
        _check_float(last_name, last)
        if last.shape != rewards.shape[1:]:
            raise ValueError(f"{last_name} must be (B,) = {tuple(rewards.shape[1:])} to match "
                             f"rewards {tuple(rewards.shape)}, got {tuple(last.shape)}")


def _check_gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor,
               next_value: torch.Tensor, gamma: float, lam: float) -> None:
    _check_rollout(rewards, dones, gamma, next_value, "next_value")
    _check_float("values", values)
    _check_same("values", values, "rewards", rewards)
    _check_unit("lam", lam)


# ----------------------------------------------------------------------------- returns
def _reverse_scan(x: torch.Tensor, coef: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """``y_t = x_t + coef_t * y_{t+1}`` with ``y_T = last``: a loop over ``T`` on ``(B,)`` rows."""
    out = torch.empty_like(x)  # (T, B)
    for t in range(x.shape[0] - 1, -1, -1):
        last = x[t] + coef[t] * last  # (B,)
        out[t] = last
    return out


def discounted_returns(rewards: torch.Tensor, dones: torch.Tensor, gamma: float,
                       bootstrap: torch.Tensor | None = None) -> torch.Tensor:
    """Discounted returns ``R_t = r_t + gamma * (1 - done_t) * R_{t+1}``, ``R_T = bootstrap``.

    A reverse loop over ``T`` on whole ``(B,)`` rows. No closed form is used: the cumulative
    product of ``gamma * (1 - done)`` underflows to zero (and is exactly zero across a done),
    so dividing by it is not numerically sound.

    Args:
        rewards: ``(T, B)`` float rewards.
        dones: ``(T, B)`` bool/int/float, 1 where the episode ended at step ``t``.
        gamma: discount in ``[0, 1]``.
        bootstrap: ``(B,)`` value of the state after the last step, or ``None`` for zero.

    Returns:
        ``(T, B)`` returns, same dtype/device as ``rewards``. Inputs are detached: the result
        never carries a ``grad_fn``.
    """
    _check_rollout(rewards, dones, gamma, bootstrap, "bootstrap")
    rewards = rewards.detach()
    discount = gamma * (1.0 - dones.detach().to(rewards.dtype))  # (T, B)
    last = (torch.zeros_like(rewards[0]) if bootstrap is None
            else bootstrap.detach().to(rewards.dtype))  # (B,)
    return _reverse_scan(rewards, discount, last)


def discounted_returns_loop(rewards: torch.Tensor, dones: torch.Tensor, gamma: float,
                            bootstrap: torch.Tensor | None = None) -> torch.Tensor:
    """Slow twin of :func:`discounted_returns`: a double loop over ``t`` and ``b`` in floats."""
    _check_rollout(rewards, dones, gamma, bootstrap, "bootstrap")
    T, B = rewards.shape
    r, d = rewards.tolist(), dones.tolist()
    boot = [0.0] * B if bootstrap is None else bootstrap.tolist()
    out = [[0.0] * B for _ in range(T)]
    for b in range(B):
        running = float(boot[b])
        for t in reversed(range(T)):
            running = float(r[t][b]) + gamma * (1.0 - float(d[t][b])) * running
            out[t][b] = running
    return torch.tensor(out, dtype=rewards.dtype, device=rewards.device).reshape(T, B)


def gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor,
        next_value: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """Generalised advantage estimation (Schulman et al. 2016).

    ``delta_t = r_t + gamma * (1 - done_t) * V_{t+1} - V_t`` with ``V_T = next_value``, and
    ``A_t = delta_t + gamma * lam * (1 - done_t) * A_{t+1}`` with ``A_T = 0``. ``lam = 0`` gives
    the one-step TD error; ``lam = 1`` gives ``discounted_returns(bootstrap=next_value) - V``.

    Args:
        rewards: ``(T, B)`` float rewards.
        values: ``(T, B)`` critic values ``V(s_t)``.
        dones: ``(T, B)`` bool/int/float, 1 where the episode ended at step ``t``.
        next_value: ``(B,)`` value of the state after the last step.
        gamma: discount in ``[0, 1]``.
        lam: GAE lambda in ``[0, 1]``.

    Returns:
        ``(T, B)`` advantages, dtype/device of ``rewards``. All inputs are detached inside, so
        the advantages never carry a ``grad_fn`` and are safe to multiply with log-probs; the
        critic loss must use the caller's own (grad-carrying) ``values``.
    """
    _check_gae(rewards, values, dones, next_value, gamma, lam)
    rewards = rewards.detach()
    values = values.detach().to(rewards.dtype)
    not_done = 1.0 - dones.detach().to(rewards.dtype)  # (T, B)
    next_values = torch.cat([values[1:], next_value.detach().to(rewards.dtype)[None]])  # (T, B)
    deltas = rewards + gamma * not_done * next_values - values  # (T, B)
    return _reverse_scan(deltas, (gamma * lam) * not_done, torch.zeros_like(rewards[0]))


def gae_loop(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor,
             next_value: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """Slow twin of :func:`gae`: a double loop over ``t`` and ``b`` in Python floats."""
    _check_gae(rewards, values, dones, next_value, gamma, lam)
    T, B = rewards.shape
    r, v, d, nv = rewards.tolist(), values.tolist(), dones.tolist(), next_value.tolist()
    out = [[0.0] * B for _ in range(T)]
    for b in range(B):
        adv = 0.0
        for t in reversed(range(T)):
            nd = 1.0 - float(d[t][b])
            v_next = float(nv[b]) if t == T - 1 else float(v[t + 1][b])
            delta = float(r[t][b]) + gamma * nd * v_next - float(v[t][b])
            adv = delta + gamma * lam * nd * adv
            out[t][b] = adv
    return torch.tensor(out, dtype=rewards.dtype, device=rewards.device).reshape(T, B)


def lambda_returns(advantages: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """TD(lambda) critic targets ``advantages + values`` (all ``(T, B)``), detached."""
    _check_float("advantages", advantages)
    _check_same("values", values, "advantages", advantages)
    return advantages.detach() + values.detach().to(advantages.dtype)


# ----------------------------------------------------------------------------- normalisation
def normalize(x: torch.Tensor, mask: torch.Tensor | None = None,
              eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / (std + eps)`` over the valid entries; ``std`` divides by ``N``, not ``N-1``.

    Args:
        x: float tensor of any shape, typically ``(T, B)`` advantages.
        mask: optional tensor of ``x``'s shape, bool or 0/1 float; nonzero marks a valid entry.
        eps: added to the standard deviation.

    Returns:
        ``x``'s shape; invalid entries are 0 (all are 0 when none is valid). Differentiable:
        unlike the estimators it does not detach, so it has a ``grad_fn`` exactly when ``x`` does.
    """
    _check_float("x", x)
    if mask is not None:
        _check_same("mask", mask, "x", x)
    w = torch.ones_like(x) if mask is None else (mask != 0).to(x.dtype)  # x's shape
    count = w.sum().clamp_min(1.0)
    mean = (x * w).sum() / count
    centred = (x - mean) * w
    std = (centred.square().sum() / count).sqrt()
    return centred / (std + eps)


def normalize_loop(x: torch.Tensor, mask: torch.Tensor | None = None,
                   eps: float = 1e-8) -> torch.Tensor:
    """Slow twin of :func:`normalize`: loops over the flattened entries in Python floats."""
    _check_float("x", x)
    if mask is not None:
        _check_same("mask", mask, "x", x)
    flat = x.detach().reshape(-1).tolist()  # (N,)
    valid = [True] * len(flat) if mask is None else [m != 0 for m in mask.reshape(-1).tolist()]
    picked = [v for v, ok in zip(flat, valid) if ok]
    if not picked:
        return torch.zeros_like(x.detach())
    mean = sum(picked) / len(picked)
    std = (sum((v - mean) ** 2 for v in picked) / len(picked)) ** 0.5
    out = [(v - mean) / (std + eps) if ok else 0.0 for v, ok in zip(flat, valid)]
    return torch.tensor(out, dtype=x.dtype, device=x.device).reshape(x.shape)


# ----------------------------------------------------------------------------- baselines
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
