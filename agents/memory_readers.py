"""Memory readers: a recurrent controller that reads one past cell per step (hard attention).

Agents (``hardattn train --agent ... --env CopyMemory-v0 | AssociativeRecall-v0``):

- ``hard-read``: a categorical address policy over the cells written so far, trained by
  REINFORCE with the baseline menu (``--baseline none | ema | learned | loo | optimal``); the
  output symbol is trained by cross-entropy on the env's targets (``info["target"]``) of the
  scored steps: the hybrid loss of RAM (``hardattn.losses.hybrid_loss``).
- ``hard-read-ac``: the same, with a critic and GAE advantages (``--gae-lambda``).
- ``soft-read``: the same controller reading the softmax-weighted sum of the cells, trained
  end to end by backprop (no REINFORCE).
- ``memoryless``: the same controller without reads: the control that must fail.
- ``sab``: Sparse Attentive Backtracking (Ke et al. 2018) on this memory: every ``--sab-k-att``
  steps a soft read renormalised over the ``--sab-k-top`` best-scoring cells only, and
  backprop through the controller state truncated every ``--sab-k-trunc`` steps; gradients
  still reach the cells read (their keys and values) through the sparse attention. SAB's
  memory is the past controller states; here it is the env's memory (the past inputs).

The controller (``--core gru | lstm | rnn``, width ``--core-hidden``) sees at step ``t`` the
input of step ``t``, the content of the cell it read (the env's ``read`` observation for the
hard readers; its own weighted sum for the soft reader) and a sinusoidal code of ``t``
(``--time-code none`` zeroes that clock wherever it enters, so nothing learned depends on the
absolute step: CopyMemory policies learned at one delay then carry further). The
memory is the past inputs, as the env defines it: cell ``i`` holds the input of step ``i``;
its key is ``W_k [embed_key(input_i); pos(i)]``, its value (what a read returns) ``embed_read``
of its content, so a one-hot soft read equals the hard read of the same cell. The output
head sees the controller state and, through a skip path, the read itself. The query is
``W_q [h_t; pos(t)]``; ``--read-score``: ``dot`` q.k, ``scaled`` q.k/sqrt(d), ``general``
q W k, ``additive`` (Bahdanau) v.tanh(A q + U k), ``concat`` (Sparse Attentive Backtracking's
MLP on the concatenation) v.relu(W [q; k] + b). Cells not written yet are masked (the env
clips such addresses anyway). At evaluation the reads and outputs are argmax.

REINFORCE credit: the read of step ``t`` arrives at step ``t + 1``, so the address decision
of step ``t`` is credited with the rewards from step ``t + 1`` on (the causal return);
``--gamma 0`` credits it with the next reward only. ``--rb-top-k k`` (hard-read, gamma 0)
replaces the single-sample REINFORCE term by the top-k sum-and-sample (Rao-Blackwellised)
estimator.

Settings that learn CopyMemory T=20 in ~100-160 updates of 64 episodes on a CPU (tests and
``benchmarks/memory_copy.py``): ``--core gru --core-hidden 64 --batch-size 64 --lr 3e-3
--no-lr-decay --gamma 0 --normalize-advantages --entropy-coef 2 --read-score general``. The
entropy bonus is a mean over steps while the REINFORCE term is a sum over the episode's
steps, hence its size; without it the address policy collapses before it finds the cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hardattn import estimators as est
from hardattn.config import TrainConfig
from hardattn.losses import hybrid_loss

from .memory_common import (
    POS_DIM,
    Embed,
    MemoryTrainer,
    Scorer,
    channels,
    detach_state,
    lr_at,
    make_env,
    positions,
    repeat_state,
    replicate_episodes,
)
from .run import Run

MODES = {"hard-read": "hard", "hard-read-ac": "hard", "soft-read": "soft", "memoryless": "none",
         "sab": "sab"}
class MemoryReader(nn.Module):
    """Controller + address policy + output head + value head (see the module docstring).

    Args:
        input_nvec: vocabulary size of each input channel (the env's ``cfg.input_nvec``).
        n_cells: addressable cells. n_out: output vocabulary.
        hidden: controller width (also the embedding, key and query width).
        core: "gru", "lstm" or "rnn". score: the read score. mode: "hard", "soft", "sab" or
            "none". k_top, k_att, k_trunc: SAB's sparsity, attention period and truncation.
    """

    def __init__(self, input_nvec: tuple[int, ...], n_cells: int, n_out: int, hidden: int,
                 core: str = "gru", score: str = "general", mode: str = "hard",
                 k_top: int = 5, k_att: int = 1, k_trunc: int = 10,
                 time_code: str = "absolute") -> None:
        super().__init__()
        self.time_code = time_code
        self.k_top, self.k_att, self.k_trunc = k_top, k_att, k_trunc
        self.n_cells, self.hidden, self.mode, self.core_kind = n_cells, hidden, mode, core
        d = hidden
        self.embed_in = Embed(input_nvec, d)
        self.embed_read = Embed(input_nvec, d)
        self.embed_key = Embed(input_nvec, d)  # own table: the keys' scale is the policy's
        cell = {"gru": nn.GRUCell, "lstm": nn.LSTMCell, "rnn": nn.RNNCell}[core]
        self.core = cell(2 * d + POS_DIM, d)
        self.key = nn.Linear(d + POS_DIM, d)
        self.query = nn.Linear(d + POS_DIM, d)
        self.scorer = Scorer(score, d)
        self.out = nn.Linear(d, n_out)
        self.out_read = nn.Linear(d, n_out, bias=False)  # skip path: copy what was read
        self.value = nn.Linear(d + POS_DIM, 1)

    def init_state(self, B: int, device: torch.device):
        h = torch.zeros(B, self.hidden, device=device)
        return (h, torch.zeros_like(h)) if self.core_kind == "lstm" else h

    def clock(self, t: int, B: int, device: torch.device) -> torch.Tensor:
        """The time code of step ``t`` that the controller, query and value head see,
        ``(B, POS_DIM)``: sinusoidal, or zeros with ``time_code="none"`` (same shapes, so
        weights move between the two)."""
        if self.time_code == "none":
            return torch.zeros(B, POS_DIM, device=device)
        return positions(t, device=device).expand(B, POS_DIM)

    def advance(self, x: torch.Tensor, read_vec: torch.Tensor, t: int, state):
        """One controller step; returns ``(h (B, d), state)``."""
        pos = self.clock(t, x.shape[0], x.device)
        inp = torch.cat([self.embed_in(x), read_vec, pos], dim=-1)
        state = self.core(inp, state)
        return (state[0] if self.core_kind == "lstm" else state), state

    def cell_key(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Key of the cell written at step ``i`` with content ``x (B, C)``: ``(B, d)``."""
        pos = positions(i, device=x.device).expand(x.shape[0], POS_DIM)
        return self.key(torch.cat([self.embed_key(x), pos], dim=-1))

    def address_logits(self, h: torch.Tensor, t: int, keys: torch.Tensor) -> torch.Tensor:
        """Scores of the ``M`` cells written so far, ``(B, M)``."""
        pos = self.clock(t, h.shape[0], h.device)
        return self.scorer(self.query(torch.cat([h, pos], dim=-1)), keys)

    def baseline(self, h: torch.Tensor, t: int) -> torch.Tensor:
        """Value / baseline on the detached controller state, ``(B,)``."""
        pos = self.clock(t, h.shape[0], h.device)
        return self.value(torch.cat([h.detach(), pos], dim=-1))[:, 0]


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
                scores = model.address_logits(h, t, torch.stack(keys, 1))  # (B, M)
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


# ----------------------------------------------------------------------------- losses


def address_returns(ro: MemoryRollout, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal rewards and returns of the address decisions, both ``(L, B)``.

    The decision of step ``t`` is credited with ``r_{t+1}, r_{t+2}, ...``.
    """
    rew = torch.zeros_like(ro.rewards)
    rew[:-1] = ro.rewards[1:]
    dones = torch.zeros_like(rew)
    dones[-1] = 1.0
    return rew, est.discounted_returns(rew, dones, gamma)


def advantages(cfg: TrainConfig, ro: MemoryRollout, baselines: dict):
    """``(returns, value targets or None, detached advantages)`` of the address decisions."""
    rew, returns = address_returns(ro, cfg.gamma)
    L, B = returns.shape
    if cfg.agent == "hard-read-ac":
        dones = torch.zeros_like(rew)
        dones[-1] = 1.0
        if cfg.baseline == "none":
            adv = returns
        else:
            adv = est.gae(rew, ro.values, dones, torch.zeros_like(rew[0]), cfg.gamma,
                          cfg.gae_lambda)
        targets = est.lambda_returns(adv, ro.values) if cfg.baseline != "none" else None
    else:
        targets = returns if cfg.baseline == "learned" else None
        if cfg.baseline == "none":
            base = torch.zeros_like(returns)
        elif cfg.baseline == "learned":
            base = ro.values.detach()
        elif cfg.baseline == "ema":
            base = baselines["ema"].value().to(returns).expand_as(returns)
            baselines["ema"].update(returns)
        elif cfg.baseline == "optimal":
            base = baselines["optimal"].value().to(returns).expand_as(returns)
            baselines["optimal"].update(returns, ro.score_sq)
        else:  # leave-one-out over the S reads paths of each episode (consecutive rows)
            S = cfg.samples_per_image
            grouped = returns.view(L, B // S, S).permute(2, 0, 1).reshape(S, L * B // S)
            base = est.leave_one_out_baseline(grouped)
            base = base.view(S, L, B // S).permute(1, 2, 0).reshape(L, B)
        adv = returns - base
    if cfg.normalize_advantages:
        adv = est.normalize(adv)
    return returns, targets, adv.detach()


def output_ce(ro: MemoryRollout) -> torch.Tensor:
    """Cross-entropy of the outputs on the scored steps (mean over steps and episodes)."""
    lg, tg = ro.logits[ro.scored], ro.targets[ro.scored]
    return F.cross_entropy(lg.reshape(-1, lg.shape[-1]), tg.reshape(-1))


def loss_terms(cfg: TrainConfig, ro: MemoryRollout, baselines: dict) -> dict[str, torch.Tensor]:
    if ro.log_probs is None:  # soft-read, sab, memoryless: backprop only
        ce = output_ce(ro)
        return {"loss": ce, "loss_classify": ce}
    lg, tg = ro.logits[ro.scored], ro.targets[ro.scored]
    if ro.rb_log_probs is not None:  # top-k sum-and-sample (gamma 0: the next reward)
        _, returns = address_returns(ro, 0.0)
        learned = cfg.baseline == "learned"
        base = ro.values.detach() if learned else torch.zeros_like(returns)
        L, B, K1 = ro.rb_log_probs.shape
        adv = ro.rb_weights * (ro.rb_rewards - base[..., None])  # (L, B, K1)
        # Every (step, candidate) is one term of the REINFORCE sum: (L * (k+1), B).
        lp_flat = ro.rb_log_probs.permute(0, 2, 1).reshape(L * K1, B)
        adv_flat = adv.permute(0, 2, 1).reshape(L * K1, B).detach()
        return hybrid_loss(lg.reshape(-1, lg.shape[-1]), tg.reshape(-1), lp_flat, adv_flat,
                           values=ro.values if learned else None,
                           value_targets=returns if learned else None, entropy=ro.entropy,
                           reinforce_coef=cfg.reinforce_coef, value_coef=cfg.value_coef,
                           entropy_coef=cfg.entropy_coef, value_key="loss_baseline")
    _, targets, adv = advantages(cfg, ro, baselines)
    key = "loss_value" if cfg.agent == "hard-read-ac" else "loss_baseline"
    return hybrid_loss(lg.reshape(-1, lg.shape[-1]), tg.reshape(-1), ro.log_probs, adv,
                       values=ro.values if targets is not None else None,
                       value_targets=targets, entropy=ro.entropy,
                       reinforce_coef=cfg.reinforce_coef, value_coef=cfg.value_coef,
                       entropy_coef=cfg.entropy_coef, value_key=key)


def make_model(cfg: TrainConfig, env) -> MemoryReader:
    return MemoryReader(env.cfg.input_nvec, env.cfg.n_cells, env.cfg.n_out, cfg.core_hidden,
                        cfg.core, cfg.read_score, MODES[cfg.agent], cfg.sab_k_top,
                        cfg.sab_k_att, cfg.sab_k_trunc, cfg.time_code)


def safe_step(losses: dict, model: nn.Module, optimizer, cfg: TrainConfig) -> tuple[bool, float]:
    from .ram_common import safe_step as step

    return step(losses, model, optimizer, cfg)


# ----------------------------------------------------------------------------- diagnostics

ADDRESS_PARAMS = ("query.", "key.", "embed_key.", "scorer.")


def address_gradient_statistics(cfg: TrainConfig, model: MemoryReader, env, baselines: dict,
                                seed: int, draws: int = 8) -> dict[str, float]:
    """Variance and SNR of the address policy's REINFORCE gradient (``loss_reinforce`` with
    respect to the query, key and score parameters) over ``draws`` rollouts of the same
    episodes (``env.reset(seed=seed)``) with fresh address noise from a generator seeded by
    ``seed``; compares the estimators (plain, baselines, ``--rb-top-k``). Touches neither the
    training generators nor the baselines' running statistics."""
    import copy

    from hardattn.diagnostics import gradient_statistics

    params = [p for n, p in model.named_parameters() if n.startswith(ADDRESS_PARAMS)]
    gen = torch.Generator(device=env.device).manual_seed(seed)

    def estimate() -> torch.Tensor:
        ro = rollout(model, env, gen, seed=seed, repeat=cfg.samples_per_image,
                     rb_top_k=cfg.rb_top_k)
        loss = loss_terms(cfg, ro, copy.deepcopy(baselines))["loss_reinforce"]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return torch.cat([(torch.zeros_like(p) if g is None else g).flatten()
                          for g, p in zip(grads, params)])

    return gradient_statistics(estimate, draws=draws)


# ----------------------------------------------------------------------------- train


def train(cfg: TrainConfig) -> dict:
    """Train a memory reader; returns the report (val/test accuracy and CE, timings)."""
    with Run(cfg) as run:
        cfg, dev = run.cfg, run.device
        torch.manual_seed(cfg.seed)  # initial weights
        env = make_env(cfg, dev, cfg.batch_size)
        model = make_model(cfg, env).to(dev)
        run.init_weights(model)  # --init-from (fine-tuning, curricula)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        baselines = {"ema": est.EMABaseline(cfg.ema_decay),
                     "optimal": est.RunningOptimalBaseline(cfg.ema_decay)}
        noise = torch.Generator(device=dev).manual_seed(cfg.seed + 1)  # address sampling
        env.reset(seed=cfg.seed)
        grad_stats = None
        if MODES[cfg.agent] == "hard":
            diag_env = make_env(cfg, dev, cfg.batch_size)  # its own env: training is untouched

            def grad_stats(update: int) -> dict[str, float]:
                return address_gradient_statistics(cfg, model, diag_env, baselines,
                                                   seed=cfg.seed + 7919 + update)
        trainer = MemoryTrainer(run, env, model, optimizer, noise, baselines, rollout,
                                grad_stats)

        for update in run.updates(trainer.postfix):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(cfg, update)
            ro = rollout(model, env, noise, repeat=cfg.samples_per_image,
                         rb_top_k=cfg.rb_top_k)
            losses = loss_terms(cfg, ro, baselines)
            applied, grad_norm = safe_step(losses, model, optimizer, cfg)
            trainer.after_update(update, ro, losses, applied, grad_norm)
        return trainer.finish()
