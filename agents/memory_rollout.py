"""Memory readers' episodes: ``rollout`` plays one batch through a ``MemoryReader``.

``rollout`` resets the env and runs the controller step by step: reads (hard: a sampled
address, soft / sab: a weighted sum), outputs, rewards, and for the hard readers the
address log-probabilities, entropies, baselines and score norms that the losses need.
``rao_blackwell_candidates`` adds the top-k sum-and-sample candidates (``--rb-top-k``) with
their counterfactual next-step rewards. The model and the losses are in
``memory_readers.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .memory_common import channels, detach_state, repeat_state, replicate_episodes

if TYPE_CHECKING:
    from .memory_readers import MemoryReader


@dataclass
class MemoryRollout:
    """One batch of episodes, time-major (``L`` steps, ``B`` episodes)."""

    logits: torch.Tensor  # (L, B, K) output scores
    targets: torch.Tensor  # (L, B) the env's target symbols
    scored: torch.Tensor  # (L,) bool, the scored steps
    rewards: torch.Tensor  # (L, B)
    log_probs: torch.Tensor | None = None  # (L, B) of the sampled addresses (hard)
    entropy: torch.Tensor | None = None  # (L, B) address policy entropy (hard)
    values: torch.Tensor | None = None  # (L, B) baseline / critic (hard)
    addresses: torch.Tensor | None = None  # (L, B) addresses chosen (hard)
    score_sq: torch.Tensor | None = None  # (L, B) ||d log pi / d logits||^2 (hard)
    weights: list | None = None  # L tensors (B, M_t): soft read weights (soft)
    read_accuracy: torch.Tensor | None = None  # % of scored steps whose read held the target
    rb_log_probs: torch.Tensor | None = None  # (L, B, k+1) log pi of the top-k + sampled cells
    rb_weights: torch.Tensor | None = None  # (L, B, k+1) p(c) on the top k, 1 - p(top k)
    rb_rewards: torch.Tensor | None = None  # (L, B, k+1) next-step reward had c been read
    rb_candidates: torch.Tensor | None = None  # (L, B, k+1) the cells


def rollout(model: MemoryReader, env, noise: torch.Generator | None, greedy: bool = False,
            seed: int | None = None, repeat: int = 1, rb_top_k: int = 0) -> MemoryRollout:
    """Reset ``env`` (with ``seed``) and play one episode in every row.

    Hard mode samples addresses from ``noise`` (argmax when ``greedy``); outputs are argmax.
    ``repeat > 1`` makes groups of ``repeat`` consecutive rows the same episode.
    ``rb_top_k > 0`` (hard mode) also scores the top-k sum-and-sample candidates of every
    decision (see :func:`rao_blackwell_candidates`).
    """
    obs, _ = env.reset(seed=seed)
    if repeat > 1:
        replicate_episodes(env, repeat)
        obs = env._task.observe()
    L, n_cells = env.cfg.episode_len, env.cfg.n_cells
    B, dev = env.num_envs, env.device
    state = model.init_state(B, dev)
    keys, vals = [], []
    soft_read = None
    logits, targets, rewards, reads = [], [], [], []
    lps, ents, values, addrs, sq, weights = [], [], [], [], [], []
    zero_addr = torch.zeros(B, dtype=torch.long, device=dev)
    xs, states, full_logps = [], [], []
    for t in range(L):
        x, r = channels(obs["input"]), channels(obs["read"])
        xs.append(x)
        reads.append(r[:, -1])
        if t < n_cells:
            keys.append(model.cell_key(x, t))
            if model.mode in ("soft", "sab"):
                vals.append(model.embed_read(x))
        if model.mode == "hard" or (model.mode == "soft" and t == 0):
            read_vec = model.embed_read(r)  # the soft reader too starts from the blank read
        elif model.mode == "soft":
            read_vec = soft_read
        elif model.mode == "sab":
            # Steps without a read see the blank read (never the env's read of cell 0).
            read_vec = soft_read if soft_read is not None else \
                model.embed_read(torch.zeros_like(r))
            if t % model.k_trunc == 0:  # truncated BPTT through the controller state
                state = detach_state(state)
        else:
            read_vec = torch.zeros(B, model.hidden, device=dev)
        h, state = model.advance(x, read_vec, t, state)
        address = zero_addr
        if model.mode == "sab":
            soft_read = None  # no read unless this is an attention step
            if t % model.k_att == 0:
                # This read enters step t + 1. Where that step truncates, its query must not
                # carry the gradient back into h either, or the read path undoes the
                # truncation (full BPTT at k_att=1); keys, values and scorer still learn.
                query = h.detach() if (t + 1) % model.k_trunc == 0 else h
                scores = model.address_logits(query, t, torch.stack(keys, 1))  # (B, M)
                k = min(model.k_top, scores.shape[1])
                top = scores.topk(k, dim=-1).indices
                mask = torch.full_like(scores, float("-inf")).scatter(1, top, 0.0)
                w = (scores + mask).softmax(-1)  # zero outside the top k
                soft_read = torch.einsum("bm,bmd->bd", w, torch.stack(vals, 1))
                weights.append(w)
                address = w.argmax(-1)
        elif model.mode != "none":
            scores = model.address_logits(h, t, torch.stack(keys, 1))  # (B, M)
            if model.mode == "soft":
                w = scores.softmax(-1)
                soft_read = torch.einsum("bm,bmd->bd", w, torch.stack(vals, 1))
                weights.append(w)
                address = w.argmax(-1)
            else:
                logp = scores.log_softmax(-1)
                if greedy:
                    address = logp.argmax(-1)
                else:
                    address = torch.multinomial(logp.exp(), 1, generator=noise)[:, 0]
                p = logp.exp()
                lps.append(logp.gather(1, address[:, None])[:, 0])
                ents.append(-(p * logp).sum(-1))
                sq.append((1.0 - 2.0 * p.gather(1, address[:, None])[:, 0]
                           + p.square().sum(-1)).detach())
                values.append(model.baseline(h, t))
                addrs.append(address)
                full_logps.append(logp)
                states.append(detach_state(state))
        out_logits = model.out(h) + model.out_read(read_vec)
        logits.append(out_logits)
        obs, reward, _, _, info = env.step((address, out_logits.argmax(-1).detach()))
        targets.append(info["target"])
        rewards.append(reward)
    scored = env.cfg.scored_steps(dev)
    ro = MemoryRollout(torch.stack(logits), torch.stack(targets), scored, torch.stack(rewards))
    if model.mode == "hard":
        ro.log_probs, ro.entropy = torch.stack(lps), torch.stack(ents)
        ro.values, ro.addresses, ro.score_sq = torch.stack(values), torch.stack(addrs), \
            torch.stack(sq)
        got = torch.stack(reads)  # (L, B): the content read by the previous step
        ro.read_accuracy = (got[scored] == ro.targets[scored]).float().mean() * 100.0
        if rb_top_k > 0:
            rao_blackwell_candidates(model, ro, xs, states, full_logps, rb_top_k, noise)
    elif model.mode in ("soft", "sab"):
        ro.weights = weights
    return ro


@torch.no_grad()
def _counterfactual_rewards(model: MemoryReader, ro: MemoryRollout, X: torch.Tensor,
                            state, t: int, cand: torch.Tensor) -> torch.Tensor:
    """``(B, n)``: the reward of step ``t + 1`` had cell ``cand[b, j]`` been read at ``t``."""
    B, n = cand.shape
    C = X.shape[-1]
    content = X.gather(1, cand[..., None].expand(B, n, C)).reshape(B * n, C)
    read_vec = model.embed_read(content)
    h, _ = model.advance(X[:, t + 1].repeat_interleave(n, 0), read_vec, t + 1,
                         repeat_state(state, n))
    out = (model.out(h) + model.out_read(read_vec)).argmax(-1).view(B, n)
    hit = out == ro.targets[t + 1][:, None]
    return (hit & ro.scored[t + 1]).to(ro.rewards.dtype)


def rao_blackwell_candidates(model: MemoryReader, ro: MemoryRollout, xs: list, states: list,
                             logps: list, k: int, noise: torch.Generator | None) -> None:
    """The top-k sum-and-sample estimator's terms (Liu, Regier et al. 2019), per decision.

    For the decision of step ``t`` with policy ``p`` over ``M`` cells: the ``k`` most probable
    cells ``C`` are summed exactly, weighted by ``p(c)``, and one cell ``z`` is drawn from
    ``p`` restricted to the rest, weighted by ``1 - p(C)`` (no sample when ``k >= M``):
    ``g = sum_c p(c) f(c) grad log p(c) + (1 - p(C)) f(z) grad log p(z)`` is an unbiased,
    lower-variance replacement of ``f(a) grad log p(a)``. ``f(c)`` is the read's credit at
    ``gamma = 0``: the next step's reward, recomputed for a read of ``c`` from the
    controller state (one counterfactual step; the agent knows every cell's content, it saw
    them). The executed trajectory is the ordinary on-policy sample. Fills ``ro.rb_*``.
    """
    L, B = ro.rewards.shape
    K1 = k + 1
    X = torch.stack(xs, 1)  # (B, L, C): cell i holds the input of step i
    lps, wts, fs, cands = [], [], [], []
    for t in range(L):
        logp = logps[t]  # (B, M)
        p = logp.detach().exp()
        M = p.shape[1]
        kk = min(k, M)
        top = p.topk(kk, dim=-1).indices  # (B, kk)
        w = p.gather(1, top)
        cand, wt = [top], [w]
        if M > kk:
            rest = p.scatter(1, top, 0.0).clamp_min(0.0)
            rest = rest + (rest.sum(-1, keepdim=True) <= 0) * (1.0 - F.one_hot(top, M).sum(1))
            cand.append(torch.multinomial(rest, 1, generator=noise))
            wt.append((1.0 - w.sum(-1, keepdim=True)).clamp_min(0.0))
        cand, wt = torch.cat(cand, 1), torch.cat(wt, 1)
        pad = K1 - cand.shape[1]
        if pad:
            cand = torch.cat([cand, cand.new_zeros(B, pad)], 1)
            wt = torch.cat([wt, wt.new_zeros(B, pad)], 1)
        if t == L - 1:  # no step follows the last read: nothing to credit
            wt = torch.zeros_like(wt)
            f = torch.zeros_like(wt)
        else:
            f = _counterfactual_rewards(model, ro, X, states[t], t, cand)
        lps.append(logp.gather(1, cand))
        wts.append(wt)
        fs.append(f)
        cands.append(cand)
    ro.rb_log_probs, ro.rb_weights = torch.stack(lps), torch.stack(wts)
    ro.rb_rewards, ro.rb_candidates = torch.stack(fs), torch.stack(cands)
