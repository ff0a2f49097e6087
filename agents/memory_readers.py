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

Modules: the model, losses, diagnostics and ``train`` here; the episodes (``rollout``, the
Rao-Blackwellised candidates) in ``memory_rollout.py``.

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

import torch
import torch.nn.functional as F
from torch import nn

from hardattn import baselines as bl
from hardattn import estimators as est
from hardattn.config import TrainConfig
from hardattn.losses import hybrid_loss

from .memory_common import (
    POS_DIM,
    Embed,
    MemoryTrainer,
    Scorer,
    lr_at,
    make_env,
    positions,
)
from .memory_rollout import MemoryRollout, rollout
from .ram_common import make_optimizer
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
            base = bl.leave_one_out_baseline(grouped)
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
        optimizer = make_optimizer(model, cfg)
        baselines = {"ema": bl.EMABaseline(cfg.ema_decay),
                     "optimal": bl.RunningOptimalBaseline(cfg.ema_decay)}
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
