"""What the memory-read agents share: building blocks (position code, embeddings, read
scores), envs, fixed evaluation sets, bookkeeping.

The memory agents (``memory_readers.py``: ``hard-read``, ``hard-read-ac``, ``soft-read``,
``sab``, ``memoryless``) train on ``hardattn/CopyMemory-v0`` and ``hardattn/AssociativeRecall-v0``
through the batched torch env (``gym.make_vec``). One update is one batch of ``batch_size``
whole episodes: the env is reset (``env.reset()``; every episode has the same length, so this
is the NEXT_STEP autoreset done eagerly) and stepped ``L`` times. Seeds: initial weights
``torch.manual_seed(seed)``, episodes ``env.reset(seed=seed)`` then the env's own
``np_random``, address sampling ``seed + 1``; all generator states are in every checkpoint, so
resume equals uninterrupted.

Evaluation is deterministic (argmax addresses and outputs) on a fixed set of episodes: the
validation set is drawn from seed ``VAL_SEED``, the test set from ``TEST_SEED``, whatever the
training seed. The metric is the accuracy on the scored steps (CopyMemory: the last
``payload`` outputs; AssociativeRecall: the answer) and the cross-entropy there, in nats.
``--eval-T`` evaluates CopyMemory on another delay than the one trained on.
"""

from __future__ import annotations

import math

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import nn

import hardattn.envs  # noqa: F401  (registers the env ids)
from hardattn.config import TrainConfig

from .bookkeeping import Bookkeeper
from .run import Run
from .trainer_state import env_stream, torch_stream

VAL_SEED, TEST_SEED = 2_000_003, 3_000_017


# ----------------------------------------------------------------------------- building blocks
POS_DIM = 16


def positions(t: torch.Tensor | int, dim: int = POS_DIM,
              device: torch.device | None = None) -> torch.Tensor:
    """Sinusoidal code of step indices: ``(..., dim)`` for a tensor or ``(dim,)`` for an int."""
    t = torch.as_tensor(t, dtype=torch.float32, device=device)
    freqs = torch.exp(-math.log(1000.0) * torch.arange(0, dim, 2, device=t.device) / dim)
    ang = t[..., None] * freqs  # (..., dim/2)
    return torch.cat([ang.sin(), ang.cos()], dim=-1)


class Embed(nn.Module):
    """Sum of one embedding per input channel: ``long (B, C)`` -> ``(B, d)``."""

    def __init__(self, nvec: tuple[int, ...], d: int) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(n, d) for n in nvec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(table(x[..., c]) for c, table in enumerate(self.tables))


