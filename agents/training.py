"""The bookkeeping around a RAM update: logging, validation, model selection, checkpoints,
resume, estimator diagnostics and the final test report. Shared by the RAM agents so that
their ``train(cfg)`` holds only the learning itself."""

from __future__ import annotations

import copy
from collections.abc import Callable

import gymnasium as gym
import torch

from hardattn import data
from hardattn.diagnostics import gradient_statistics

from . import distributed
from .bookkeeping import Bookkeeper
from .ram_common import Evaluator, Rollout, glimpse_paths_image, make_env, rollout
from .run import Run
from .trainer_state import env_stream, torch_stream


class Trainer:
    """Everything a RAM agent does after its optimiser step, and the state it checkpoints."""

    def __init__(self, run: Run, env, model: torch.nn.Module, optimizer, noise: torch.Generator,
                 baselines: dict) -> None:
        self.run, self.cfg, self.env, self.model = run, run.cfg, env, model
        self.noise, self.baselines = noise, baselines
        self.val = Evaluator(self.cfg, run.device, "val", self.cfg.eval_size)
        self.keep = Bookkeeper(run, model, optimizer, {"noise": torch_stream(noise),
                                                       "env_np_random": env_stream(env)},
                               baselines)
        self.postfix = self.keep.postfix
        self._diag = None
        if run.state is not None and distributed.rank() > 0:
            # The checkpoint holds rank 0's streams: reseed the others.
            seed = distributed.rank_seed(self.cfg.seed) + 7919 * run.start_update
            self.noise.manual_seed(seed + 1)
            self.env.reset(seed=seed)

    # ------------------------------------------------------------------ per update
    def after_update(self, update: int, ro: Rollout, losses: dict, applied: bool,
                     grad_norm: float, std: float | None,
                     loss_fn: Callable[[Rollout, dict], dict]) -> None:
        cfg, log, keep = self.cfg, self.run.logger, self.keep
        step, last = keep.begin(update, applied)
        if keep.due(update, cfg.log_every, last):
            reward = ro.reward.mean()
            keep.log_update(step, {"accuracy": reward * 100.0, "reward": reward}, losses,
                            grad_norm, {"location_std": ro.std.detach().mean(),
                                        "mean_abs_location": ro.actions.abs().mean()})
        if keep.due(update, cfg.image_every, last):
            log.histogram("attention/locations_x", ro.actions[..., 0].detach().cpu(), step)
            log.histogram("attention/locations_y", ro.actions[..., 1].detach().cpu(), step)
        if cfg.grad_stats_every and keep.due(update, cfg.grad_stats_every, last):
            for k, v in self.grad_stats(update, std, loss_fn).items():
                log.record(f"attention/{k}", v)
            log.dump(step)
        if keep.eval_due(update, last):
            self.validate(update, step)
        if keep.checkpoint_due(update, last):
            distributed.assert_in_sync(self.model)
            keep.checkpoint(update)

    def validate(self, update: int, step: int) -> None:
        res = self.val(self.model)
        self.run.logger.image("attention/glimpse_paths_val",
                              glimpse_paths_image(self.val.images[:8], res["locs"], self.env.cfg),
                              step)
        self.keep.select(update, step, res)

    def grad_stats(self, update: int, std: float | None, loss_fn) -> dict[str, float]:
        """Variance and SNR of the location head's REINFORCE gradient on one fixed batch."""
        cfg = self.cfg
        if self._diag is None:
            preset = gym.spec(cfg.env_id).kwargs["preset"]
            n = cfg.batch_size // cfg.samples_per_image
            images, labels = data.fixed_set(preset, "train", n=n)
            S = cfg.samples_per_image
            self._diag = (make_env(cfg, self.run.device, cfg.batch_size),
                          (images.repeat_interleave(S, 0), labels.repeat_interleave(S, 0)))
        env, canvases = self._diag
        params = [p for p in self.model.location.parameters() if p.requires_grad]
        gen = torch.Generator(device=self.run.device).manual_seed(cfg.seed + 7919 + update)

        def estimate() -> torch.Tensor:
            env.reset(seed=cfg.seed)  # same canvases and first glimpses for every draw
            ro = rollout(self.model, env, std, gen, options={"canvases": canvases})
            # A copy of the baselines: diagnostics must not advance their running statistics.
            loss = loss_fn(ro, copy.deepcopy(self.baselines))["loss_reinforce"]
            return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])

        return gradient_statistics(estimate, draws=8)

    # ------------------------------------------------------------------ the end
    def finish(self) -> dict:
        """Checkpoint on a signal (and exit), else report the best model's test error once."""
        cfg, keep = self.cfg, self.keep
        keep.load_best()
        test = Evaluator(cfg, self.run.device, "test", cfg.test_size)(self.model)
        report = {**keep.report(test),
                  "canvas_set_version": data.GENERATOR_VERSION}  # of the val/test sets
        self.run.logger.image("attention/glimpse_paths_test",
                              glimpse_paths_image(test_images(cfg), test["locs"], self.env.cfg),
                              keep.count(cfg.n_updates))
        return keep.write_report(report, keep.error_line(
            report, "test canvases (deterministic policy)"))


def test_images(cfg) -> torch.Tensor:
    preset = gym.spec(cfg.env_id).kwargs["preset"]
    return data.fixed_set(preset, "test", n=cfg.test_size)[0][:8]

