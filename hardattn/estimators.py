"""Return and advantage estimators: pure functions over time-major ``(T, B)`` tensors.

In the style of TorchRL's ``objectives/value/functional.py``; every fast function has a slow
twin ``*_loop`` in Python floats that the tests compare against. Conventions:

* ``(T, B)`` is time-major: ``T`` steps of ``B`` parallel episodes. ``dones[t] = 1`` when the
  episode ended at step ``t``, after reward ``r_t`` (bool, int or 0/1 float); nothing after ``t``
  flows back into ``t``. Truncations are not terminations: fold ``gamma * V(final_obs)`` into
  the truncated step's reward, or do not mark it done.
* Returns and advantages are targets: their functions detach the inputs, so outputs never
  carry a ``grad_fn``. ``normalize`` is the exception: it is differentiable.
* No global RNG, no device synchronisation; CPU or CUDA, float32 or float64 (kept from inputs).

The baselines subtracted from these returns live in :mod:`hardattn.baselines`.

References: Sutton & Barto 2018, ch. 12 (lambda-returns); Schulman et al. 2016, "High-Dimensional
Continuous Control Using Generalized Advantage Estimation" (GAE).
"""

from __future__ import annotations

import torch

__all__ = [
    "discounted_returns", "discounted_returns_loop", "gae", "gae_loop", "lambda_returns",
    "normalize", "normalize_loop",
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
    x = torch.where(w > 0, x, 0.0)  # masked entries may hold anything (NaN, inf)
    count = w.sum().clamp_min(1.0)
    mean = (x * w).sum() / count
    centred = (x - mean) * w
    var = centred.square().sum() / count
    # sqrt's gradient is infinite at 0: take it where var > 0 only (std is 0 there, as before).
    std = torch.where(var > 0, var, 1.0).sqrt() * (var > 0)
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
