"""The agent-independent half of every trainer: counting, cadence, timing, the tags all agents
log, model selection, checkpoints and the report file.

``training.Trainer`` (RAM), ``soft_common.SoftTrainer`` (backprop baselines) and
``memory_common.MemoryTrainer`` (memory readers) each hold one ``Bookkeeper`` and add only what
their agent logs and how it is scored, so that the three keep the same tags, the same model
selection and the same report fields.
"""

from __future__ import annotations

import json
import time

import torch

from hardattn import checkpoint as ckpt

from . import distributed
from .run import Run
from .trainer_state import Stream, TrainerState


class Bookkeeper:
    """What a trainer counts, logs, checkpoints and reports, whatever the agent.

    Args:
        run: the run (config, logger, run folder, checkpoints).
        model, optimizer: what is trained.
        streams: the named random streams a checkpoint must hold (``TrainerState``).
        stats: running statistics (baselines) checkpointed with them, or None.
        unit: what one batch element is: ``"images"`` or ``"episodes"`` (report fields
            ``<unit>``/``<unit>_per_s``, TensorBoard ``time/<unit>_per_s``).
    """

    def __init__(self, run: Run, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 streams: dict[str, Stream], stats: dict | None = None,
                 unit: str = "images") -> None:
        self.run, self.cfg, self.model, self.optimizer = run, run.cfg, model, optimizer
        self.unit = unit
        self.book = TrainerState(run, model, optimizer, streams, stats)
        self.last_update = run.start_update - 1
        self.last_val: dict = {}
        self.postfix: dict = {}  # the progress bar's fields (``run.updates`` shows them)
        if run.state is not None:
            self.book.load_state_dict(run.state)
        self._t, self._count_at_t = time.perf_counter(), self.count(run.start_update)

    def count(self, updates: int) -> int:
        """Batch elements (images or episodes) trained in ``updates`` updates (one rank's)."""
        return updates * self.cfg.batch_size

    def state(self) -> dict:
        return self.book.state_dict()

    # ------------------------------------------------------------------ per update
    def begin(self, update: int, applied: bool) -> tuple[int, bool]:
        """Book a finished update. Returns the TensorBoard step (elements trained so far) and
        whether this is the budget's last update."""
        self.last_update = update
        self.book.nonfinite += 0 if applied else 1
        return self.count(update + 1), update == self.cfg.n_updates - 1

    def due(self, update: int, every: int, last: bool) -> bool:
        """Logging cadence: updates 0, every, 2 every, ... and the last."""
        return update % every == 0 or last

    def log_update(self, step: int, rollout: dict, losses: dict[str, torch.Tensor],
                   grad_norm: float, attention: dict) -> None:
        """Record ``rollout/*`` (the agent's training-batch scores), ``train/*`` (losses,
        gradient norm, learning rate, skipped steps), ``attention/*`` and ``time/*``; dump."""
        log = self.run.logger
        now = time.perf_counter()
        rate = (step - self._count_at_t) / max(now - self._t, 1e-9)
        self._t, self._count_at_t = now, step
        for k, v in rollout.items():
            log.record(f"rollout/{k}", v)
        for k, v in losses.items():
            log.record(f"train/{k}", v.detach())
        log.record("train/grad_norm", grad_norm)
        log.record("train/lr", self.optimizer.param_groups[0]["lr"])
        log.record("train/nonfinite_steps", self.book.nonfinite)
        for k, v in attention.items():
            log.record(f"attention/{k}", v)
        log.record(f"time/{self.unit}_per_s", rate)
        log.record("time/elapsed_s", self.book.wall())
        log.dump(step)
        self.postfix["img/s" if self.unit == "images" else "ep/s"] = f"{rate:.0f}"

    def eval_due(self, update: int, last: bool) -> bool:
        return (update + 1) % self.cfg.eval_every == 0 or last

    def checkpoint_due(self, update: int, last: bool) -> bool:
        return (update + 1) % self.cfg.checkpoint_every == 0 or last

    def checkpoint(self, update: int) -> None:
        self.run.save(update, self.state())

    def select(self, update: int, step: int, res: dict) -> None:
        """After a validation: log ``eval/*``, and keep the model in ``best.pt`` when its
        validation error is the lowest so far (model selection on validation only)."""
        log = self.run.logger
        for k, v in res.items():
            if isinstance(v, (int, float)):
                log.record(f"eval/{k}", v)
        log.dump(step)
        self.last_val = res
        self.postfix["val_acc"] = f"{res['accuracy']:.2f}"
        if res["error"] < self.book.best["error"]:
            self.book.best = {"error": res["error"], "update": update}
            self.run.save_best(update, self.state(), {"error": res["error"]})

    # ------------------------------------------------------------------ the end
    def load_best(self) -> None:
        """Checkpoint on a signal (and exit); else load the validation-selected weights."""
        self.run.close(self.last_update, self.state())
        distributed.barrier()  # rank 0 has written best.pt
        best = ckpt.load_checkpoint(self.run.ckpt_dir / "best.pt", map_location=self.run.device)
        self.model.load_state_dict(best["model"])

    def report(self, test: dict) -> dict:
        """The fields every report holds; agents add their own."""
        cfg, run, u = self.cfg, self.run, self.unit
        return {
            "env": cfg.env_id, "agent": cfg.agent, "seed": cfg.seed,
            "val_error_pct": self.book.best["error"], "best_update": self.book.best["update"],
            "test_error_pct": test["error"], "test_size": cfg.test_size,
            u: self.count(cfg.n_updates), "wall_s": self.book.wall(),  # every session's
            f"{u}_per_s": self.count(cfg.n_updates - run.start_update) / run.elapsed(),
            "nonfinite_steps": self.book.nonfinite, "device": str(run.device),
            "run_dir": str(run.dir),
        }

    def error_line(self, report: dict, scored_on: str) -> str:
        """The closing line of an image agent: validation and test error, wall time."""
        cfg = self.cfg
        return (f"hardattn: {cfg.agent} on {cfg.env_id}, seed {cfg.seed}: validation error "
                f"{report['val_error_pct']:.2f}% (update {report['best_update']}), test error "
                f"{report['test_error_pct']:.2f}% on {cfg.test_size} {scored_on}, "
                f"{report['wall_s']:.0f} s")

    def write_report(self, report: dict, summary: str) -> dict:
        """Log the hyperparameters with the final errors, close TensorBoard, write
        ``report.json`` atomically (its presence marks the run finished, so it is whole or
        absent) and print ``summary``."""
        cfg, run = self.cfg, self.run
        log = run.logger
        log.hparams({k: v for k, v in cfg.to_dict().items() if v is not None},
                    {"hparam/val_error": report["val_error_pct"],
                     "hparam/test_error": report["test_error_pct"]})
        log.close()
        if not run.main:
            return report
        ckpt.atomic_write_text(run.dir / "report.json", json.dumps(report, indent=2) + "\n")
        print(summary)
        print(f"hardattn: TensorBoard: tensorboard --logdir {run.dir}")
        return report
