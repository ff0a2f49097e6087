"""The bookkeeping around a RAM update: logging, validation, model selection, checkpoints,
resume, estimator diagnostics and the final test report. Shared by the RAM agents so that
their ``train(cfg)`` holds only the learning itself."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable

import gymnasium as gym
import torch

from hardattn import checkpoint as ckpt
from hardattn import data
from hardattn.diagnostics import gradient_statistics

from . import distributed
from .ram_common import Evaluator, Rollout, glimpse_paths_image, make_env, rollout
from .run import Run
from .trainer_state import TrainerState, env_stream, torch_stream


class Trainer:
    """Everything an agent does after its optimiser step, and the state it checkpoints."""

    def __init__(self, run: Run, env, model: torch.nn.Module, optimizer, noise: torch.Generator,
                 baselines: dict) -> None:
        self.run, self.cfg, self.env, self.model = run, run.cfg, env, model
        self.optimizer, self.noise, self.baselines = optimizer, noise, baselines
        self.val = Evaluator(self.cfg, run.device, "val", self.cfg.eval_size)
        self.book = TrainerState(run, model, optimizer, {"noise": torch_stream(noise),
                                                         "env_np_random": env_stream(env)},
                                 baselines)
        self.last_update = run.start_update - 1
        self.last_val: dict = {}
        self.postfix: dict = {}
        self._diag = None
        if run.state is not None:
            self._restore(run.state)
        self._t, self._images_at_t = time.perf_counter(), self.images(run.start_update)

    # ------------------------------------------------------------------ state
    def images(self, updates: int) -> int:
        return updates * self.cfg.batch_size

    def state(self) -> dict:
        return self.book.state_dict()

    def _restore(self, s: dict) -> None:
        self.book.load_state_dict(s)
        if distributed.rank() > 0:  # the checkpoint holds rank 0's streams: reseed the others
            seed = distributed.rank_seed(self.cfg.seed) + 7919 * self.run.start_update
            self.noise.manual_seed(seed + 1)
            self.env.reset(seed=seed)

    # ------------------------------------------------------------------ per update
    def after_update(self, update: int, ro: Rollout, losses: dict, applied: bool,
                     grad_norm: float, std: float | None,
                     loss_fn: Callable[[Rollout, dict], dict]) -> None:
        cfg, log = self.cfg, self.run.logger
        last = update == cfg.n_updates - 1
        step = self.images(update + 1)
        self.last_update = update
        self.book.nonfinite += 0 if applied else 1
        if update % cfg.log_every == 0 or last:
            now = time.perf_counter()
            ips = (step - self._images_at_t) / max(now - self._t, 1e-9)
            self._t, self._images_at_t = now, step
            log.record("rollout/accuracy", ro.reward.mean() * 100.0)
            log.record("rollout/reward", ro.reward.mean())
            for k, v in losses.items():
                log.record(f"train/{k}", v.detach())
            log.record("train/grad_norm", grad_norm)
            log.record("train/lr", self.optimizer.param_groups[0]["lr"])
            log.record("train/nonfinite_steps", self.book.nonfinite)
            log.record("attention/location_std", ro.std.detach().mean())
            log.record("attention/mean_abs_location", ro.actions.abs().mean())
            log.record("time/images_per_s", ips)
            log.record("time/elapsed_s", self.book.wall())
            log.dump(step)
            self.postfix["img/s"] = f"{ips:.0f}"
        if update % cfg.image_every == 0 or last:
            log.histogram("attention/locations_x", ro.actions[..., 0].detach().cpu(), step)
            log.histogram("attention/locations_y", ro.actions[..., 1].detach().cpu(), step)
        if cfg.grad_stats_every and (update % cfg.grad_stats_every == 0 or last):
            for k, v in self.grad_stats(update, std, loss_fn).items():
                log.record(f"attention/{k}", v)
            log.dump(step)
        if (update + 1) % cfg.eval_every == 0 or last:
            self.validate(update, step)
        if (update + 1) % cfg.checkpoint_every == 0 or last:
            distributed.assert_in_sync(self.model)
            self.run.save(update, self.state())

    def validate(self, update: int, step: int) -> None:
        res = self.val(self.model)
        log = self.run.logger
        log.record("eval/accuracy", res["accuracy"])
        log.record("eval/error", res["error"])
        log.dump(step)
        log.image("attention/glimpse_paths_val",
                  glimpse_paths_image(self.val.images[:8], res["locs"], self.env.cfg), step)
        self.last_val = res
        self.postfix["val_acc"] = f"{res['accuracy']:.2f}"
        if res["error"] < self.book.best["error"]:
            self.book.best = {"error": res["error"], "update": update}
            self.run.save_best(update, self.state(), {"error": res["error"]})

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
        self.run.close(self.last_update, self.state())
        cfg, run = self.cfg, self.run
        distributed.barrier()  # rank 0 has written best.pt
        best = ckpt.load_checkpoint(run.ckpt_dir / "best.pt", map_location=run.device)
        self.model.load_state_dict(best["model"])
        test = Evaluator(cfg, run.device, "test", cfg.test_size)(self.model)
        report = {
            "env": cfg.env_id, "agent": cfg.agent, "seed": cfg.seed,
            "val_error_pct": self.book.best["error"], "best_update": self.book.best["update"],
            "test_error_pct": test["error"], "test_size": cfg.test_size,
            "canvas_set_version": data.GENERATOR_VERSION,  # of the val/test sets
            "images": self.images(cfg.n_updates), "wall_s": self.book.wall(),
            "images_per_s": self.images(cfg.n_updates - run.start_update) / run.elapsed(),
            "nonfinite_steps": self.book.nonfinite, "device": str(run.device),
            "run_dir": str(run.dir),
        }
        log = run.logger
        log.image("attention/glimpse_paths_test",
                  glimpse_paths_image(test_images(cfg), test["locs"], self.env.cfg),
                  self.images(cfg.n_updates))
        log.hparams({k: v for k, v in cfg.to_dict().items() if v is not None},
                    {"hparam/val_error": report["val_error_pct"],
                     "hparam/test_error": report["test_error_pct"]})
        log.close()
        if not run.main:
            return report
        (run.dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"hardattn: {cfg.agent} on {cfg.env_id}, seed {cfg.seed}: validation error "
              f"{report['val_error_pct']:.2f}% (update {report['best_update']}), test error "
              f"{report['test_error_pct']:.2f}% on {cfg.test_size} test canvases "
              f"(deterministic policy), {report['wall_s']:.0f} s")
        print(f"hardattn: TensorBoard: tensorboard --logdir {run.dir}")
        return report


def test_images(cfg) -> torch.Tensor:
    preset = gym.spec(cfg.env_id).kwargs["preset"]
    return data.fixed_set(preset, "test", n=cfg.test_size)[0][:8]