class Scorer(nn.Module):
    """Attention scores of one query ``(B, d)`` against keys ``(B, M, d)`` -> ``(B, M)``."""

    def __init__(self, kind: str, d: int) -> None:
        super().__init__()
        self.kind, self.d = kind, d
        if kind == "general":
            self.W = nn.Linear(d, d, bias=False)
        elif kind == "additive":
            self.A, self.U = nn.Linear(d, d, bias=False), nn.Linear(d, d)
            self.v = nn.Linear(d, 1, bias=False)
        elif kind == "concat":
            self.W = nn.Linear(2 * d, d)
            self.v = nn.Linear(d, 1, bias=False)
        elif kind not in ("dot", "scaled"):
            raise ValueError(f"read score {kind!r} is not one of dot, scaled, general, "
                             f"additive, concat")

    def forward(self, q: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        if self.kind in ("dot", "scaled"):
            s = torch.einsum("bd,bmd->bm", q, keys)
            return s / math.sqrt(self.d) if self.kind == "scaled" else s
        if self.kind == "general":
            # q . (W k) = (W^T q) . k: one (B, d) x (d, d) product per step instead of W
            # applied to every key (O(M d^2) per step for M cells).
            return torch.einsum("bd,bmd->bm", q @ self.W.weight, keys)
        if self.kind == "additive":
            return self.v(torch.tanh(self.A(q)[:, None] + self.U(keys)))[..., 0]
        qk = torch.cat([q[:, None].expand_as(keys), keys], dim=-1)  # (B, M, 2d)
        return self.v(F.relu(self.W(qk)))[..., 0]


def channels(x: torch.Tensor) -> torch.Tensor:
    """An observation of one channel ``(B,)`` as ``(B, 1)``; two channels stay ``(B, 2)``."""
    return x[:, None] if x.dim() == 1 else x


def detach_state(state):
    """A controller state (tensor or LSTM tuple) cut from the graph."""
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def repeat_state(state, k: int):
    """A controller state with every row repeated ``k`` times (consecutively)."""
    if isinstance(state, tuple):
        return tuple(s.repeat_interleave(k, 0) for s in state)
    return state.repeat_interleave(k, 0)




# The settings under which the readers learn CopyMemory and AssociativeRecall (the tests, the
# memory benchmarks and ``hardattn compare --preset copy-memory``): a GRU of 64, batch 64, a
# constant lr 3e-3, the general read score; for the REINFORCE readers the causal next-step
# reward (gamma 0), normalised advantages and a strong entropy bonus (the address policy
# collapses before it finds the cells without it).
READER_SETTINGS = dict(core="gru", core_hidden=64, batch_size=64, lr=3e-3, lr_decay=False,
                       gamma=0.0, normalize_advantages=True, entropy_coef=2.0,
                       read_score="general", baseline="learned")
_HARD_ONLY = ("entropy_coef", "normalize_advantages")


def reader_settings(agent: str) -> dict:
    """``READER_SETTINGS`` that apply to ``agent`` (the REINFORCE knobs to the hard readers).

    ``hard-read-ac`` gets ``gamma 0.5`` (GAE lambda at its default): at gamma 0 its critic
    advantage ``r - V`` is exactly hard-read's learned baseline, the same estimator; at 0.5 it
    learns CopyMemory T=20 as fast (99.9 % in 150 updates, one seed), at 1.0 it did not (38 %).
    """
    hard = agent in ("hard-read", "hard-read-ac")
    out = {k: v for k, v in READER_SETTINGS.items() if hard or k not in _HARD_ONLY}
    if agent == "hard-read-ac":
        out["gamma"] = 0.5
    return out


def cells_per_step(model: nn.Module, ro, n_cells: int) -> tuple[float, float]:
    """``(cells read, cells scored)`` per step of rollout ``ro``, averaged over its ``L`` steps
    and episodes: the cells whose content enters the controller (hard: 1; soft and SAB: the
    cells of non-zero weight) and the cells an address score is computed for (every cell
    written so far, at SAB's attention steps only); 0 and 0 without reads."""
    L = ro.rewards.shape[0]
    scored = sum(min(t + 1, n_cells) for t in range(L)) / L
    if model.mode == "hard":
        return 1.0, scored
    if model.mode in ("soft", "sab"):
        read = sum(float((w > 0).sum(-1).float().mean()) for w in ro.weights) / L
        if model.mode == "sab":
            scored = sum(min(t + 1, n_cells) for t in range(0, L, model.k_att)) / L
        return read, scored
    return 0.0, 0.0


def env_kwargs(cfg: TrainConfig, T: int | None = None) -> dict:
    """Constructor kwargs of ``cfg.env``: CopyMemory's delay ``T`` (``T`` or ``--memory-T``),
    AssociativeRecall's ``n_pairs`` (``--memory-pairs``), when given."""
    T = cfg.memory_T if T is None else T
    if "CopyMemory" in cfg.env_id and T is not None:
        return {"T": T}
    if "AssociativeRecall" in cfg.env_id and cfg.memory_pairs is not None:
        return {"n_pairs": cfg.memory_pairs}
    return {}


def make_env(cfg: TrainConfig, device: torch.device, num_envs: int, T: int | None = None):
    """The batched memory env of ``cfg`` (``max_episode_steps`` = the episode length)."""
    kwargs = env_kwargs(cfg, T)
    probe = gym.make_vec(cfg.env_id, num_envs=1, max_episode_steps=None, **kwargs)
    L = probe.cfg.episode_len
    probe.close()
    return gym.make_vec(cfg.env_id, num_envs=num_envs, device=device, max_episode_steps=L,
                        **kwargs)


def replicate_episodes(env, S: int) -> None:
    """Make rows ``S*i .. S*i+S-1`` the same episode (leave-one-out over S reads paths).

    Rewrites the freshly reset episodes of the env's task in place (the vector env holds the
    episodes as tensors; nothing else depends on them before the first step).
    """
    task = env._task
    task.inputs = task.inputs[::S].repeat_interleave(S, 0)
    task.targets = task.targets[::S].repeat_interleave(S, 0)


def lr_at(cfg: TrainConfig, update: int) -> float:
    """Cosine decay from ``lr`` to ``lr / 100`` over the budget (or constant)."""
    if not cfg.lr_decay:
        return cfg.lr
    frac = min(1.0, update / max(1, cfg.n_updates))
    return cfg.lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * frac)))


