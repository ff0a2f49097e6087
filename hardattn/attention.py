"""Soft-attention products over a set of keys, with backward passes that suit the CPU.

A recurrent soft reader (``soft-cnn``, the memory readers) scores ``P`` keys against a query
and reads their weighted sum at every one of ``T`` steps. Written with ``@`` these are batched
matrix-vector products, and autograd's backward of each is a batched *outer* product (a
``bmm`` with an inner dimension of 1) into a ``(B, P, d)`` gradient. On the CPU (MKL,
torch 2.x) that ``bmm`` runs about 5x slower than the same outer product written as a
broadcast multiply, and it dominated the soft-cnn update (38 % of it on cluttered60). The
functions here compute the same values; only their backward passes are written out.

Functions:
    scores(keys, q): ``(B, P, d), (B, d) -> (B, P)``, ``e_i = k_i . q``.
    read(alpha, values): ``(B, P), (B, P, d) -> (B, d)``, ``c = sum_i alpha_i v_i``.
    additive_scores(keys_u, query_w, v): ``(B, P, a), (B, a), (a,) -> (B, P)``,
        ``e_i = v . tanh(u_i + w)`` (Bahdanau et al. 2015), with ``u_i = U k_i`` and
        ``w = W q`` computed by the caller.

They support one backward pass (not double backward), on every device.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable


def _tanh_(z: torch.Tensor) -> torch.Tensor:
    """``tanh`` in place, as ``2 sigmoid(2 z) - 1``.

    torch's CPU ``tanh`` (Sleef, AVX-512) took 30 ms for 7.4M float32 values where ``sigmoid``
    took 2 ms, on the machines this project is measured on. The identity is exact in real
    arithmetic; in float32 it differs from ``torch.tanh`` by at most ~2e-7 in absolute value
    (one ulp of 1), which is below anything a softmax over the scores can resolve.
    """
    if z.device.type != "cpu":
        return z.tanh_()
    return torch.sigmoid(z.mul_(2), out=z).mul_(2).sub_(1)


class _Scores(torch.autograd.Function):
    @staticmethod
    def forward(ctx, keys: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(keys, q)
        return torch.bmm(keys, q.unsqueeze(2)).squeeze(2)  # (B, P, d) @ (B, d, 1) -> (B, P)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor):
        keys, q = ctx.saved_tensors
        g_keys = g_q = None
        if ctx.needs_input_grad[0]:
            g_keys = g.unsqueeze(2) * q.unsqueeze(1)  # outer product (B, P, 1) x (B, 1, d)
        if ctx.needs_input_grad[1]:
            g_q = torch.bmm(g.unsqueeze(1), keys).squeeze(1)  # (B, 1, P) @ (B, P, d) -> (B, d)
        return g_keys, g_q


class _Read(torch.autograd.Function):
    @staticmethod
    def forward(ctx, alpha: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(alpha, values)
        return torch.bmm(alpha.unsqueeze(1), values).squeeze(1)  # (B, 1, P) @ (B, P, d)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor):
        alpha, values = ctx.saved_tensors
        g_alpha = g_values = None
        if ctx.needs_input_grad[0]:
            g_alpha = torch.bmm(values, g.unsqueeze(2)).squeeze(2)  # (B, P, d) @ (B, d, 1)
        if ctx.needs_input_grad[1]:
            g_values = alpha.unsqueeze(2) * g.unsqueeze(1)  # outer product (B, P, 1) x (B, 1, d)
        return g_alpha, g_values


class _Additive(torch.autograd.Function):
    @staticmethod
    def forward(ctx, keys_u: torch.Tensor, query_w: torch.Tensor,
                v: torch.Tensor) -> torch.Tensor:
        t = _tanh_(keys_u + query_w.unsqueeze(1))  # (B, P, a), a fresh tensor
        ctx.save_for_backward(t, v)
        return t @ v  # (B, P)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor):
        t, v = ctx.saved_tensors
        g_z = torch.ops.aten.tanh_backward(g.unsqueeze(2) * v, t)  # (B, P, a): g v (1 - t^2)
        g_u = g_z if ctx.needs_input_grad[0] else None
        g_w = g_z.sum(1) if ctx.needs_input_grad[1] else None  # (B, a)
        g_v = None
        if ctx.needs_input_grad[2]:
            g_v = t.reshape(-1, t.shape[-1]).T @ g.reshape(-1)  # (a, B P) @ (B P,) -> (a,)
        return g_u, g_w, g_v


def _check(name: str, got: tuple[int, ...], want: tuple[int, ...]) -> None:
    if got != want:
        raise ValueError(f"{name} has shape {got}, expected {want}")


def scores(keys: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Dot-product scores ``e_i = k_i . q`` of every key against the query.

    Args:
        keys: ``(B, P, d)``.
        q: ``(B, d)``.

    Returns:
        ``(B, P)``; equal to ``(keys @ q[..., None]).squeeze(-1)``.
    """
    B, P, d = keys.shape
    _check("q", tuple(q.shape), (B, d))
    return _Scores.apply(keys, q)


def read(alpha: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The attention-weighted sum ``c = sum_i alpha_i v_i``.

    Args:
        alpha: ``(B, P)`` weights (usually a softmax over ``P``).
        values: ``(B, P, d)``.

    Returns:
        ``(B, d)``; equal to ``(alpha[:, None] @ values).squeeze(1)``.
    """
    B, P, d = values.shape
    _check("alpha", tuple(alpha.shape), (B, P))
    return _Read.apply(alpha, values)


def additive_scores(keys_u: torch.Tensor, query_w: torch.Tensor,
                    v: torch.Tensor) -> torch.Tensor:
    """Bahdanau scores ``e_i = v . tanh(u_i + w)``.

    Args:
        keys_u: ``(B, P, a)``, the keys' projections ``U k_i`` (computed once per image).
        query_w: ``(B, a)``, the query's projection ``W q (+ b)``.
        v: ``(a,)``, the score vector.

    Returns:
        ``(B, P)``; equal to ``torch.tanh(keys_u + query_w[:, None]) @ v`` within ~1e-6.
    """
    B, P, a = keys_u.shape
    _check("query_w", tuple(query_w.shape), (B, a))
    _check("v", tuple(v.shape), (a,))
    return _Additive.apply(keys_u, query_w, v)
