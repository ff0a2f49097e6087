"""A training run's life: folder, config record, logger, checkpoints, signals, resume, report.

``Run`` is what every agent's ``train(cfg)`` opens first; ``train`` at the bottom dispatches
``hardattn train --agent ...`` to the agent's module.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import platform
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import torch

import hardattn
from hardattn import benchmarking
from hardattn import checkpoint as ckpt
from hardattn.benchmarking import device_description, process_commit
from hardattn.config import MEMORY_AGENTS, TrainConfig, with_legacy_values
from hardattn.logger import Logger, config_markdown, run_name

from . import distributed

# The agents whose train() averages gradients across torchrun ranks (agents/distributed.py).
DATA_PARALLEL_AGENTS = ("reinforce", "actor-critic")
AGENT_MODULES = {"reinforce": "hardattn.agents.reinforce",
                 "actor-critic": "hardattn.agents.actor_critic",
                 "sb3-ppo": "hardattn.agents.sb3", "sb3-recurrent-ppo": "hardattn.agents.sb3",
                 "soft-glimpse": "hardattn.agents.soft_glimpse",
                 "reparam-glimpse": "hardattn.agents.soft_glimpse",
                 "draw": "hardattn.agents.draw", "soft-cnn": "hardattn.agents.soft_cnn",
                 "cnn": "hardattn.agents.baselines_cnn", "mlp": "hardattn.agents.baselines_cnn",
                 "hard-read": "hardattn.agents.memory_readers",
                 "hard-read-ac": "hardattn.agents.memory_readers",
                 "soft-read": "hardattn.agents.memory_readers",
                 "memoryless": "hardattn.agents.memory_readers",
                 "sab": "hardattn.agents.memory_readers"}


class TrainingInterrupted(SystemExit):
    """Raised after SIGINT/SIGTERM once the checkpoint is written (exit code 128 + signal).

    ``str()`` is the one-line message, which ``Run.close`` has printed to stderr (an integer
    exit code makes Python print nothing).
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(128 + signum)
        self.message, self.signum = message, signum

    def __str__(self) -> str:
        return self.message


