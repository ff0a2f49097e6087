"""``CompareConfig``: the flags of ``hardattn compare`` and what every run of the matrix shares.

The budget, seeds, batch, learning rate and evaluation sizes are the comparison's protocol:
``train_config`` sets them for every (agent, seed) run, and ``--overrides`` may change any
other ``TrainConfig`` field, for every agent or for one (``PROTOCOL_FIELDS`` are refused).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hardattn.config import (
    AGENT_FIELDS,
    SOFT_AGENTS,
    TrainConfig,
    plain_numbers,
    type_errors,
    used_by,
)

from .memory_common import reader_settings

HARD_AGENTS = ("reinforce", "actor-critic")
COMPARABLE = HARD_AGENTS + SOFT_AGENTS
PRESET_ENVS = {"mnist28": "GlimpseMNIST-v0", "translated60": "GlimpseTranslated60-v0",
               "cluttered60": "GlimpseCluttered60-v0", "cluttered100": "GlimpseCluttered100-v0"}
# Hard attention over memory: the readers of agents/memory_readers.py on the memory envs.
MEMORY_COMPARABLE = ("hard-read", "hard-read-ac", "soft-read", "sab", "memoryless")
MEMORY_PRESETS = {"copy-memory": "CopyMemory-v0", "associative-recall": "AssociativeRecall-v0"}



# TrainConfig fields that define the comparison itself (budget, seeds, data, scoring): set by
# compare for every run, never by --overrides. Value: what to do instead.
PROTOCOL_FIELDS = {
    **dict.fromkeys(("total_images", "epochs"), "every run gets --budget-images"),
    "seed": "runs are seeded 0 .. N-1 by --seeds",
    **dict.fromkeys(("agent", "env"), "choose them with --agents and --preset"),
    "samples_per_image": "it would read fewer distinct canvases per training image than the "
                         "other agents; the budget counts canvases",
    "batch_size": "set it for every run with --batch-size",
    "lr": "set it for every run with --lr (results.md reports one)",
    **{f: f"set it for every run with --{f.replace('_', '-')}" for f in
       ("eval_every", "eval_size", "test_size", "eval_batch", "checkpoint_every", "device")},
    **dict.fromkeys(("run_dir", "resume", "from_run", "init_from"),
                    "compare places every run under --out and resumes it itself"),
}
# Fields an override may change for every agent, never for one (results.md states one value).
SHARED_FIELDS = {"lr_decay": "is the learning-rate schedule of the comparison: set it for "
                             "every agent (lr_decay=false), not for one"}


@dataclass(frozen=True)
class CompareConfig:
    """Train an agents x seeds matrix with one budget of training images (memory presets:
    episodes) and compare the agents."""

    preset: Literal["mnist28", "translated60", "cluttered60", "cluttered100", "copy-memory",
                    "associative-recall"] = "cluttered60"
    """Canvas preset (the glimpse env of that preset; its sensor defaults), or a memory task:
    copy-memory (CopyMemory-v0; its delay: --overrides memory_T=N) or associative-recall
    (AssociativeRecall-v0; --overrides memory_pairs=N)."""
    agents: str | None = None
    """Comma-separated agents; default all of the preset's: reinforce, actor-critic,
    soft-glimpse, reparam-glimpse, draw, soft-cnn, cnn, mlp (canvases) or hard-read,
    hard-read-ac, soft-read, sab, memoryless (memory presets)."""
    seeds: int = 3
    """Seeds per agent (0 .. N-1)."""
    budget_images: int = 1_000_000
    """Training canvases (memory presets: episodes) per run, equal for every run."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    out: str | None = None
    """Folder of the runs (one TensorBoard folder); default runs/compare-<preset>."""
    results_dir: str | None = None
    """Folder of results.md, results.csv and the PNGs; default --out."""
    batch_size: int | None = None
    """Canvases (episodes) per update, every run; default 128 (memory presets: 64)."""
    lr: float | None = None
    """Adam learning rate, every run; default 1e-3, cosine-decayed over the budget (memory
    presets: 3e-3, constant, with the readers' settings
    hardattn.agents.memory_common.READER_SETTINGS)."""
    eval_every: int = 200
    """Validate every N updates (a point of the learning curves)."""
    checkpoint_every: int = 200
    """Checkpoint every N updates (what a crash can lose; Ctrl-C checkpoints at once)."""
    eval_size: int = 10_000
    """Validation canvases (selection, learning curves, error vs. glimpses)."""
    test_size: int = 10_000
    """Test canvases, scored once per run."""
    eval_batch: int = 1000
    """Canvases per evaluation batch."""
    overrides: tuple[str, ...] = ()
    """Extra TrainConfig fields, FIELD=VALUE for every run or AGENT.FIELD=VALUE for one agent,
    e.g. core_hidden=64 soft-cnn.score=dot (values are JSON, else strings)."""
    show: int = 6
    """Test canvases per agent in attention.png."""
    progress: bool = True
    """Progress bars while training."""
    threads: int = 0
    """torch CPU threads per run (0: all available cores; with --jobs N > 1, the cores
    divided by N)."""
    jobs: int = 1
    """Runs trained at once, each in its own process. Results do not depend on it (every run
    is seeded on its own). On a CPU of C cores use N <= C; on a GPU, several runs of a small
    batch share it (one leaves most of the device idle). The runs train without progress
    bars; compare prints a line as each starts and ends. Ctrl-C or SIGTERM stops every running
    run at its next update with a checkpoint; the same command resumes."""

    def __post_init__(self) -> None:
        plain_numbers(self)  # numpy scalars from a sweep

    def is_memory(self) -> bool:
        return self.preset in MEMORY_PRESETS

    def comparable(self) -> tuple[str, ...]:
        return MEMORY_COMPARABLE if self.is_memory() else COMPARABLE

    def agent_list(self) -> list[str]:
        if self.agents is None:
            return list(self.comparable())
        return [a.strip() for a in self.agents.split(",") if a.strip()]

    def batch(self) -> int:
        """The batch size of every run (the field, or the preset's default)."""
        if self.batch_size is not None:
            return self.batch_size
        return 64 if self.is_memory() else 128

    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 3e-3 if self.is_memory() else 1e-3

    def parsed_overrides(self) -> dict[str | None, dict]:
        """``{None: {field: value}, agent: {field: value}}`` from ``--overrides``."""
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        out: dict[str | None, dict] = {None: {}}
        for item in self.overrides:
            if "=" not in item:
                raise ValueError(f"--overrides {item!r} must be FIELD=VALUE or AGENT.FIELD=VALUE")
            key, raw = item.split("=", 1)
            agent, _, name = key.rpartition(".")
            name = name.replace("-", "_")
            if name not in known:
                raise ValueError(f"--overrides {item!r}: {name!r} is not a TrainConfig field; "
                                 f"known: {sorted(known)}")
            if name in PROTOCOL_FIELDS:
                raise ValueError(f"--overrides {item!r}: {name!r} is part of the comparison's "
                                 f"shared protocol; {PROTOCOL_FIELDS[name]}")
            if agent and name in SHARED_FIELDS:
                raise ValueError(f"--overrides {item!r}: {name!r} {SHARED_FIELDS[name]}")
            if agent and agent not in self.agent_list():
                raise ValueError(f"--overrides {item!r}: agent {agent!r} is not in --agents")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            if not agent and name in AGENT_FIELDS and \
                    not set(AGENT_FIELDS[name]) & set(self.agent_list()):
                raise ValueError(f"--overrides {item!r}: {name!r} is read by --agent "
                                 f"{', '.join(AGENT_FIELDS[name])}, none of them in --agents")
            out.setdefault(agent or None, {})[name] = value
        return out

    def validate(self) -> CompareConfig:
        bad_types = type_errors(self)
        if bad_types:
            raise ValueError("; ".join(bad_types))
        agents = self.agent_list()
        if not agents:
            raise ValueError("--agents is empty; give a comma-separated list")
        bad = [a for a in agents if a not in self.comparable()]
        if bad:
            raise ValueError(f"--agents: {bad} not comparable on --preset {self.preset}; choose "
                             f"from {self.comparable()}")
        if len(set(agents)) != len(agents):
            raise ValueError(f"--agents={self.agents!r} lists an agent twice")
        for name in ("seeds", "budget_images", "batch_size", "eval_every", "checkpoint_every",
                     "eval_size", "test_size", "eval_batch", "jobs"):
            v = getattr(self, name)
            if name == "batch_size" and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"--{name.replace('_', '-')}={v!r} must be an integer >= 1")
        for flag, folder in (("--out", self.out), ("--results-dir", self.results_dir)):
            if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
                raise ValueError(f"{flag}={folder!r} is a file; give a folder")
        if not 1 <= self.show <= 16:
            raise ValueError(f"--show={self.show} must be in [1, 16]")
        self.parsed_overrides()
        return self

    def run_threads(self) -> int:
        """torch threads of each run: ``--threads``, else (0) all cores for one job at a time
        and the cores divided among the jobs for several (never more threads than cores)."""
        if self.threads or self.jobs == 1:
            return self.threads
        from hardattn.benchmarking import usable_cores

        return max(1, usable_cores() // self.jobs)

    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / f"compare-{self.preset}"

    def train_config(self, agent: str, seed: int) -> TrainConfig:
        """The config of run (agent, seed): shared budget and protocol, then the overrides."""
        fields = reader_settings(agent) if self.is_memory() else {}
        fields.update(agent=agent, seed=seed, device=self.device,
                      env={**PRESET_ENVS, **MEMORY_PRESETS}[self.preset],
                      total_images=self.budget_images, batch_size=self.batch(),
                      lr=self.learning_rate(),
                      eval_every=self.eval_every, checkpoint_every=self.checkpoint_every,
                      eval_size=self.eval_size, test_size=self.test_size,
                      eval_batch=self.eval_batch, grad_stats_every=0,
                      progress=self.progress and self.jobs == 1,  # one bar per terminal
                      threads=self.run_threads(),
                      run_dir=str(self.out_dir() / f"{agent}__seed{seed}"))
        ov = self.parsed_overrides()
        # A global override of one family's field (feature_channels=8) goes to that family.
        fields.update(used_by(agent, ov[None]))
        fields.update(ov.get(agent, {}))
        return TrainConfig(**fields)
