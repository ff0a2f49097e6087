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


def _recurrent_reader(keys, h0, W, use_bank: bool, extra: bool, kinds=("scores", "read")):
    """T = 3 steps of: scores -> softmax -> read -> new query, over the same keys; with
    ``extra`` the keys also feed another path (as soft-cnn's ``U k`` does)."""
    bank = attention.KeyBank(keys) if use_bank else None
    k = bank.keys if use_bank else keys
    h, out = h0, (k * k).sum() if extra else 0.0
    for _ in range(3):
        if "scores" in kinds:
            e = bank.scores(h) if use_bank else (keys @ h[..., None]).squeeze(-1)  # (B, P)
        else:
            e = (h[:, None, :1] * torch.ones_like(k[..., :1])).squeeze(-1)  # no key gradient
        alpha = torch.softmax(e, dim=1)
        c = bank.read(alpha) if use_bank else (alpha[:, None] @ keys).squeeze(1)  # (B, d)
        h = torch.tanh(c @ W + h)
        out = out + (h * h).sum()
    return out


@pytest.mark.parametrize("extra", [False, True])
@pytest.mark.parametrize("kinds", [("scores", "read"), ("read",)])
def test_key_bank_gradients_equal_autograd_over_recurrent_steps(extra, kinds):
    g = torch.Generator().manual_seed(0)
    keys, h0, W = (torch.randn(3, 5, 4, generator=g, dtype=torch.float64),
                   torch.randn(3, 4, generator=g, dtype=torch.float64),
                   torch.randn(4, 4, generator=g, dtype=torch.float64))
    results = []
    for use_bank in (True, False):
        xs = [x.clone().requires_grad_() for x in (keys, h0, W)]
        out = _recurrent_reader(*xs, use_bank=use_bank, extra=extra, kinds=kinds)
        out.backward()
        results.append((out.detach(), [x.grad for x in xs]))
    (out, grads), (out_ref, grads_ref) = results
    assert torch.allclose(out, out_ref, atol=1e-12)
    for gr, gr_ref in zip(grads, grads_ref):
        assert torch.allclose(gr, gr_ref, atol=1e-12)


def test_key_bank_passes_gradcheck_and_a_second_backward_pass_starts_empty():
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
          for shape in ((2, 3, 4), (2, 4), (4, 4))]
    fn = lambda k, h, w: _recurrent_reader(k, h, w, use_bank=True, extra=True)  # noqa: E731
    assert torch.autograd.gradcheck(fn, xs)
    out = fn(*xs)
    first = torch.autograd.grad(out, xs[0], retain_graph=True)[0]
    second = torch.autograd.grad(out, xs[0])[0]
    assert torch.equal(first, second)  # the pending terms were used once, then cleared


def test_key_bank_float32_matches_the_matmul_forms():
    keys, q, alpha = _inputs(dtype=torch.float32)
    bank = attention.KeyBank(keys)
    assert torch.allclose(bank.scores(q), (keys @ q[..., None]).squeeze(-1), atol=1e-5)
    assert torch.allclose(bank.read(alpha), (alpha[:, None] @ keys).squeeze(1), atol=1e-5)


def test_key_bank_leaves_no_reference_cycle():
    import gc
    import weakref

    gc.disable()  # what is freed must be freed by reference counting alone
    try:
        keys = torch.randn(2, 3, 4, requires_grad=True)
        bank = attention.KeyBank(keys)
        ref = weakref.ref(bank.keys)
        out = bank.read(torch.softmax(bank.scores(torch.randn(2, 4)), 1)).sum()
        out.backward()
        del bank, out
        assert ref() is None
    finally:
        gc.enable()


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
    (lambda q: attention.KeyBank(torch.zeros(2, 3, 4)).scores(q), (torch.zeros(2, 5),), "q"),
    (lambda a: attention.KeyBank(torch.zeros(2, 3, 4)).read(a), (torch.zeros(2, 4),), "alpha"),
    (attention.KeyBank, (torch.zeros(3, 4),), "keys"),
    (attention.additive_scores, (torch.zeros(2, 3, 4), torch.zeros(2, 4), torch.zeros(5)), "v"),
])
def test_shape_mismatches_name_the_argument(fn, args, name):
    with pytest.raises(ValueError, match=rf"^{name} has shape"):
        fn(*args)
