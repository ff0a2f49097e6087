"""Benchmark results in the one format of ``../shared/BENCHMARKS.md``.

Every script under ``benchmarks/`` builds a list of result dicts with ``result(...)`` and
writes them with ``write_results(...)`` to ``benchmarks/results/<name>.json``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from hardattn.config import TrainConfig, with_legacy_values

RESULTS_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


def git_commit() -> str:
    """The sha of HEAD (with ``-dirty`` when the tree has uncommitted changes), or ``unknown``."""
    try:
        root = Path(__file__).resolve().parent.parent
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except Exception:
        return "unknown"


@functools.cache
def process_commit() -> str:
    """``git_commit()`` at this process's first call: the code the process loaded.

    Training and benchmarks record this, not HEAD at the time of writing: a long process
    (``compare``, ``bench``) keeps running the code it started with while commits land. The
    CLI, ``bench``, ``compare`` and every ``Run`` call it before any work.
    """
    return git_commit()


def cpu_has_bf16_matmul() -> bool | None:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX512-BF16 or AMX-BF16);
    None where ``/proc/cpuinfo`` cannot tell (not Linux)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity on Linux; all cores elsewhere, where
    ``os.sched_getaffinity`` does not exist)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def device_description(device: torch.device | str) -> str:
    """``"cpu: 2 cores (<model>)"`` or ``"cuda: <GPU name>"``, as BENCHMARKS.md shows, plus the
    torch build (speed differs between builds: the CPU wheel and the CUDA wheel on a CPU)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(dev)}, torch {torch.__version__}"
    return (f"cpu: {usable_cores()} cores ({cpu_model()}), torch threads "
            f"{torch.get_num_threads()}, torch {torch.__version__}")


def result(metric: str, values: list[float] | float, unit: str, higher_is_better: bool,
           labels: dict[str, Any], config: dict[str, Any] | None = None,
           aggregate: str = "mean") -> dict[str, Any]:
    """One result row. ``values`` per seed (learning: mean quoted) or per repeat (speed: median).

    Args:
        aggregate: ``"mean"`` for learning results over seeds, ``"median"`` for timings.
    """
    vals = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    value = statistics.fmean(vals) if aggregate == "mean" else statistics.median(vals)
    row: dict[str, Any] = {"metric": metric, "value": value,
                           "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0}
    row["per_seed" if aggregate == "mean" else "per_repeat"] = vals
    row.update(unit=unit, higher_is_better=higher_is_better, labels=labels,
               config=config or {})
    return row


def write_results(name: str, results: list[dict[str, Any]], wall_s: float,
                  device: torch.device | str, command: str | None = None,
                  out_dir: Path | str | None = None) -> Path:
    """Write ``<out_dir>/<name>.json`` (default ``benchmarks/results``) and return its path."""
    out = Path(out_dir) if out_dir is not None else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    blob = {
        "benchmark": name,
        "commit": process_commit(),
        "date": _dt.date.today().isoformat(),
        "device": device_description(device),
        "command": command or " ".join(["python"] + sys.argv),
        "wall_s": round(wall_s, 2),
        "results": results,
    }
    path = out / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(blob, indent=2) + "\n")
    os.replace(tmp, path)
    return path


# Fields that may differ when a run folder is reused: they do not change what is trained.
FREE_FIELDS = frozenset({"progress", "resume", "run_dir", "threads", "device", "from_run"})


def run_commit(run_dir: Path | str) -> str | None:
    """The git commit a run folder was trained at (its ``meta.json``), if recorded.

    Benchmarks reuse and resume runs, so a run can be older than the results file's commit.
    """
    meta = Path(run_dir) / "meta.json"
    return json.loads(meta.read_text()).get("git_commit") if meta.exists() else None


def resume_fields(run_dir: Path | str) -> dict[str, str]:
    """How a benchmark continues an unfinished run folder: ``{"resume": run_dir}`` when it has
    a periodic checkpoint; else ``{}``, after deleting what a run that never checkpointed left
    there (config, events: nothing to resume, and ``train`` refuses a folder holding a run).
    """
    from hardattn import checkpoint as ckpt

    run_dir = Path(run_dir)
    if ckpt.periodic_checkpoints(run_dir / "checkpoints"):
        return {"resume": str(run_dir)}
    if run_dir.is_dir():
        shutil.rmtree(run_dir)
    return {}


def check_run_settings(run_dir: Path | str, want: dict[str, Any],
                       fix: str = "pass another --runs folder") -> None:
    """Refuse to reuse or resume a run folder that was trained with other settings.

    Benchmarks reuse finished runs (their ``report.json``) and resume interrupted ones; a
    folder trained for another budget or batch must not be reported under the new flags.

    Args:
        run_dir: the run folder (its ``config.json`` is what it was trained with).
        want: the fields of the ``TrainConfig`` about to be reused (``to_dict()``).
        fix: the command-line remedy named in the error besides deleting the folder.

    Raises:
        ValueError: naming every differing field with its stored and requested values.
    """
    recorded = Path(run_dir) / "config.json"
    if not recorded.is_file():
        return
    # A field added after the run was written: the run trained with its (present) default,
    # or with the value of the code of its time where the default changed behaviour.
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    have = {**defaults, **with_legacy_values(json.loads(recorded.read_text()))}
    diff = {k: (have.get(k), v) for k, v in want.items()
            if k not in FREE_FIELDS and have.get(k) != v}
    if diff:
        shown = ", ".join(f"{k}={a!r} (asked: {b!r})" for k, (a, b) in sorted(diff.items()))
        raise ValueError(f"run folder {str(run_dir)!r} was trained with {shown}; rerun with its "
                         f"settings, {fix}, or delete that folder")