def _init_weights(target: str) -> tuple[Path, dict]:
    """The checkpoint that ``--init-from`` names: a file, or a run folder's ``best.pt`` (its
    latest checkpoint when it has no best yet)."""
    path = Path(target)
    best = path / "checkpoints" / "best.pt"
    try:
        if path.is_dir() and best.is_file():
            return best, ckpt.load_checkpoint(best)
        state, found = ckpt.load_latest(path)
        return found, state
    except ckpt.CheckpointError as exc:
        raise ValueError(f"--init-from={target!r}: {exc}; give a checkpoint file or a run "
                         f"folder written by hardattn train") from exc


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when there is one), ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        ValueError: another name, or CUDA asked for where there is none.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(name, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise ValueError(f"--device={name!r} must be auto, cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device={name!r} but CUDA is not available here; use --device cpu "
                         f"(or auto)")
    return torch.device(name)


def _device_kind(name: str) -> str:
    """``cpu`` or ``cuda`` for a --device value, without requiring that device here."""
    return resolve_device(name).type if name == "auto" else name.split(":")[0]


def registered_ids(agent: str | None = None) -> list[str]:
    """The env ids ``agent`` can train on: the memory envs for the memory agents, else (and
    for None) the glimpse envs."""
    import hardattn.envs

    return hardattn.envs.registered_ids("memory" if agent in MEMORY_AGENTS else "glimpse")


def _check_canvas(cfg: TrainConfig) -> None:
    """Canvas overrides that the env id's canvas cannot take fail here, naming the flag
    (before the run folder exists)."""
    if not cfg.augment_shift:
        return
    from hardattn import data

    spec = data.get_spec(gym.spec(cfg.env_id).kwargs["preset"])
    side = min(spec.height, spec.width)
    if cfg.augment_shift >= side:
        raise ValueError(f"--augment-shift={cfg.augment_shift} must be smaller than the "
                         f"canvas of --env {cfg.env} ({side} pixels); a few pixels, e.g. 2, "
                         f"is the usual amount")


def _held_run(folder: Path) -> str | None:
    """What of a run ``folder`` holds already (None: nothing, a new run may start there).

    A new run in an old folder would keep the old run's higher-numbered checkpoints (pruning
    deletes the new ones) and mix both runs' TensorBoard events.
    """
    held = [name for name in ("config.json", "report.json", "checkpoints/best.pt")
            if (folder / name).exists()]
    held += [p.relative_to(folder).as_posix()
             for p in ckpt.periodic_checkpoints(folder / "checkpoints")[-1:]]
    return ", ".join(held) or None


def _new_default_folder(base: Path) -> str:
    """Make ``base`` (or ``base_2``, ``base_3``, ... when taken) and return its name."""
    base.parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        folder = base if i == 1 else base.with_name(f"{base.name}_{i}")
        try:
            folder.mkdir()
            return str(folder)
        except FileExistsError:
            continue
    raise ValueError(f"{str(base)!r} and 9,998 numbered folders beside it exist; give --run-dir")


def _set_aside_later(folder: Path, update: int) -> None:
    """Resuming from an older checkpoint than the run's newest branches the run there: move
    the later checkpoints (and a later ``best.pt``) into ``superseded_<update>_<time>/``, or
    pruning would keep them (higher numbers) and delete every new one, and a later
    ``--resume RUN`` would go back to the abandoned branch."""
    later = [p for p in ckpt.periodic_checkpoints(folder)
             if int(ckpt.PERIODIC.match(p.name).group(1)) > update]
    if not later:
        return  # the newest: a later best.pt stays the best so far (TrainerState)
    best = folder / "best.pt"
    if best.exists() and ckpt.load_checkpoint(best).get("update", -1) > update:
        later.append(best)
    aside = folder / f"superseded_{update:08d}_{time.strftime('%Y%m%d-%H%M%S')}"
    aside.mkdir()
    for p in later:
        os.replace(p, aside / p.name)
    print(f"hardattn: resuming from update {update}: the {len(later)} later checkpoint file(s) "
          f"moved to {aside}")


def preflight(cfg: TrainConfig) -> TrainConfig:
    """Every check of a config that needs no data and no run folder: the fields, the env id,
    and what the env's canvas can take. ``hardattn compare`` runs it on every config of its
    matrix before training any. Returns ``cfg``.

    Raises:
        ValueError: naming the flag, its value and the fix.
    """
    other = registered_ids(None if cfg.agent in MEMORY_AGENTS else MEMORY_AGENTS[0])
    if cfg.env_id in other and cfg.env_id not in registered_ids(cfg.agent):
        kind, agents = ("glimpse", "reinforce, actor-critic, the SB3 and backprop agents") \
            if cfg.agent in MEMORY_AGENTS else ("memory", ", ".join(MEMORY_AGENTS))
        raise ValueError(f"--env={cfg.env!r} is a {kind} env, and --agent {cfg.agent} does "
                         f"not train on it; give --agent {agents}, or another --env")
    cfg.validate(registered_ids(cfg.agent))
    _check_canvas(cfg)
    return cfg


def check_data(cfg: TrainConfig) -> None:
    """Image agents: MNIST must load (from disk, or downloaded) before the run folder exists,
    so a missing data set leaves no dead folder behind. The read is cached for the env."""
    if cfg.agent in MEMORY_AGENTS:
        return
    from hardattn import data

    data.load_mnist("train")
    data.load_mnist("test")


# What a resumed run may take from the caller (the rest is the run's own config).
RESUME_FREE = frozenset({"resume", "progress", "threads", "device", "run_dir"})
FROM_RUN_FREE = frozenset({"from_run", "run_dir", "progress"})


def _refuse_ignored_flags(cfg: TrainConfig, recorded: dict, free: frozenset[str],
                          how: str) -> None:
    """``--resume`` continues a run as it was configured and ``--from-run`` re-runs a recorded
    config: a flag given with either (not at its default, not in ``free``) would be dropped
    without a word, so it is refused, named, unless ``recorded`` holds the same value.

    Raises:
        ValueError: naming each such flag, its value and the recorded one.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    have = {**defaults, **with_legacy_values(recorded)}
    given = {k: v for k, v in cfg.to_dict().items()
             if k not in free and v != defaults[k] and v != have.get(k)}
    if given:
        shown = ", ".join(f"--{k.replace('_', '-')}={v!r} (the run's: {have.get(k)!r})"
                          for k, v in sorted(given.items()))
        raise ValueError(f"{how}, so these flags would be ignored: {shown}; leave them out, "
                         f"or start a new run with them (--init-from to keep its weights)")


class Run:
    """Open a run: validate, pick the device, make or reopen the folder, start logging.

    On ``cfg.resume`` the config stored in the checkpoint is used (the run continues exactly
    as it was configured) and ``self.state`` holds the checkpoint to restore.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.state: dict | None = None
        if cfg.resume and cfg.from_run:
            raise ValueError(f"--resume={cfg.resume!r} and --from-run={cfg.from_run!r} exclude "
                             f"each other: --resume continues a run, --from-run starts a new one "
                             f"from a run's config; give one")
        if cfg.from_run:
            recorded = Path(cfg.from_run) / "config.json"
            if not recorded.is_file():
                raise ValueError(f"--from-run={cfg.from_run!r} holds no config.json; give a "
                                 f"run folder written by hardattn train")
            record = _recorded(json.loads(recorded.read_text()), recorded)
            _refuse_ignored_flags(cfg, record, FROM_RUN_FREE,
                                  f"--from-run re-runs the config recorded in {str(recorded)!r}")
            stored = TrainConfig.from_dict(record)
            cfg = TrainConfig.from_dict({**stored.to_dict(), "from_run": None, "resume": None,
                                         "run_dir": cfg.run_dir, "progress": cfg.progress})
            print(f"hardattn: re-running the config of {cfg.from_run or recorded.parent}")
        if cfg.resume:
            self.state, path = ckpt.load_latest(cfg.resume)
            if path.parent.name != "checkpoints":  # its run folder would be path/../..
                raise ValueError(f"--resume={cfg.resume!r}: a checkpoint resumes in its run "
                                 f"folder (RUN/checkpoints/FILE.pt), and {path} is not in a "
                                 f"checkpoints/ folder; to train on from its weights in a new "
                                 f"run, use --init-from {path}")
            record = _recorded(self.state.get("config"), path)
            if cfg.run_dir and Path(cfg.run_dir).resolve() != path.parent.parent.resolve():
                raise ValueError(f"--run-dir={cfg.run_dir!r}: a resumed run stays in its folder "
                                 f"{str(path.parent.parent)!r}; leave --run-dir out")
            _refuse_ignored_flags(cfg, record, RESUME_FREE,
                                  f"--resume continues {str(path)!r} as it was configured")
            stored = TrainConfig.from_dict(record)
            if self.state["update"] >= stored.n_updates - 1 and \
                    (path.parent.parent / "report.json").exists():
                raise ValueError(f"--resume={cfg.resume!r}: that run finished (its report is "
                                 f"{path.parent.parent / 'report.json'}); to train on from its "
                                 f"weights, start a new run with --init-from {path}")
            # What may differ on resume (benchmarking.FREE_FIELDS) comes from the caller where
            # given; left at its default, the run's own (the thread count changes the float
            # sums, and `--resume RUN` alone must continue bit for bit).
            device = stored.device if cfg.device == "auto" else cfg.device
            threads = stored.threads if cfg.threads == 0 else cfg.threads
            if _device_kind(device) != _device_kind(stored.device):
                raise ValueError(
                    f"--device={cfg.device!r}: {path} was trained with --device "
                    f"{stored.device!r}, and a run resumes on that kind of device (its random "
                    f"streams are per device). Resume it there, or start a new run from its "
                    f"weights with --init-from {path}")
            cfg = TrainConfig.from_dict({**stored.to_dict(), "resume": cfg.resume,
                                         "progress": cfg.progress, "threads": threads,
                                         "device": device})
            self.dir = path.parent.parent
            print(f"hardattn: resuming from {path} (update {self.state['update']})")
        preflight(cfg)
        check_data(cfg)
        self.cfg = cfg
        # --init-from: read the weights now, so a bad path fails before the run folder exists.
        # A resumed run takes its weights from its own checkpoint instead.
        self._init = _init_weights(cfg.init_from) if cfg.init_from and self.state is None \
            else None
        self.device = resolve_device(cfg.device)
        if cfg.precision == "bf16" and self.device.type == "cpu" and \
                benchmarking.cpu_has_bf16_matmul() is False:
            print("hardattn: warning: --precision bf16 on a CPU without AVX512-BF16 or AMX: "
                  "its bfloat16 matrix multiplies are emulated and likely slower than fp32; "
                  "use --precision fp32 (or time both: hardattn bench --precisions fp32,bf16)")
        # torchrun: join the process group; rank 0 alone writes the run folder.
        distributed.setup(self.device)
        self.device = distributed.local_device(self.device)
        self.main = distributed.is_main()
        if self.state is not None and self.main:
            _set_aside_later(self.dir / "checkpoints", self.state["update"])
        torch.set_num_threads(cfg.threads or
                              distributed.local_threads(benchmarking.usable_cores()))
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        if self.state is None:
            if cfg.run_dir:
                name = str(cfg.run_dir)
                if Path(name).exists() and not Path(name).is_dir():
                    raise ValueError(f"--run-dir={name!r} is a file; give a folder (new, "
                                     f"empty, or a run's to --resume it)")
                held = _held_run(Path(name))
                self._made_dir = not Path(name).exists()
            else:  # made here, atomically: runs started in the same second get their own
                name = _new_default_folder(Path("runs") / run_name(cfg.env_id, cfg.agent,
                                                                   cfg.seed)) \
                    if self.main else ""
                held, self._made_dir = None, True
            name, held = distributed.broadcast_object((name, held))
            if held and "report.json" in held:  # rank 0 looked: every rank raises
                raise ValueError(f"--run-dir={name!r} holds a finished run ({held}); give "
                                 f"another --run-dir (--init-from {name} starts from its "
                                 f"weights)")
            if held:
                raise ValueError(f"--run-dir={name!r} already holds a run ({held}); continue "
                                 f"it with --resume {name}, or give another --run-dir")
            self.dir = Path(name)
            if self.main:
                self.dir.mkdir(parents=True, exist_ok=True)
                self._write_record()
        self.ckpt_dir = self.dir / "checkpoints"
        start = 0 if self.state is None else self.state["update"] + 1
        # TensorBoard steps are training images; on resume, events after the checkpoint go.
        log_dir = self.dir if self.main else None  # rank > 0: events discarded
        self.logger = Logger(log_dir, purge_step=start * cfg.batch_size + 1
                             if self.state is not None else None)
        if self.state is None:
            self.logger.text("config", config_markdown(cfg.to_dict()))
        self.start_update = start
        self.stop_signal: int | None = None
        self._old_handlers = {s: signal.signal(s, self._on_signal)
                              for s in (signal.SIGINT, signal.SIGTERM)}
        self.t0 = time.perf_counter()

    # ------------------------------------------------------------------ records
    def _write_record(self) -> None:
        ckpt.atomic_write_text(self.dir / "config.json", self.cfg.to_json() + "\n")
        meta = {
            "hardattn": hardattn.__version__, "torch": torch.__version__,
            "gymnasium": gym.__version__, "python": platform.python_version(),
            "git_commit": process_commit(), "device": device_description(resolve_device(
                self.cfg.device)), "seed": self.cfg.seed, "command": " ".join(sys.argv),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        ckpt.atomic_write_text(self.dir / "meta.json", json.dumps(meta, indent=2) + "\n")

    def init_weights(self, model: torch.nn.Module) -> None:
        """Load the ``--init-from`` weights into a freshly built ``model`` (no-op without it).

        Raises:
            ValueError: the weights do not fit the model (another agent or other sizes).
        """
        if self._init is None:
            return
        path, state = self._init
        self._init = None  # load once; frees the copy
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            src = state.get("config", {})
            detail = str(exc).strip().splitlines()
            self._discard()  # nothing was trained: the same --run-dir takes the fixed command
            raise ValueError(
                f"--init-from={self.cfg.init_from!r}: the weights of {path} (agent "
                f"{src.get('agent')!r}, env {src.get('env')!r}) do not fit --agent "
                f"{self.cfg.agent} with these sizes ({' '.join(detail[:2])[:300]}); give a run "
                f"of the same agent with the same network sizes") from exc
        print(f"hardattn: initial weights from {path} (update {state.get('update')})")

    def _discard(self) -> None:
        """Remove what opening this new run wrote (its record and event files; the folder
        itself if this run made it), before anything was trained."""
        self.logger.close()
        if not self.main or self.state is not None:
            return
        for p in [self.dir / "config.json", self.dir / "meta.json",
                  *self.dir.glob("events.out.tfevents.*")]:
            p.unlink(missing_ok=True)
        if self._made_dir and not any(self.dir.iterdir()):
            self.dir.rmdir()

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum, frame) -> None:
        if self.stop_signal is not None:
            if signum == signal.SIGINT:  # a second Ctrl-C: stop now, without the checkpoint
                raise KeyboardInterrupt
            return  # SIGTERM again (a process group's, passed on too): already stopping
        self.stop_signal = signum

    def updates(self, progress_postfix: dict) -> Iterator[int]:
        """Update indices from the resume point, with a progress bar; stops on a signal."""
        from tqdm import tqdm

        bar = tqdm(range(self.start_update, self.cfg.n_updates), initial=self.start_update,
                   total=self.cfg.n_updates, disable=not self.cfg.progress, unit="upd",
                   dynamic_ncols=True)
        for update in bar:
            yield update
            bar.set_postfix(progress_postfix, refresh=False)
            # torchrun: every rank stops after the same update when any rank was signalled.
            # Never write None over the flag: a handler may set it during the agreement, and the
            # next update's agreement then sees it. Leave only on an agreed signal, so that every
            # rank leaves after the same update.
            agreed = distributed.agree_stop(self.stop_signal, self.device)
            if agreed is not None:
                self.stop_signal = agreed
                bar.close()
                return

    # ------------------------------------------------------------------ checkpoints
    def save(self, update: int, state: dict) -> None:
        """Periodic checkpoint ``ckpt_<update>.pt``; keeps the newest ``keep_checkpoints``."""
        if not self.main:
            return
        ckpt.save_checkpoint(self.ckpt_dir / f"ckpt_{update:08d}.pt",
                             {**state, "update": update, "config": self.cfg.to_dict()})
        ckpt.prune(self.ckpt_dir, self.cfg.keep_checkpoints)

    def save_best(self, update: int, state: dict, val: dict) -> None:
        if not self.main:
            return
        ckpt.save_checkpoint(self.ckpt_dir / "best.pt",
                             {**state, "update": update, "config": self.cfg.to_dict(),
                              "val": val})

    def restore_signal_handlers(self) -> None:
        for s, h in self._old_handlers.items():
            signal.signal(s, h)
        self._old_handlers = {}

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:
        # Also when training raised: the caller gets its own Ctrl-C handling back.
        self.restore_signal_handlers()

    def close(self, update: int, state: dict) -> None:
        """End of the loop: on a signal, checkpoint, flush and exit non-zero in one line."""
        self.restore_signal_handlers()
        if self.stop_signal is not None:
            self.save(update, state)
            self.logger.flush()
            self.logger.close()
            name = signal.Signals(self.stop_signal).name
            msg = (f"hardattn: stopped by {name} after update {update}; checkpoint saved, "
                   f"resume with --resume {self.dir}")
            print(msg, file=sys.stderr, flush=True)
            raise TrainingInterrupted(msg, self.stop_signal)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def _recorded(config, source: Path) -> dict:
    """A run's recorded config (``config.json``, a checkpoint's ``"config"``), checked."""
    if not isinstance(config, dict) or not isinstance(config.get("agent"), str):
        raise ValueError(f"{str(source)!r} holds no run config (a dict with the agent); give "
                         f"a run folder or checkpoint written by hardattn train")
    return config


def stored_agent(cfg: TrainConfig) -> str:
    """The agent a run continues with: the recorded one for --resume and --from-run."""
    if cfg.resume:
        state, path = ckpt.load_latest(cfg.resume, warn=lambda msg: None)
        return _recorded(state.get("config"), path)["agent"]
    if cfg.from_run:
        recorded = Path(cfg.from_run) / "config.json"
        if recorded.is_file():
            return _recorded(json.loads(recorded.read_text()), recorded)["agent"]
    return cfg.agent


def train(cfg: TrainConfig) -> dict:
    """``hardattn train``: run the agent of ``cfg`` (or of the run it resumes) and report."""
    agent = stored_agent(cfg)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and agent not in DATA_PARALLEL_AGENTS:
        raise ValueError(f"data-parallel training (torchrun) supports --agent "
                         f"{' or '.join(DATA_PARALLEL_AGENTS)}, not {agent!r}; run it in one "
                         f"process (python -m hardattn train ...)")
    module = importlib.import_module(AGENT_MODULES[agent])
    try:
        return module.train(cfg)
    finally:
        if distributed.world_size() > 1:
            distributed.cleanup()
