"""Estimators: fast functions against their loop twins, hand-computed cases, properties."""

from __future__ import annotations

import io

import pytest
import torch

from hardattn import baselines as bl
from hardattn import estimators as est

T, B = 7, 5
GAMMAS = (0.0, 0.5, 0.99, 1.0)
LAMS = (0.0, 0.9, 1.0)
DONE_PATTERNS = ("none", "all", "last", "sparse", "dense")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _dones(pattern: str, g: torch.Generator, t: int = T, b: int = B) -> torch.Tensor:
    if pattern == "none":
        return torch.zeros(t, b)
    if pattern == "all":
        return torch.ones(t, b)
    if pattern == "last":
        d = torch.zeros(t, b)
        d[-1] = 1.0
        return d
    p = 0.2 if pattern == "sparse" else 0.7
    return (torch.rand(t, b, generator=g) < p).float()


def _rollout(seed: int, pattern: str, dtype=torch.float64):
    g = _gen(seed)
    rewards = torch.randn(T, B, generator=g, dtype=dtype)
    values = torch.randn(T, B, generator=g, dtype=dtype)
    next_value = torch.randn(B, generator=g, dtype=dtype)
    return rewards, values, _dones(pattern, g).to(dtype), next_value


# ----------------------------------------------------------------------------- twins
@pytest.mark.parametrize("pattern", DONE_PATTERNS)
@pytest.mark.parametrize("gamma", GAMMAS)
def test_discounted_returns_matches_loop(gamma, pattern):
    rewards, _, dones, boot = _rollout(1, pattern)
    for bootstrap in (None, boot):
        fast = est.discounted_returns(rewards, dones, gamma, bootstrap)
        slow = est.discounted_returns_loop(rewards, dones, gamma, bootstrap)
        assert fast.shape == (T, B) and fast.dtype == torch.float64
        torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pattern", DONE_PATTERNS)
@pytest.mark.parametrize("lam", LAMS)
@pytest.mark.parametrize("gamma", GAMMAS)
def test_gae_matches_loop(gamma, lam, pattern):
    rewards, values, dones, next_value = _rollout(2, pattern)
    fast = est.gae(rewards, values, dones, next_value, gamma, lam)
    slow = est.gae_loop(rewards, values, dones, next_value, gamma, lam)
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)


def test_bool_dones_and_float32_agree_with_float64_loop():
    rewards, values, dones, next_value = _rollout(3, "sparse")
    f32 = [x.float() for x in (rewards, values, next_value)]
    fast = est.gae(f32[0], f32[1], dones.bool(), f32[2], 0.99, 0.9)
    assert fast.dtype == torch.float32
    slow = est.gae_loop(rewards, values, dones, next_value, 0.99, 0.9)
    torch.testing.assert_close(fast.double(), slow, rtol=1e-5, atol=1e-5)
    ret = est.discounted_returns(f32[0], dones.bool(), 0.99, f32[2])
    torch.testing.assert_close(ret.double(), est.discounted_returns_loop(
        rewards, dones, 0.99, next_value), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- hand cases
def test_discounted_returns_hand_computed():
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    dones = torch.tensor([[0.0], [1.0], [0.0]])
    # R2 = 3 + 0.5 * 4 = 5; R1 = 2 (done); R0 = 1 + 0.5 * 2 = 2
    out = est.discounted_returns(rewards, dones, 0.5, torch.tensor([4.0]))
    assert out.flatten().tolist() == [2.0, 2.0, 5.0]
    # Without bootstrap: R2 = 3, R1 = 2, R0 = 2
    assert est.discounted_returns(rewards, dones, 0.5).flatten().tolist() == [2.0, 2.0, 3.0]


def test_gae_hand_computed():
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [1.0], [1.5]])
    dones = torch.tensor([[0.0], [1.0], [0.0]])
    next_value = torch.tensor([2.0])
    # gamma = lam = 0.5:
    # delta2 = 3 + 0.5 * 2.0 - 1.5 = 2.5
    # delta1 = 2 + 0 - 1.0 = 1.0            (done at t=1: V2 is not used)
    # delta0 = 1 + 0.5 * 1.0 - 0.5 = 1.0
    # A2 = 2.5; A1 = 1.0 (done cuts A2); A0 = 1.0 + 0.25 * 1.0 = 1.25
    adv = est.gae(rewards, values, dones, next_value, 0.5, 0.5)
    assert adv.flatten().tolist() == [1.25, 1.0, 2.5]
    assert est.lambda_returns(adv, values).flatten().tolist() == [1.75, 2.0, 4.0]


