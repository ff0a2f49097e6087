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

import copy
import dataclasses
import json
import math
import os
import re
import signal
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Image, TensorBoardOutputFormat
from stable_baselines3.common.logger import Logger as SB3Logger
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

import hardattn.envs  # noqa: F401  (registers the env ids)
from hardattn import checkpoint as ckpt
from hardattn import data
from hardattn.config import TrainConfig

from .ram_common import glimpse_paths_image
from .run import Run, TrainingInterrupted

SB3_AGENTS = ("sb3-ppo", "sb3-recurrent-ppo")
MAX_ENVS = 16
EVAL_SEED = 12345  # as our agents' Evaluator: same first glimpses for every model
ZIP = re.compile(r"^sb3_(\d+)\.zip$")

# The fields SB3 runs use (the docstring gives the mapping); any other field must keep its
# default (or a value here that means "off"): SB3 would silently ignore it.
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
_USED = {
    "agent", "env", "seed", "device", "total_images", "epochs", "batch_size", "lr", "lr_decay",
    "n_glimpses", "patch", "scales", "first_glimpse", "core_hidden", "glimpse_hidden",
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


def _sensor_kwargs(cfg: TrainConfig) -> dict:
    return {k: getattr(cfg, k) for k in ("n_glimpses", "patch", "scales")
            if getattr(cfg, k) is not None}


def _algorithm(agent: str):
    if agent == "sb3-recurrent-ppo":
        from sb3_contrib import RecurrentPPO

        return RecurrentPPO
    return PPO


# ---------------------------------------------------------------------------------- envs
class _ResetRecorder(gym.Wrapper):
    """Keeps the env generator's state from before each ``reset``, and can replay one.

    A checkpoint stores ``episode_rng`` (the state that drew the current canvas); after
    ``restore`` is set, the next ``reset`` ignores its seed and starts from that state, so a
    resumed run draws the same canvases as an uninterrupted one.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.episode_rng: dict | None = None
        self.restore: dict | None = None

    def reset(self, *, seed=None, options=None):
        base = self.env.unwrapped
        if self.restore is not None:
            gen = np.random.Generator(np.random.PCG64())
            gen.bit_generator.state = self.restore
            base.np_random, self.restore = gen, None
        elif seed is not None:
            base.np_random, _ = seeding.np_random(seed)
        self.episode_rng = copy.deepcopy(base.np_random.bit_generator.state)
        return self.env.reset(seed=None, options=options)


def make_train_env(cfg: TrainConfig, n_envs: int) -> tuple[DummyVecEnv, list[_ResetRecorder]]:
    """``n_envs`` single ``GlimpseEnv`` (multidiscrete actions, train split) in a DummyVecEnv."""
    recorders: list[_ResetRecorder] = []

    def factory() -> gym.Env:
        env = gym.make(cfg.env_id, split="train", first_glimpse=cfg.first_glimpse,
                       action_type="multidiscrete", **_sensor_kwargs(cfg))
        recorders.append(_ResetRecorder(env))
        return Monitor(recorders[-1])  # episode stats for rollout/ep_rew_mean, success_rate

    venv = DummyVecEnv([factory] * n_envs)
    return venv, recorders


class FixedSetEvaluator:
    """Deterministic-policy accuracy on the first ``n`` canvases of the fixed val/test set."""

    def __init__(self, cfg: TrainConfig, split: str, n: int) -> None:
        preset = gym.spec(cfg.env_id).kwargs["preset"]
        self.images, self.labels = data.fixed_set(preset, split, n=n)
        self.batch, self.n = min(cfg.eval_batch, n), n
        self.env = gym.make_vec(cfg.env_id, num_envs=self.batch, split=split, device="cpu",
                                first_glimpse=cfg.first_glimpse, action_type="multidiscrete",
                                **_sensor_kwargs(cfg)).unwrapped

    def __call__(self, model, seed: int = EVAL_SEED) -> dict:
        """``accuracy``/``error`` in percent, ``correct (n,)`` bool, ``locs (T, 16, 2)``."""
        env, T = self.env, self.env.cfg.n_glimpses
        env.reset(seed=seed)
        correct, first_locs = [], None
        for start in range(0, self.n, self.batch):
            sl = slice(start, start + self.batch)
            obs, _ = env.reset(options={"canvases": (self.images[sl], self.labels[sl])})
            state, starts, locs = None, np.ones(self.batch, dtype=bool), []
            for _ in range(T):
                locs.append(obs["loc"])
                action, state = model.predict({k: v.cpu().numpy() for k, v in obs.items()},
                                              state=state, episode_start=starts,
                                              deterministic=True)
                starts = np.zeros(self.batch, dtype=bool)
                obs, reward, _, _, _ = env.step(action)
            correct.append(reward.cpu() > 0)  # reward 1 on the last step iff the class is right
            if first_locs is None:
                first_locs = torch.stack(locs)[:, :16].cpu()
        correct_t = torch.cat(correct)
        acc = 100.0 * float(correct_t.float().mean())
        return {"accuracy": acc, "error": 100.0 - acc, "correct": correct_t.numpy(),
                "locs": first_locs}


# ---------------------------------------------------------------------------------- logging
class _ImageStepTensorBoard(TensorBoardOutputFormat):
    """SB3's TensorBoard format on the ``Run``'s writer, with the step in images
    (``timesteps // T``) so the curves line up with our agents'."""

    def __init__(self, writer, steps_per_image: int) -> None:  # no super(): reuse the writer
        self.writer, self._is_closed, self.k = writer, False, steps_per_image

    def write(self, key_values, key_excluded, step: int = 0) -> None:
        super().write(key_values, key_excluded, step // self.k)

    def close(self) -> None:  # the Run's logger owns the writer
        self.writer.flush()


def _atomic_save(model, path: Path) -> None:
    """``model.save`` to a temporary file, fsync, rename over ``path`` (atomic on POSIX)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            model.save(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ckpt.CheckpointError(f"could not write checkpoint {str(path)!r}: {exc} (the "
                                   f"previous checkpoint, if any, is intact)") from exc


# ---------------------------------------------------------------------------------- callback
class RunCallback(BaseCallback):
    """Our bookkeeping around SB3's loop: validation, best model, checkpoints, signals, progress.

    An update (one rollout of ``B`` episodes and its PPO epochs) is finished when the next
    rollout starts, or when training ends; ``_after_update`` runs then, at a rollout boundary.
    """

    def __init__(self, run: Run, recorders: list[_ResetRecorder], val: FixedSetEvaluator,
                 T: int, best: dict) -> None:
        super().__init__()
        self.run, self.cfg, self.recorders, self.val, self.T = run, run.cfg, recorders, val, T
        self.best = best
        self.done = self.handled = run.start_update  # updates finished / bookkept
        self.boundary: tuple[int, dict] | None = None  # (last finished update, its snapshot)
        self.last_val: dict = {}
        self.bar = None

    def steps(self, updates: int) -> int:
        return updates * self.cfg.batch_size * self.T

    # SB3 hooks
    def _on_training_start(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=self.cfg.n_updates, initial=self.run.start_update, unit="upd",
                        disable=not self.cfg.progress, dynamic_ncols=True)
        self._t0, self._steps0 = self.run.elapsed(), self.num_timesteps

    def _on_rollout_start(self) -> None:
        if self.done > self.handled:
            self._after_update(self.done - 1)
        else:  # the first rollout of this session
            self.boundary = (self.done - 1, self._snapshot())

    def _on_step(self) -> bool:
        return self.run.stop_signal is None  # a signal: stop now, drop the partial rollout

    def _on_rollout_end(self) -> None:
        self.done += 1
        ips = (self.num_timesteps - self._steps0) / self.T / max(
            self.run.elapsed() - self._t0, 1e-9)
        self.logger.record("time/images_per_s", ips)

    def _on_training_end(self) -> None:
        if self.done > self.handled:
            self._after_update(self.done - 1)
        if self.bar is not None:
            self.bar.close()

    # our bookkeeping
    def _after_update(self, update: int) -> None:
        cfg = self.cfg
        last = update == cfg.n_updates - 1
        self.handled = update + 1
        if (update + 1) % cfg.eval_every == 0 or last:
            self.validate(update)
        snap = self._snapshot()
        self.boundary = (update, snap)
        if (update + 1) % cfg.checkpoint_every == 0 or last:
            self.checkpoint(update, snap)
        if self.bar is not None:
            self.bar.update(1)
            if self.last_val:
                self.bar.set_postfix({"val_acc": f"{self.last_val['accuracy']:.2f}"},
                                     refresh=False)

    def _snapshot(self) -> dict:
        return {"env_rng": [copy.deepcopy(r.episode_rng) for r in self.recorders],
                "rng": ckpt.rng_state(), "best": dict(self.best)}

    def validate(self, update: int) -> None:
        res = self.val(self.model)
        self.last_val = res
        self.logger.record("eval/accuracy", res["accuracy"])
        self.logger.record("eval/error", res["error"])
        img = glimpse_paths_image(self.val.images[:8], res["locs"], self.val.env.cfg)
        self.logger.record("attention/glimpse_paths_val", Image(img, "HWC"),
                           exclude=("stdout", "log", "json", "csv"))
        self.logger.dump(self.steps(update + 1))
        if res["error"] < self.best["error"]:
            self.best = {"error": res["error"], "update": update}
            _atomic_save(self.model, self.run.ckpt_dir / "best.zip")

    def state(self, update: int, snap: dict) -> dict:
        """What ``ckpt_<update>.pt`` holds besides the config: the zip's name, RNG states, best."""
        steps = self.steps(update + 1)
        return {"sb3_zip": f"sb3_{steps:010d}.zip", "num_timesteps": steps, **snap}

    def checkpoint(self, update: int, snap: dict) -> None:
        """``sb3_<timesteps>.zip`` and the Run's ``ckpt_<update>.pt``, then prune both."""
        steps = self.steps(update + 1)
        name = f"sb3_{steps:010d}.zip"
        now, self.model.num_timesteps = self.model.num_timesteps, steps  # at the boundary
        try:
            _atomic_save(self.model, self.run.ckpt_dir / name)
        finally:
            self.model.num_timesteps = now
        self.run.save(update, self.state(update, snap))
        kept = {self.steps(int(p.name[5:13]) + 1)
                for p in ckpt.periodic_checkpoints(self.run.ckpt_dir)}
        for p in self.run.ckpt_dir.iterdir():
            m = ZIP.match(p.name)
            if m and int(m.group(1)) not in kept:
                p.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------- train
def train(cfg: TrainConfig) -> dict:
    """Train an SB3 agent (``sb3-ppo`` / ``sb3-recurrent-ppo``); return the final report."""
    check_config(cfg)
    run = Run(cfg)  # validates, makes or reopens the folder, installs the signal handlers
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

    model.set_logger(SB3Logger(folder=str(run.dir),
                               output_formats=[_ImageStepTensorBoard(run.logger.writer, T)]))
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

    if run.stop_signal is not None:
        update, snap = callback.boundary  # the last finished update; its rollout is dropped
        if update < 0:
            run.restore_signal_handlers()  # not Run.close: it would save a checkpoint
            run.logger.close()
            msg = (f"hardattn: stopped by {signal.Signals(run.stop_signal).name} before the "
                   f"first update finished; nothing to resume")
            print(msg, file=sys.stderr, flush=True)
            raise TrainingInterrupted(msg, run.stop_signal)
        callback.checkpoint(update, snap)
        run.close(update, callback.state(update, snap))  # writes ckpt_<update>.pt again, exits
    run.close(cfg.n_updates - 1, {})  # no signal: only restores the signal handlers
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
    (run.dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"hardattn: {cfg.agent} on {cfg.env_id}, seed {cfg.seed}: validation error "
          f"{report['val_error_pct']:.2f}% (update {report['best_update']}), test error "
          f"{report['test_error_pct']:.2f}% on {cfg.test_size} test canvases "
          f"(deterministic policy), {report['wall_s']:.0f} s")
    print(f"hardattn: TensorBoard: tensorboard --logdir {run.dir}")
    return report
