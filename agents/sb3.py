"""Stable-Baselines3 PPO and sb3-contrib RecurrentPPO on the glimpse task, run like our agents.

``hardattn train --agent sb3-ppo`` trains ``PPO("MultiInputPolicy")`` and ``--agent
sb3-recurrent-ppo`` trains ``RecurrentPPO("MultiInputLstmPolicy")``, both with
``GlimpseExtractor`` (a RAM-style glimpse network) as features extractor, on our single
``GlimpseEnv`` (``action_type="multidiscrete"``: a ``G x G`` location grid and the class) in a
``DummyVecEnv``. The run folder, config record, signals, validation on the fixed val set, model
selection, checkpoints, resume and the final test report follow our RAM agents
(``agents/training.py``), so their ``report.json`` files and TensorBoard curves compare.

Memory: plain PPO is memoryless. Its policy sees only the current glimpse, its location and the
step ``t``; the class chosen on the last step is read off the last glimpse alone, and no earlier
glimpse can inform where to look next. ``sb3-recurrent-ppo`` puts an LSTM between the extractor
and the heads, which carries memory across the glimpses of an episode (like RAM's core).

Both take every step's full ``MultiDiscrete`` action into the PPO ratio: the class part of
steps ``< T`` and the location of step ``T`` do not change the reward, so their score terms add
zero-mean noise to the gradient (the env's design; our RAM agents avoid it).

## Config -> SB3 (``B = --batch-size``, ``T`` = glimpses per episode)
- ``n_envs`` = the largest divisor of ``B`` that is ``<= 16`` (``DummyVecEnv`` steps them in
  turn; more envs only batch the policy's forward), ``n_steps = (B / n_envs) * T``: one rollout
  is exactly ``B`` whole episodes (``B * T`` steps), so one SB3 iteration is one of our updates
  and ``cfg.n_updates``, ``--eval-every``, ``--checkpoint-every`` and the image counts mean what
  they mean for our agents.
- SB3 ``batch_size`` (minibatch) = ``(B / m) * T`` steps, ``m`` the largest of 4, 2, 1 dividing
  ``B`` (4 minibatches of whole episodes by default); ``n_epochs`` = SB3's default 10;
  ``clip_range`` = SB3's default 0.2.
- ``total_timesteps = n_updates * B * T`` (the budget in canvases, rounded up to whole updates,
  times ``T``).
- ``learning_rate`` = ``--lr``, cosine-decayed to 1% over the budget with ``--lr-decay`` (the
  schedule of our agents, on SB3's progress); ``gamma``, ``gae_lambda``, ``max_grad_norm`` (0:
  no clipping), ``vf_coef = --value-coef``, ``ent_coef = --entropy-coef`` and
  ``normalize_advantage = --normalize-advantages`` are passed through (our defaults, not SB3's:
  gamma 1, lambda 0.9, vf_coef 1, no advantage normalisation).
- ``GlimpseExtractor``: ``features_dim = --glimpse-hidden``, ``what_hidden``, ``where_hidden``;
  RecurrentPPO's ``lstm_hidden_size = --core-hidden``. SB3's default heads
  (``net_arch`` pi/vf 64-64) sit on top.
- ``seed`` = ``--seed`` (SB3 seeds Python, numpy, torch and env ``i`` with ``seed + i``);
  ``device`` = the resolved ``--device`` (SB3 PPO with small MLPs is often as fast on CPU).
- Every other field (the RAM agents' ``--baseline``, ``--samples-per-image``, ``--std*``,
  ``--core``, ``--reinforce-coef``, ..., the backprop baselines' fields, and ``--core-hidden``
  for plain PPO) would be ignored by SB3: ``check_config`` rejects it unless left at its
  default (``--grad-stats-every 0``, "off", is accepted). ``--image-every``: glimpse-path
  images are logged at every validation instead.

## Logging, evaluation, checkpoints
SB3's own ``Logger`` writes ``rollout/``, ``train/`` and ``time/`` through a TensorBoard output
format into the run folder's event file (the ``Run``'s writer, so ``--resume`` purges the
steps after the checkpoint); the x-axis is training images (``timesteps / T``), as for our
agents. Every ``--eval-every`` updates (and after the last) the deterministic policy is scored
on the first ``--eval-size`` canvases of the fixed val set (``eval/accuracy``, ``eval/error``,
``attention/glimpse_paths_val``); the best is kept as ``checkpoints/best.zip``. Every
``--checkpoint-every`` updates (and after the last) ``checkpoints/sb3_<timesteps>.zip`` (SB3's
zip: weights, optimizer, counters) is written atomically next to ``ckpt_<update>.pt`` (the
``Run``'s record: config, RNG states, env RNG states, best so far), the newest
``--keep-checkpoints`` of each kept. At the end the best model is scored once on the fixed test
set and ``report.json`` is written.

Evaluation runs the episodes of a batch of ``--eval-batch`` canvases at once in
``GlimpseVecEnv`` (``reset(options={"canvases": ...})``, on CPU): the same ``GlimpseTask`` as
``GlimpseEnv.reset(options={"canvas": ...})`` one canvas at a time (``tests/test_sb3.py``
checks they agree), and the same canvases and first glimpses (seed 12345) as our agents'
``Evaluator``.

## Resume
``--resume RUN_DIR|ckpt_<update>.pt`` reloads ``sb3_<timesteps>.zip`` and continues with
``reset_num_timesteps=False``. Checkpoints are taken at rollout boundaries, where every
episode has just ended; with the RNG states (Python, numpy, torch, and each env's generator as
it was before drawing its current canvas) restored, a resumed run takes the same steps as an
uninterrupted one and ends with the same weights (tested on CPU). Not restored: SB3's
``iteration`` counter (``--log-every`` dumps count from the resume point) and its wall-clock
``time/`` values. A SIGINT/SIGTERM stops within the current rollout, discards it, and
checkpoints the last finished update.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import sys

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.logger import Logger as SB3Logger
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

import hardattn.envs  # noqa: F401  (registers the env ids)
from hardattn import checkpoint as ckpt
from hardattn import data
from hardattn.config import TrainConfig

from .ram_common import glimpse_paths_image
from .run import Run, TrainingInterrupted
from .sb3_run import FixedSetEvaluator, ImageStepTensorBoard, RunCallback, make_train_env

SB3_AGENTS = ("sb3-ppo", "sb3-recurrent-ppo")
MAX_ENVS = 16

# The fields SB3 runs use (the docstring gives the mapping); any other field must keep its
# default (or a value here that means "off"): SB3 would silently ignore it.
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
_USED = {
    "agent", "env", "seed", "device", "total_images", "epochs", "batch_size", "lr", "lr_decay",
    "n_glimpses", "patch", "scales", "first_glimpse", "augment_shift", "core_hidden",
    "glimpse_hidden",
    "what_hidden", "where_hidden", "normalize_advantages", "entropy_coef", "value_coef", "gamma",
    "gae_lambda", "max_grad_norm", "eval_every", "eval_size", "test_size", "eval_batch",
    "log_every", "checkpoint_every", "keep_checkpoints", "run_dir", "resume", "from_run",
    "deterministic", "progress", "threads",
}
_OFF = {"grad_stats_every": 0}


# ---------------------------------------------------------------------------------- network
class GlimpseExtractor(BaseFeaturesExtractor):
    """RAM's glimpse network as an SB3 features extractor for the glimpse env's ``Dict`` obs.

    Input (after SB3's ``preprocess_obs``, batch ``B``):
    - ``glimpse`` ``(B, S, 1, p, p)`` float in [0, 1] -> flatten -> Linear -> ReLU:
      ``what (B, what_hidden)``;
    - ``loc`` ``(B, 2)`` in [-1, 1] -> Linear -> ReLU: ``where (B, where_hidden)``;
    - ``t``: SB3 one-hot encodes the ``Discrete(T + 1)`` step: ``(B, T + 1)``, used as is.

    Output: ``ReLU(Linear([what, where, t]))`` of shape ``(B, features_dim)``.

    Args:
        observation_space: ``GlimpseEnv``'s ``Dict(glimpse, loc, t)``.
        features_dim: output width (``--glimpse-hidden``).
        what_hidden: width of the patch pathway (``--what-hidden``).
        where_hidden: width of the location pathway (``--where-hidden``).
    """

    def __init__(self, observation_space: spaces.Dict, features_dim: int = 256,
                 what_hidden: int = 128, where_hidden: int = 128) -> None:
        keys = set(getattr(observation_space, "spaces", {}))
        if keys != {"glimpse", "loc", "t"} or not isinstance(observation_space["t"],
                                                            spaces.Discrete):
            raise ValueError(f"GlimpseExtractor needs the glimpse env's Dict(glimpse, loc, "
                             f"t: Discrete) observation space, got {observation_space}")
        super().__init__(observation_space, features_dim)
        n_pixels = int(np.prod(observation_space["glimpse"].shape))  # S * 1 * p * p
        self.n_t = int(observation_space["t"].n)  # T + 1
        self.what = nn.Sequential(nn.Flatten(), nn.Linear(n_pixels, what_hidden), nn.ReLU())
        self.where = nn.Sequential(nn.Linear(2, where_hidden), nn.ReLU())
        self.combine = nn.Sequential(nn.Linear(what_hidden + where_hidden + self.n_t,
                                               features_dim), nn.ReLU())

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        t = observations["t"].float().reshape(-1, self.n_t)  # (B, T + 1) one-hot
        return self.combine(torch.cat([self.what(observations["glimpse"]),
                                       self.where(observations["loc"]), t], dim=1))


# ---------------------------------------------------------------------------------- config
def check_config(cfg: TrainConfig) -> TrainConfig:
    """Reject what SB3 would silently ignore; return ``cfg``.

    Raises:
        ValueError: naming every offending field and its value.
    """
    if cfg.agent not in SB3_AGENTS:
        raise ValueError(f"--agent={cfg.agent!r} is not one of {SB3_AGENTS} "
                         f"(hardattn.agents.sb3 trains only these)")
    bad = [f"--{k.replace('_', '-')}={v!r}" for k, v in cfg.to_dict().items()
           if k not in _USED and v != _DEFAULTS.get(k) and not (k in _OFF and v == _OFF[k])]
    if bad:
        raise ValueError(f"--agent {cfg.agent} does not use {', '.join(bad)}: these apply to "
                         f"other agents (--agent reinforce/actor-critic, or the backprop "
                         f"baselines); leave them at their defaults")
    if cfg.agent == "sb3-ppo" and cfg.core_hidden != _DEFAULTS["core_hidden"]:
        raise ValueError(f"--agent sb3-ppo does not use --core-hidden={cfg.core_hidden}: plain "
                         f"PPO has no recurrent core (it sets the LSTM width of "
                         f"--agent sb3-recurrent-ppo)")
    return cfg


def sb3_sizes(batch_size: int, n_glimpses: int) -> dict[str, int]:
    """``n_envs``, ``n_steps`` and the minibatch ``batch_size`` of one update of ``B`` canvases."""
    B, T = batch_size, n_glimpses
    n_envs = max(d for d in range(1, min(B, MAX_ENVS) + 1) if B % d == 0)
    m = next(m for m in (4, 2, 1) if B % m == 0)
    return {"n_envs": n_envs, "n_steps": B // n_envs * T, "batch_size": B // m * T}


class CosineLR:
    """SB3 learning-rate schedule: our agents' cosine decay to 1%, on SB3's progress."""

    def __init__(self, lr: float, decay: bool) -> None:
        self.lr, self.decay = lr, decay

    def __call__(self, progress_remaining: float) -> float:
        if not self.decay:
            return self.lr
        frac = min(1.0, max(0.0, 1.0 - progress_remaining))
        return self.lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * frac)))


def _algorithm(agent: str):
    if agent == "sb3-recurrent-ppo":
        from sb3_contrib import RecurrentPPO

        return RecurrentPPO
    return PPO


# ---------------------------------------------------------------------------------- train
def train(cfg: TrainConfig) -> dict:
    """Train an SB3 agent (``sb3-ppo`` / ``sb3-recurrent-ppo``); return the final report."""
    if not cfg.resume:  # a resume takes the agent and the rest from the run (checked below)
        check_config(cfg)
    # Run validates, makes or reopens the folder and installs the signal handlers; leaving
    # the block restores them, also when training raises.
    with Run(cfg) as run:
        return _train(run)


def _train(run: Run) -> dict:
    cfg, dev = run.cfg, run.device
    check_config(cfg)  # the stored config of a resumed run
    venv, recorders = make_train_env(cfg, sb3_sizes(cfg.batch_size, 1)["n_envs"])
    T = venv.envs[0].unwrapped.cfg.n_glimpses
    sizes = sb3_sizes(cfg.batch_size, T)
    Algo = _algorithm(cfg.agent)
    best = {"error": math.inf, "update": -1}

    if run.state is None:
        policy_kwargs = dict(features_extractor_class=GlimpseExtractor,
                             features_extractor_kwargs=dict(features_dim=cfg.glimpse_hidden,
                                                            what_hidden=cfg.what_hidden,
                                                            where_hidden=cfg.where_hidden))
        if cfg.agent == "sb3-recurrent-ppo":
            policy_kwargs["lstm_hidden_size"] = cfg.core_hidden
        policy = "MultiInputLstmPolicy" if cfg.agent == "sb3-recurrent-ppo" else \
            "MultiInputPolicy"
        model = Algo(policy, venv, learning_rate=CosineLR(cfg.lr, cfg.lr_decay),
                     n_steps=sizes["n_steps"], batch_size=sizes["batch_size"],
                     gamma=cfg.gamma, gae_lambda=cfg.gae_lambda,
                     normalize_advantage=cfg.normalize_advantages, ent_coef=cfg.entropy_coef,
                     vf_coef=cfg.value_coef, max_grad_norm=cfg.max_grad_norm or math.inf,
                     policy_kwargs=policy_kwargs, seed=cfg.seed, device=dev, verbose=0)
    else:
        s = run.state
        if "sb3_zip" not in s:
            raise ckpt.CheckpointError(f"{cfg.resume!r} is not a checkpoint of an SB3 run "
                                       f"(no sb3_zip in it)")
        path = run.ckpt_dir / s["sb3_zip"]
        if not path.exists():
            raise ckpt.CheckpointError(f"checkpoint {str(path)!r} does not exist (named by "
                                       f"ckpt_{s['update']:08d}.pt)")
        model = Algo.load(path, env=venv, device=dev)
        for r, state in zip(recorders, s["env_rng"]):
            r.restore = state  # the next reset redraws the canvases of the checkpoint
        ckpt.set_rng_state(s["rng"])  # after load: building the policy drew from torch's RNG
        if (run.ckpt_dir / "best.zip").exists():  # else lost: selection restarts from here
            best = dict(s["best"])
            # best.zip can be newer than this checkpoint (the run died between them): it stays
            # the best so far, so the report names the model it tests (see TrainerState).
            held = run.ckpt_dir / "best.json"
            if held.exists():
                newer = json.loads(held.read_text())
                if newer["update"] > best["update"]:
                    best = {"error": float(newer["error"]), "update": int(newer["update"])}

    model.set_logger(SB3Logger(folder=str(run.dir),
                               output_formats=[ImageStepTensorBoard(run.logger.writer, T)]))
    val = FixedSetEvaluator(cfg, "val", cfg.eval_size)
    callback = RunCallback(run, recorders, val, T, best)
    if run.state is not None:  # a signal before the first rollout re-saves this checkpoint
        callback.boundary = (run.state["update"],
                             {k: run.state[k] for k in ("env_rng", "rng", "best")})
    total = callback.steps(cfg.n_updates)
    remaining = total - (0 if run.state is None else model.num_timesteps)
    if remaining > 0:
        model.learn(remaining, callback=callback, log_interval=cfg.log_every,
                    reset_num_timesteps=run.state is None, progress_bar=False)

    # Restored before the check, not after it: a signal between the two would make Run.close
    # write a checkpoint without the SB3 state over the last real one.
    run.restore_signal_handlers()
    if run.stop_signal is not None:
        update, snap = callback.boundary  # the last finished update; its rollout is dropped
        if update < 0:
            run.logger.close()
            msg = (f"hardattn: stopped by {signal.Signals(run.stop_signal).name} before the "
                   f"first update finished; nothing to resume")
            print(msg, file=sys.stderr, flush=True)
            raise TrainingInterrupted(msg, run.stop_signal)
        callback.checkpoint(update, snap)
        run.close(update, callback.state(update, snap))  # writes ckpt_<update>.pt again, exits
    return _finish(run, callback, Algo, T)


def _finish(run: Run, callback: RunCallback, Algo, T: int) -> dict:
    """Score the best model once on the fixed test set; write ``report.json``; print."""
    cfg, best = run.cfg, callback.best
    path = run.ckpt_dir / "best.zip"
    if not path.exists():
        raise ckpt.CheckpointError(f"{str(path)!r} does not exist: no model to test")
    model = Algo.load(path, device=run.device)
    tester = FixedSetEvaluator(cfg, "test", cfg.test_size)
    test = tester(model)
    images = cfg.n_updates * cfg.batch_size
    report = {
        "env": cfg.env_id, "agent": cfg.agent, "seed": cfg.seed,
        "val_error_pct": best["error"], "best_update": best["update"],
        "test_error_pct": test["error"], "test_size": cfg.test_size, "images": images,
        "canvas_set_version": data.GENERATOR_VERSION,  # of the val/test sets
        "wall_s": run.elapsed(),
        "images_per_s": (cfg.n_updates - run.start_update) * cfg.batch_size / run.elapsed(),
        "nonfinite_steps": 0,  # SB3 never skips a step (a NaN stops it with an error)
        "device": str(run.device), "run_dir": str(run.dir),
    }
    log = run.logger
    log.image("attention/glimpse_paths_test",
              glimpse_paths_image(tester.images[:8], test["locs"], tester.env.cfg), images)
    log.hparams({k: v for k, v in cfg.to_dict().items() if v is not None},
                {"hparam/val_error": report["val_error_pct"],
                 "hparam/test_error": report["test_error_pct"]})
    log.close()
    # Atomic: its presence marks the run finished (compare, --resume), so whole or absent.
    ckpt.atomic_write_text(run.dir / "report.json", json.dumps(report, indent=2) + "\n")
    print(f"hardattn: {cfg.agent} on {cfg.env_id}, seed {cfg.seed}: validation error "
          f"{report['val_error_pct']:.2f}% (update {report['best_update']}), test error "
          f"{report['test_error_pct']:.2f}% on {cfg.test_size} test canvases "
          f"(deterministic policy), {report['wall_s']:.0f} s")
    print(f"hardattn: TensorBoard: tensorboard --logdir {run.dir}")
    return report