def scored_metrics(logits: torch.Tensor, targets: torch.Tensor,
                   scored: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Accuracy (%) and mean cross-entropy (nats) of ``(L, B, K)`` logits on scored steps."""
    lg, tg = logits[scored], targets[scored]  # (S, B, K), (S, B)
    acc = (lg.argmax(-1) == tg).float().mean() * 100.0
    ce = torch.nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]), tg.reshape(-1))
    return acc, ce


class MemoryEvaluator:
    """Deterministic evaluation on a fixed, seeded set of ``n`` episodes (val or test)."""

    def __init__(self, cfg: TrainConfig, device: torch.device, split: str, n: int) -> None:
        self.cfg, self.device, self.n = cfg, device, n
        self.batch = min(cfg.eval_batch, n)
        self.seed = VAL_SEED if split == "val" else TEST_SEED
        self.env = make_env(cfg, device, self.batch, T=cfg.eval_T or cfg.memory_T)

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module, rollout_fn) -> dict:
        was = model.training
        model.eval()
        accs, ces, reads = [], [], []
        for i in range(self.n // self.batch):
            # The first batch reseeds the env: the same episodes at every evaluation.
            ro = rollout_fn(model, self.env, None, greedy=True, seed=None if i else self.seed)
            acc, ce = scored_metrics(ro.logits, ro.targets, ro.scored)
            accs.append(acc)
            ces.append(ce)
            reads.append(ro.read_accuracy)
        model.train(was)
        acc = float(torch.stack(accs).mean())
        out = {"accuracy": acc, "error": 100.0 - acc, "ce": float(torch.stack(ces).mean())}
        if all(r is not None for r in reads):
            out["read_accuracy"] = float(torch.stack(reads).mean())
        return out


class MemoryTrainer:
    """Everything a memory agent does after its optimiser step, and the state it checkpoints.

    The twin of ``training.Trainer``: the same tags (``rollout/accuracy`` is the scored-step
    accuracy of the training batch), validation every ``eval_every`` updates on the fixed
    validation episodes, the best model by validation error in ``best.pt``, periodic
    checkpoints, and a report scored once on the fixed test episodes.
    """

    def __init__(self, run: Run, env, model: torch.nn.Module, optimizer,
                 noise: torch.Generator, baselines: dict, rollout_fn,
                 grad_stats=None) -> None:
        self.run, self.cfg, self.env, self.model = run, run.cfg, env, model
        self.noise, self.baselines = noise, baselines
        self.rollout_fn = rollout_fn
        self.grad_stats = grad_stats  # update -> {grad_var, grad_snr, grad_norm}, or None
        self.val = MemoryEvaluator(self.cfg, run.device, "val", self.cfg.eval_size)
        self.keep = Bookkeeper(run, model, optimizer, {"noise": torch_stream(noise),
                                                       "env_np_random": env_stream(env)},
                               baselines, unit="episodes")
        self.postfix = self.keep.postfix

    # ------------------------------------------------------------------ per update
    def after_update(self, update: int, ro, losses: dict, applied: bool,
                     grad_norm: float) -> None:
        cfg, log, keep = self.cfg, self.run.logger, self.keep
        step, last = keep.begin(update, applied)
        if keep.due(update, cfg.log_every, last):
            acc, ce = scored_metrics(ro.logits.detach(), ro.targets, ro.scored)
            attention = {}
            if ro.read_accuracy is not None:
                attention["read_accuracy"] = ro.read_accuracy
            if ro.entropy is not None:
                attention["address_entropy"] = ro.entropy.detach().mean()
            keep.log_update(step, {"accuracy": acc, "reward": ro.rewards.sum(0).mean(),
                                   "ce": ce}, losses, grad_norm, attention)
        if ro.addresses is not None and keep.due(update, cfg.image_every, last):
            log.histogram("attention/addresses", ro.addresses.detach().float().cpu(), step)
        if self.grad_stats is not None and cfg.grad_stats_every and keep.due(
                update, cfg.grad_stats_every, last):
            for k, v in self.grad_stats(update).items():
                log.record(f"attention/{k}", v)
            log.dump(step)
        if keep.eval_due(update, last):
            self.keep.select(update, step, self.val(self.model, self.rollout_fn))
        if keep.checkpoint_due(update, last):
            keep.checkpoint(update)

    # ------------------------------------------------------------------ the end
    def finish(self) -> dict:
        """Checkpoint on a signal (and exit), else report the best model on the test set."""
        cfg, keep = self.cfg, self.keep
        keep.load_best()
        test = MemoryEvaluator(cfg, self.run.device, "test", cfg.test_size)(self.model,
                                                                             self.rollout_fn)
        report = {**keep.report(test),
                  "val_accuracy_pct": 100.0 - keep.book.best["error"],
                  "test_accuracy_pct": test["accuracy"], "test_ce": test["ce"],
                  "T": getattr(self.env.cfg, "T", None),
                  "eval_T": getattr(self.val.env.cfg, "T", None)}
        if "read_accuracy" in test:
            report["test_read_accuracy_pct"] = test["read_accuracy"]
        if "CopyMemory" in cfg.env_id:
            report["last10_accuracy_pct"] = test["accuracy"]
            report["last10_ce"] = test["ce"]
        return keep.write_report(report, (
            f"hardattn: {cfg.agent} on {cfg.env_id}, seed {cfg.seed}: validation accuracy "
            f"{100 - report['val_error_pct']:.2f}% (update {report['best_update']}), test "
            f"accuracy {test['accuracy']:.2f}% (CE {test['ce']:.3f} nats) on "
            f"{cfg.test_size} test episodes (argmax reads), {report['wall_s']:.0f} s"))
