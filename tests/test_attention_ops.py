"""``hardattn.attention``: the hand-written backward passes equal autograd's, on references."""

from __future__ import annotations

import pytest
import torch

from hardattn import attention


def _inputs(B=3, P=5, d=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, P, d, generator=g, dtype=dtype),
            torch.randn(B, d, generator=g, dtype=dtype),
            torch.randn(B, P, generator=g, dtype=dtype))


def _grads(fn, *xs):
    """Values and input gradients of ``(fn(*xs) * w).sum()`` for a fixed random ``w``."""
    xs = [x.detach().clone().requires_grad_() for x in xs]
    out = fn(*xs)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    (out * w).sum().backward()
    return out.detach(), [x.grad for x in xs]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_scores_and_read_equal_their_matmul_references(dtype):
    keys, q, alpha = _inputs(dtype=dtype)
    tol = {"atol": 1e-12} if dtype == torch.float64 else {"atol": 1e-5}
    for fn, ref, xs in [
        (attention.scores, lambda k, q: (k @ q[..., None]).squeeze(-1), (keys, q)),
        (attention.read, lambda a, v: (a[:, None] @ v).squeeze(1), (alpha, keys)),
    ]:
        out, grads = _grads(fn, *xs)
        out_ref, grads_ref = _grads(ref, *xs)
        assert out.dtype == dtype and torch.allclose(out, out_ref, **tol)
        for g, g_ref in zip(grads, grads_ref):
            assert g.shape == g_ref.shape and torch.allclose(g, g_ref, **tol)


def test_additive_scores_equal_the_tanh_reference_and_pass_gradcheck():
    keys, q, _ = _inputs()
    v = torch.randn(4, dtype=torch.float64)
    ref = lambda u, w, v: torch.tanh(u + w[:, None]) @ v  # noqa: E731
    out, grads = _grads(attention.additive_scores, keys, q, v)
    out_ref, grads_ref = _grads(ref, keys, q, v)
    # float64: 2 sigmoid(2z) - 1 is tanh to rounding
    assert torch.allclose(out, out_ref, atol=1e-12)
    for g, g_ref in zip(grads, grads_ref):
        assert torch.allclose(g, g_ref, atol=1e-12)
    args = [x.clone().requires_grad_() for x in (keys, q, v)]
    assert torch.autograd.gradcheck(attention.additive_scores, args)
    assert torch.autograd.gradcheck(attention.scores, args[:2])
    assert torch.autograd.gradcheck(
        attention.read, [_inputs()[2].requires_grad_(), keys.clone().requires_grad_()])


def test_tanh_through_sigmoid_is_within_an_ulp_of_one_in_float32():
    z = torch.linspace(-20, 20, 200_001)
    got = attention._tanh_(z.clone())
    assert (got - torch.tanh(z)).abs().max() <= 2.5e-7
    assert got.abs().max() <= 1  # never outside tanh's range


def test_only_requested_gradients_are_computed_and_inputs_are_not_modified():
    keys, q, _ = _inputs(dtype=torch.float32)
    v = torch.randn(4)
    u = keys.clone()
    k = keys.clone().requires_grad_()
    attention.additive_scores(k, q, v).sum().backward()  # q, v without grad: None for them
    assert k.grad is not None and torch.equal(k.detach(), u)  # tanh in place on a copy only


@pytest.mark.parametrize("fn, args, name", [
    (attention.scores, (torch.zeros(2, 3, 4), torch.zeros(2, 5)), "q"),
    (attention.read, (torch.zeros(2, 4), torch.zeros(2, 3, 4)), "alpha"),
    (attention.additive_scores, (torch.zeros(2, 3, 4), torch.zeros(2, 4), torch.zeros(5)), "v"),
])
def test_shape_mismatches_name_the_argument(fn, args, name):
    with pytest.raises(ValueError, match=rf"^{name} has shape"):
        fn(*args)
