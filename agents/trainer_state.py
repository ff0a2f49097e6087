"""What every trainer checkpoints and restores (RAM, soft-attention and memory trainers).

A checkpoint holds the model, the optimiser, every random stream that decides what is trained
next (the policy noise, the env's or canvas stream's generator, torch's and numpy's global
state), any running statistics (baselines), and the bookkeeping: the best validation error so
far, the count of skipped non-finite steps and the wall time of the sessions before this one.
Restoring all of it is what makes a resumed run equal an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from hardattn import checkpoint as ckpt

from .run import Run

# A random stream as (get state, set state).
Stream = tuple[Callable[[], Any], Callable[[Any], None]]


def torch_stream(gen: torch.Generator) -> Stream:
    """A ``torch.Generator`` (its state is saved as a CPU uint8 tensor)."""
    return gen.get_state, lambda s: gen.set_state(s.to(torch.uint8).cpu())


def env_stream(env) -> Stream:
    """The numpy generator ``env.np_random`` of a Gymnasium env (seeded in ``reset``)."""

    def set_state(s: dict) -> None:
        env.np_random.bit_generator.state = s

    return lambda: env.np_random.bit_generator.state, set_state


class TrainerState:
    """The checkpointed state of a trainer and its bookkeeping.

    Args:
        run: the run (its elapsed time, its checkpoint folder).
        model, optimizer: what is trained.
        streams: named random streams, saved under their names.
        stats: objects with ``state_dict``/``load_state_dict`` saved under ``"baselines"``
            (running baselines); None for trainers without any.
    """

    def __init__(self, run: Run, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 streams: dict[str, Stream], stats: dict[str, Any] | None = None) -> None:
        self.run, self.model, self.optimizer = run, model, optimizer
        self.streams, self.stats = streams, stats
        self.best: dict = {"error": math.inf, "update": -1}  # validation-selected model
        self.nonfinite = 0  # steps skipped for a non-finite loss or gradient
        self.elapsed_before = 0.0  # wall seconds of the sessions before a resume

    def wall(self) -> float:
        """Wall seconds of the whole run so far, every session included."""
        return self.elapsed_before + self.run.elapsed()

    def state_dict(self) -> dict:
        s = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
             **{name: get() for name, (get, _) in self.streams.items()},
             "best": dict(self.best), "nonfinite": self.nonfinite, "rng": ckpt.rng_state(),
             "elapsed_s": self.wall()}
        if self.stats is not None:
            s["baselines"] = {k: b.state_dict() for k, b in self.stats.items()}
        return s

    def load_state_dict(self, s: dict) -> None:
        self.model.load_state_dict(s["model"])
        self.optimizer.load_state_dict(s["optimizer"])
        for name, (_, put) in self.streams.items():
            put(s[name])
        for k, b in (self.stats or {}).items():
            b.load_state_dict(s["baselines"][k])
        self.best, self.nonfinite = dict(s["best"]), s["nonfinite"]
        self.elapsed_before = float(s.get("elapsed_s", 0.0))  # absent in older checkpoints
        best_file = self.run.ckpt_dir / "best.pt"
        if not best_file.exists():  # lost: selection restarts from here
            self.best = {"error": math.inf, "update": -1}
        else:
            # best.pt can be newer than this checkpoint (the run died between them). It holds
            # a model the abandoned updates validated; keep it as the best so far, so the
            # report names the model it tests even if the resumed updates never beat it
            # (bit-identical on CPU: there they score the same model again, and only a
            # strictly lower error replaces it).
            held = ckpt.load_checkpoint(best_file)
            if held.get("update", -1) > self.best["update"] and "val" in held:
                self.best = {"error": float(held["val"]["error"]), "update": held["update"]}
        ckpt.set_rng_state(s["rng"])
