"""The run around an SB3 model (``agents/sb3.py``): its training envs, which can replay the
canvas of a checkpoint; validation on our fixed sets with the deterministic policy; SB3's
TensorBoard output with glimpse pictures; atomic checkpoints; and ``RunCallback``, which
does our bookkeeping (validation, best model, checkpoints, signals, progress) inside SB3's
loop."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import seeding
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Image, TensorBoardOutputFormat
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

import hardattn.envs  # noqa: F401  (registers the env ids)
from hardattn import checkpoint as ckpt
from hardattn import data
from hardattn.config import TrainConfig

from .ram_common import glimpse_paths_image
from .run import Run

EVAL_SEED = 12345  # seeds the env at every evaluation, as our agents' Evaluator does
ZIP = re.compile(r"^sb3_(\d+)\.zip$")


def _sensor_kwargs(cfg: TrainConfig) -> dict:
    return {k: getattr(cfg, k) for k in ("n_glimpses", "patch", "scales")
            if getattr(cfg, k) is not None}


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
                       action_type="multidiscrete", canvas=cfg.canvas_overrides(),
                       **_sensor_kwargs(cfg))
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
        self.first = data.fixed_first_locs(n) if cfg.first_glimpse == "random" else None
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
            options = {"canvases": (self.images[sl], self.labels[sl])}
            if self.first is not None:  # the fixed set's first glimpses, as every evaluator
                options["first_locs"] = self.first[sl]
            obs, _ = env.reset(options=options)
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
class ImageStepTensorBoard(TensorBoardOutputFormat):
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
            # What best.zip holds, for a resume from an older checkpoint (sb3.train).
            ckpt.atomic_write_text(self.run.ckpt_dir / "best.json",
                                   json.dumps(self.best, indent=2) + "\n")

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