@pytest.mark.parametrize("pattern", DONE_PATTERNS)
@pytest.mark.parametrize("gamma", GAMMAS)
def test_gae_lambda_one_is_returns_minus_values(gamma, pattern):
    rewards, values, dones, next_value = _rollout(4, pattern)
    adv = est.gae(rewards, values, dones, next_value, gamma, 1.0)
    ret = est.discounted_returns(rewards, dones, gamma, bootstrap=next_value)
    torch.testing.assert_close(adv, ret - values, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(est.lambda_returns(adv, values), ret, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("pattern", DONE_PATTERNS)
@pytest.mark.parametrize("gamma", GAMMAS)
def test_gae_lambda_zero_is_td_error(gamma, pattern):
    rewards, values, dones, next_value = _rollout(5, pattern)
    v_next = torch.cat([values[1:], next_value[None]])
    td = rewards + gamma * (1 - dones) * v_next - values
    torch.testing.assert_close(est.gae(rewards, values, dones, next_value, gamma, 0.0), td,
                               rtol=1e-12, atol=1e-12)


def test_nothing_leaks_back_across_a_done():
    rewards, values, dones, next_value = _rollout(6, "none")
    dones[3, :] = 1.0  # every episode ends at t = 3
    before_ret = est.discounted_returns(rewards, dones, 0.99, next_value)
    before_adv = est.gae(rewards, values, dones, next_value, 0.99, 0.95)
    r2, v2 = rewards.clone(), values.clone()
    r2[4:] += 10.0
    v2[4:] -= 7.0
    nv2 = next_value + 5.0
    after_ret = est.discounted_returns(r2, dones, 0.99, nv2)
    after_adv = est.gae(r2, v2, dones, nv2, 0.99, 0.95)
    assert torch.equal(after_ret[:4], before_ret[:4])
    assert torch.equal(after_adv[:4], before_adv[:4])
    # The change is visible after the boundary, so the check above is not vacuous.
    assert not torch.allclose(after_ret[4:], before_ret[4:])
    assert not torch.allclose(after_adv[4:], before_adv[4:])
    # Without the done the same change does reach t = 0.
    no_done = torch.zeros_like(dones)
    assert not torch.allclose(est.discounted_returns(r2, no_done, 0.99, nv2)[0],
                              est.discounted_returns(rewards, no_done, 0.99, next_value)[0])


# ----------------------------------------------------------------------------- normalize
def test_normalize_matches_loop_and_moments():
    g = _gen(7)
    x = torch.randn(T, B, generator=g, dtype=torch.float64) * 3 + 2
    out = est.normalize(x)
    torch.testing.assert_close(out, est.normalize_loop(x), rtol=1e-12, atol=1e-12)
    assert abs(out.mean().item()) < 1e-12
    assert abs(out.std(correction=0).item() - 1.0) < 1e-6
    mask = torch.rand(T, B, generator=g) < 0.6
    for m in (mask, mask.double()):
        masked = est.normalize(x, m)
        torch.testing.assert_close(masked, est.normalize_loop(x, m), rtol=1e-12, atol=1e-12)
        assert torch.all(masked[~mask] == 0)
        valid = masked[mask]
        assert abs(valid.mean().item()) < 1e-12 and abs(valid.std(correction=0).item() - 1) < 1e-6
    # Masked-out entries do not influence the valid ones.
    x2 = x.clone()
    x2[~mask] = 1e6
    torch.testing.assert_close(est.normalize(x2, mask), est.normalize(x, mask))
    # No valid entries: all zeros, no NaN.
    assert torch.equal(est.normalize(x, torch.zeros(T, B, dtype=torch.bool)), torch.zeros(T, B,
                       dtype=torch.float64))


# ----------------------------------------------------------------------------- baselines
def test_leave_one_out_matches_loop_and_hand_case():
    r = torch.randn(4, B, generator=_gen(8), dtype=torch.float64)
    torch.testing.assert_close(bl.leave_one_out_baseline(r), bl.leave_one_out_baseline_loop(r),
                               rtol=1e-12, atol=1e-12)
    hand = bl.leave_one_out_baseline(torch.tensor([[1.0], [2.0], [6.0]]))
    assert hand.flatten().tolist() == [4.0, 3.5, 1.5]


def test_leave_one_out_ignores_own_return():
    r = torch.randn(5, B, generator=_gen(9), dtype=torch.float64)
    base = bl.leave_one_out_baseline(r)
    for s in range(5):
        r2 = r.clone()
        r2[s, 2] += 100.0
        base2 = bl.leave_one_out_baseline(r2)
        assert base2[s, 2] == base[s, 2]  # own baseline unchanged
        others = [o for o in range(5) if o != s]
        assert torch.all(base2[others, 2] != base[others, 2])  # the others moved
        assert torch.equal(base2[:, [0, 1, 3, 4]], base[:, [0, 1, 3, 4]])  # other images too


def test_ema_baseline_hand_values_and_round_trip():
    ema = bl.EMABaseline(decay=0.5)
    assert ema.value().item() == 0.0
    ema.update(torch.tensor([1.0, 3.0]))  # batch mean 2: corrected value is exactly 2
    assert ema.value().item() == 2.0
    ema.update(torch.tensor([[4.0, 4.0]]))  # (0.5 * 0.5 * 2 + 0.5 * 4) / 0.75 = 10 / 3
    assert ema.value().item() == pytest.approx(10 / 3)
    _round_trip(ema, bl.EMABaseline(decay=0.5), lambda b, x: b.update(x))

    per = bl.EMABaseline(decay=0.9, per_step=True)
    per.update(torch.arange(6.0).reshape(3, 2))
    torch.testing.assert_close(per.value(), torch.tensor([[0.5], [2.5], [4.5]]))
    _round_trip(per, bl.EMABaseline(decay=0.9, per_step=True),
                lambda b, x: b.update(x.reshape(3, 2)))
    with pytest.raises(ValueError, match=r"\(4,\) does not match the shape \(3,\)"):
        per.update(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="per_step"):
        bl.EMABaseline(decay=0.9).load_state_dict(per.state_dict())


def _round_trip(baseline, fresh, update, *extra):
    buf = io.BytesIO()
    torch.save(baseline.state_dict(), buf)
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(fresh.value(), baseline.value())
    batch = torch.tensor([7.0, -1.0, 2.0, 0.5, 3.0, 1.0])
    update(baseline, batch, *extra)
    update(fresh, batch, *extra)
    assert torch.equal(fresh.value(), baseline.value())
    assert fresh.value().grad_fn is None


def _antithetic(seed: int, n: int = 200, d: int = 2):
    """Returns R (2n,) and scores g (2n, d) with empirical mean of g exactly zero."""
    g = _gen(seed)
    mean = torch.randn(n, d, generator=g, dtype=torch.float64)
    std = torch.rand(d, generator=g, dtype=torch.float64) * 0.5 + 0.1
    noise = torch.randn(n, d, generator=g, dtype=torch.float64) * std
    action = torch.cat([mean + noise, mean - noise])  # (2n, d): paired so scores cancel
    mean = torch.cat([mean, mean])
    ret = torch.randn(n, generator=g, dtype=torch.float64) * 2 + 3
    ret = torch.cat([ret, ret]) + action.square().sum(-1)  # (2n,) correlated with |g|
    return ret, action, mean, std


def test_gaussian_score_sq_norm_matches_autograd():
    _, action, mean, std = _antithetic(10, n=16)
    mu = mean.clone().requires_grad_(True)
    logp = torch.distributions.Normal(mu, std).log_prob(action).sum()
    (grad,) = torch.autograd.grad(logp, mu)
    out = bl.gaussian_score_sq_norm(action, mu, std)
    assert out.shape == (32,) and out.grad_fn is None
    torch.testing.assert_close(out, grad.square().sum(-1), rtol=1e-12, atol=1e-12)
    scalar = bl.gaussian_score_sq_norm(action, mean, 0.25)
    torch.testing.assert_close(scalar, ((action - mean) / 0.0625).square().sum(-1))


def test_optimal_baseline_minimises_empirical_variance():
    ret, action, mean, std = _antithetic(11)
    score = (action - mean) / std.square()  # (N, d)
    assert torch.allclose(score.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    g2 = bl.gaussian_score_sq_norm(action, mean, std)
    b_star = bl.optimal_scalar_baseline(ret, g2)
    torch.testing.assert_close(b_star, bl.optimal_scalar_baseline_loop(ret, g2),
                               rtol=1e-12, atol=1e-12)

    def total_var(b: torch.Tensor) -> torch.Tensor:  # b: (K,) -> (K,) trace of covariance
        est_ = (ret[None, :, None] - b[:, None, None]) * score[None]  # (K, N, d)
        return est_.var(dim=1, correction=0).sum(-1)

    grid = torch.linspace(ret.min().item(), ret.max().item(), 20001, dtype=torch.float64)
    v_grid = total_var(grid)
    best = grid[v_grid.argmin()]
    step = (grid[1] - grid[0]).item()
    assert abs(best.item() - b_star.item()) <= step
    assert total_var(b_star[None]).item() <= v_grid.min().item() + 1e-12
    # Not the plain mean here: the weighting by ||g||^2 matters for this data.
    assert total_var(ret.mean()[None]).item() > total_var(b_star[None]).item() * (1 + 1e-6)


def test_optimal_baseline_edge_cases_and_time_major():
    r = torch.randn(T, B, generator=_gen(12), dtype=torch.float64)
    g2 = torch.rand(T, B, generator=_gen(13), dtype=torch.float64)
    torch.testing.assert_close(bl.optimal_scalar_baseline(r, g2),
                               bl.optimal_scalar_baseline_loop(r, g2))
    # Constant ||g||^2: plain mean. Zero ||g||^2: falls back to the mean as well.
    torch.testing.assert_close(bl.optimal_scalar_baseline(r, torch.full_like(r, 3.0)), r.mean())
    zero = bl.optimal_scalar_baseline(r, torch.zeros_like(r))
    torch.testing.assert_close(zero, r.mean())
    torch.testing.assert_close(zero, bl.optimal_scalar_baseline_loop(r, torch.zeros_like(r)))


def test_running_optimal_baseline_decay_zero_and_round_trip():
    ret, action, mean, std = _antithetic(14, n=32)
    g2 = bl.gaussian_score_sq_norm(action, mean, std)
    run = bl.RunningOptimalBaseline(decay=0.0)
    assert run.value().item() == 0.0
    run.update(ret, g2)
    torch.testing.assert_close(run.value(), bl.optimal_scalar_baseline(ret, g2))
    # decay 0.5, two batches: num = 0.25 * num1 + 0.5 * num2, same for den; the ratio is
    # (num1 + 2 num2) / (den1 + 2 den2) with per-batch means num_k = mean(R g2), den_k = mean(g2).
    run = bl.RunningOptimalBaseline(decay=0.5)
    run.update(ret[:32], g2[:32])
    run.update(ret[32:] + 1.0, 2 * g2[32:])
    num = (ret[:32] * g2[:32]).mean() + 2 * ((ret[32:] + 1) * 2 * g2[32:]).mean()
    den = g2[:32].mean() + 2 * (2 * g2[32:]).mean()
    torch.testing.assert_close(run.value(), num / den)
    g2_batch = torch.tensor([1.0, 0.0, 2.0, 4.0, 0.5, 1.0], dtype=torch.float64)
    _round_trip(run, bl.RunningOptimalBaseline(decay=0.5),
                lambda b, x, w: b.update(x.double(), w), g2_batch)
    with pytest.raises(ValueError, match="decay"):
        bl.RunningOptimalBaseline(decay=0.9).load_state_dict(run.state_dict())


# ----------------------------------------------------------------------------- grads, RNG
def test_outputs_detached_except_normalize():
    rewards, values, dones, next_value = (x.requires_grad_(x.is_floating_point())
                                          for x in _rollout(15, "sparse"))
    outs = [est.discounted_returns(rewards, dones, 0.9, next_value),
            est.gae(rewards, values, dones, next_value, 0.9, 0.9),
            est.lambda_returns(values * 2, values),
            bl.leave_one_out_baseline(rewards),
            bl.optimal_scalar_baseline(rewards, values.square()),
            bl.gaussian_score_sq_norm(rewards, values, 0.5)]
    for out in outs:
        assert out.grad_fn is None and not out.requires_grad
    ema, run = bl.EMABaseline(per_step=True), bl.RunningOptimalBaseline()
    ema.update(rewards)
    run.update(rewards, values.square())
    assert not ema.value().requires_grad and not run.value().requires_grad
    assert est.normalize(rewards).grad_fn is not None
    assert est.normalize(rewards.detach()).grad_fn is None


def test_never_reads_global_rng():
    state = torch.get_rng_state()
    rewards, values, dones, next_value = _rollout(16, "dense")
    est.discounted_returns(rewards, dones, 0.9, next_value)
    est.gae(rewards, values, dones, next_value, 0.9, 0.9)
    est.normalize(rewards, dones)
    bl.leave_one_out_baseline(rewards)
    bl.optimal_scalar_baseline(rewards, values.square())
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    rewards, values, dones, next_value = _rollout(17, "sparse", dtype=torch.float32)
    cuda = [x.cuda() for x in (rewards, values, dones, next_value)]
    adv = est.gae(*cuda, 0.99, 0.95)
    assert adv.is_cuda
    torch.testing.assert_close(adv.cpu(), est.gae(rewards, values, dones, next_value, 0.99, 0.95))
    torch.testing.assert_close(est.normalize(cuda[0], cuda[2]).cpu(), est.normalize(rewards, dones))
    run = bl.RunningOptimalBaseline()
    run.update(cuda[0], cuda[1].square())
    assert run.value().is_cuda


# ----------------------------------------------------------------------------- shape errors
_R = torch.zeros(T, B)


@pytest.mark.parametrize("call, match", [
    (lambda: est.discounted_returns(torch.zeros(T), torch.zeros(T), 0.9), r"\(T, B\)"),
    (lambda: est.discounted_returns(_R, torch.zeros(T, B + 1), 0.9), r"dones.*\(7, 6\)"),
    (lambda: est.gae(*[torch.zeros(0, B)] * 3, torch.zeros(B), 0.9, 0.9), "T >= 1"),
    (lambda: est.discounted_returns(_R, _R, 0.9, torch.zeros(T)), r"bootstrap.*\(5,\)"),
    (lambda: est.discounted_returns(_R, _R, 1.5), "gamma"),
    (lambda: est.discounted_returns_loop(_R, _R, 0.9, torch.zeros(B, 1)), "bootstrap"),
    (lambda: est.gae(_R, torch.zeros(T + 1, B), _R, torch.zeros(B), 0.9, 0.9), "values"),
    (lambda: est.gae(_R, _R, _R, torch.zeros(1, B), 0.9, 0.9), "next_value"),
    (lambda: est.gae(_R, _R, _R, torch.zeros(B), 0.9, -0.1), "lam"),
    (lambda: est.gae_loop(_R, _R, _R[:1], torch.zeros(B), 0.9, 0.9), "dones"),
    (lambda: est.gae(_R.long(), _R, _R, torch.zeros(B), 0.9, 0.9), "floating"),
    (lambda: est.lambda_returns(_R, torch.zeros(B)), "values"),
    (lambda: est.normalize(_R, torch.zeros(B, T)), "mask"),
    (lambda: est.normalize_loop(_R, torch.zeros(T)), "mask"),
    (lambda: bl.leave_one_out_baseline(torch.zeros(1, B)), "S >= 2"),
    (lambda: bl.leave_one_out_baseline(torch.zeros(B)), r"\(S, B\)"),
    (lambda: bl.leave_one_out_baseline_loop(torch.zeros(1, B)), "S >= 2"),
    (lambda: bl.optimal_scalar_baseline(_R, torch.zeros(T)), "score_sq_norm"),
    (lambda: bl.optimal_scalar_baseline(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4)), "returns"),
    (lambda: bl.RunningOptimalBaseline().update(_R, torch.zeros(B)), "score_sq_norm"),
    (lambda: bl.EMABaseline(per_step=True).update(torch.zeros(B)), r"\(T, B\)"),
    (lambda: bl.EMABaseline(decay=1.0), "decay"),
    (lambda: bl.gaussian_score_sq_norm(torch.zeros(B, 2), torch.zeros(B, 3), 1.0), "mean"),
    (lambda: bl.gaussian_score_sq_norm(torch.zeros(B, 2), torch.zeros(B, 2),
                                        torch.ones(3)), "std"),
])
def test_shape_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_normalize_ignores_masked_values_and_has_finite_gradients():
    # Masked NaN/inf poisoned every entry; a zero variance gave NaN gradients (sqrt at 0).
    x = torch.tensor([1.0, 2.0, float("nan"), float("inf")], dtype=torch.float64)
    mask = torch.tensor([1, 1, 0, 0])
    torch.testing.assert_close(est.normalize(x, mask), est.normalize_loop(x, mask))
    for const in (torch.ones(4, dtype=torch.float64), torch.ones(1, dtype=torch.float64)):
        leaf = const.clone().requires_grad_(True)
        est.normalize(leaf).sum().backward()
        assert torch.isfinite(leaf.grad).all()
        assert torch.equal(est.normalize(const), est.normalize_loop(const))  # zeros, as before
