"""``hardattn bench``: training speed of the RAM agents against their floor, roofline and a
naive reference trainer, all measured in one run on one device (the four implementations are
in ``bench_impls.py``).

Four implementations per preset, timed as training images per second:

- ``hardattn``: the REINFORCE agent end to end, as ``hardattn train`` runs it (canvas
  sampling, retina pyramid, glimpse reads, network, hybrid loss, backward, clipping, Adam).
- ``floor``: the same network's forward + backward + Adam on glimpses extracted beforehand
  (no data, no sensor): the compute floor of this model.
- ``roofline``: only the matrix multiplies of the same layer shapes (forward ``X W^T`` and
  the two backward products ``dY W`` and ``dY^T X`` of every Linear, every glimpse step).
- ``naive``: a typical research script: a per-sample Python loop for the retina, the RAM
  written as research code writes it (``NaiveRAM``: one ``nn.Linear`` per weight matrix of
  the paper, so input and recurrent weights are separate GEMMs), one forward per step, a host
  sync every step (``.item()``), the same loss and optimiser.

``--precisions fp32,bf16`` times ``hardattn``, ``floor`` and ``roofline`` once per precision
(``--precision bf16``: the RAM's GEMMs in bfloat16, and a bfloat16 roofline); the naive script
is fp32. Rows carry a ``precision`` label.

Repeats of the implementations are interleaved so that load on the machine hits them alike;
the median of the repeats is quoted, and ``ratio`` rows divide the end-to-end figure by each
reference measured in the same run. Results go to ``benchmarks/results/speed_<cpu|cuda>.json``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from hardattn.benchmarking import process_commit, result, usable_cores, write_results
from hardattn.config import TrainConfig, type_errors

from .bench_impls import EndToEnd, Floor, Naive, Roofline, sync_device

PRESET_ENVS = {"mnist28": ("GlimpseMNIST-v0", 6), "translated60": ("GlimpseTranslated60-v0", None),
               "cluttered60": ("GlimpseCluttered60-v0", None),
               "cluttered100": ("GlimpseCluttered100-v0", None)}
IMPLS = ("hardattn", "floor", "roofline", "naive")


@dataclass(frozen=True)
class BenchConfig:
    """Flags of ``hardattn bench``."""

    presets: str = "mnist28,cluttered60,cluttered100"
    """Comma-separated presets (mnist28 runs 6 glimpses, the others their RAM default)."""
    batch_size: int = 128
    """Canvases per update, for every implementation."""
    repeats: int = 5
    """Timed repeats per implementation (interleaved); the median is quoted."""
    updates: int = 5
    """Updates per timed repeat (the naive trainer runs ``max(1, updates // 4)``)."""
    device: str = "auto"
    """auto, cpu or cuda."""
    threads: int = 0
    """torch CPU threads (0: the cores this process may use). On a machine loaded by other
    processes fewer threads can be several times faster (threads wait for each other)."""
    profile: bool = True
    """Profile the end-to-end update per preset and report where the time goes."""
    time_to_accuracy_s: float = 0.0
    """If > 0: train mnist28 up to this many seconds and record when val accuracy first
    reaches 95/97/99% (metric seconds_to_val_acc)."""
    time_to_accuracy_eval_size: int = 10_000
    """Validation canvases scored every 50 updates of the time-to-accuracy runs: the whole
    fixed validation set by default (a 2,000-canvas sample has a standard error of 0.4 points
    at 97 %, enough to move the first crossing of a flat curve by minutes)."""
    time_to_accuracy_variants: tuple[str, ...] = ("default",)
    """Configs timed to accuracy, one run each: ``default`` (the default REINFORCE config) or
    comma-separated ``field=value`` overrides of it, e.g. ``scales=2,augment_shift=2``."""
    precisions: str = "fp32"
    """Comma-separated: fp32 and/or bf16 (``--precision bf16``: the RAM's GEMMs in bfloat16).
    Each gets its own hardattn, floor and roofline (bf16 GEMMs for bf16), timed in the same
    interleaved repeats; the naive script runs in fp32 once."""
    out: str | None = None
    """Results folder (default benchmarks/results)."""
    seed: int = 0
    """Seed of the weights, canvases and noise of every implementation."""

    def validate(self) -> BenchConfig:
        """Every flag checked before anything is timed (a full run takes tens of minutes).

        Raises:
            ValueError: naming the flag, its value and what it takes.
        """
        bad = type_errors(self)
        if bad:
            raise ValueError("; ".join(bad))
        for name, lo in (("batch_size", 1), ("repeats", 1), ("updates", 1), ("threads", 0),
                         ("seed", 0)):
            if getattr(self, name) < lo:
                raise ValueError(f"--{name.replace('_', '-')}={getattr(self, name)} must be an "
                                 f"integer >= {lo}")
        if self.time_to_accuracy_s < 0:
            raise ValueError(f"--time-to-accuracy-s={self.time_to_accuracy_s} must be >= 0 "
                             f"(0: skip it)")
        presets = self.preset_list()
        unknown = [p for p in presets if p not in PRESET_ENVS]
        if unknown:
            raise ValueError(f"--presets={self.presets!r}: unknown {unknown}; choose from "
                             f"{sorted(PRESET_ENVS)}")
        if not presets and self.time_to_accuracy_s <= 0:
            raise ValueError(f"--presets={self.presets!r} and --time-to-accuracy-s 0: nothing "
                             f"to measure; give presets, time to accuracy, or both")
        if self.out is not None and Path(self.out).exists() and not Path(self.out).is_dir():
            raise ValueError(f"--out={self.out!r} is a file; give a folder for "
                             f"speed_<cpu|cuda>.json")
        return self

    def preset_list(self) -> list[str]:
        return [p.strip() for p in self.presets.split(",") if p.strip()]


def train_config(preset: str, batch_size: int, device: str, seed: int = 0, **kw) -> TrainConfig:
    env, glimpses = PRESET_ENVS[preset]
    return TrainConfig(agent="reinforce", env=env, n_glimpses=glimpses, batch_size=batch_size,
                       device=device, seed=seed, progress=False, **kw)


# ---------------------------------------------------------------------------- measurement
def _time(fn, n: int, dev: torch.device) -> float:
    sync_device(dev)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync_device(dev)
    return time.perf_counter() - t0


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def precision_list(bc: BenchConfig) -> list[str]:
    """``bc.precisions`` parsed; a bad name fails before any timing, naming it."""
    out = [p.strip() for p in bc.precisions.split(",") if p.strip()]
    for p in out:
        if p not in ("fp32", "bf16"):
            raise ValueError(f"--precisions: {p!r} is not fp32 or bf16")
    if not out:
        raise ValueError("--precisions is empty: give fp32, bf16 or fp32,bf16")
    return out


def measure_preset(preset: str, bc: BenchConfig, dev: torch.device, log=print) -> dict:
    """Images/s per ``(impl, precision)`` (list over repeats), peak memory, a time breakdown
    (of the first precision's end-to-end update)."""
    impls: dict[tuple[str, str], object] = {}
    for prec in precision_list(bc):
        cfg = train_config(preset, bc.batch_size, str(dev), bc.seed, precision=prec)
        e2e = EndToEnd(cfg, dev)
        impls[("hardattn", prec)] = e2e
        impls[("floor", prec)] = Floor(cfg, dev, e2e)
        impls[("roofline", prec)] = Roofline(cfg, dev, e2e)
    first = next(iter(impls.values()))
    impls[("naive", "fp32")] = Naive(train_config(preset, bc.batch_size, str(dev), bc.seed), dev,
                                     first)  # the typical script: fp32
    n = {k: max(1, bc.updates // 4) if k[0] == "naive" else bc.updates for k in impls}
    for impl in impls.values():  # warm-up (allocator, first-call costs)
        impl.step()
    ips: dict[tuple[str, str], list[float]] = {k: [] for k in impls}
    peak: dict[tuple[str, str], float] = {}
    for r in range(bc.repeats):
        order = list(impls) if r % 2 == 0 else list(reversed(impls))  # interleaved
        for k in order:
            if dev.type == "cuda":
                # Every implementation's weights and buffers stay resident: count only what a
                # step allocates above them, or each peak would hold all the others.
                torch.cuda.synchronize(dev)
                resident = torch.cuda.memory_allocated(dev)
                torch.cuda.reset_peak_memory_stats(dev)
            secs = _time(impls[k].step, n[k], dev)
            ips[k].append(n[k] * bc.batch_size / secs)
            if dev.type == "cuda":
                step_mib = (torch.cuda.max_memory_allocated(dev) - resident) / 2**20
                peak[k] = max(peak.get(k, 0.0), step_mib)
        log(f"  {preset} repeat {r + 1}/{bc.repeats}: " +
            ", ".join(f"{i}/{p} {v[-1]:.0f}" for (i, p), v in ips.items()))
    out = {"ips": ips, "peak": peak, "config": dataclasses.asdict(first.cfg),
           "gflops_per_update": impls[("roofline", first.cfg.precision)].flops / 1e9,
           "glimpses": first.env.cfg.n_glimpses}
    if bc.profile:
        out["breakdown"], out["top_ops"] = profile_preset(first, dev, bc.updates)
    return out


def profile_preset(e2e: EndToEnd, dev: torch.device, updates: int) -> tuple[dict, list]:
    """Where an end-to-end update spends its time: phases (wall) and torch.profiler ops."""
    from torch.profiler import ProfilerActivity, profile

    phases: dict[str, float] = {}
    env = e2e.env
    B, T = e2e.cfg.batch_size, env.cfg.n_glimpses
    no_class = torch.zeros(B, dtype=torch.long, device=dev)
    loc = torch.zeros(B, 2, device=dev)
    sync_device(dev)
    t0 = time.perf_counter()
    for _ in range(updates):  # the env alone: canvases + pyramid + glimpse reads
        env.reset()
        for _ in range(T):
            env.step((loc, no_class))
    sync_device(dev)
    env_s = time.perf_counter() - t0
    for _ in range(updates):
        e2e.step(phases)
    total = sum(phases.values())
    share = {"env (data+sensor)": env_s, "network forward+loss": phases["rollout+loss"] - env_s,
             "backward+clip+adam": phases["backward+clip+adam"]}
    share = {k: 100.0 * max(0.0, v) / total for k, v in share.items()}
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(max(1, updates // 2)):
            e2e.step()
    key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    tot = sum(getattr(e, key) for e in events) or 1.0
    top = [(e.key, 100.0 * getattr(e, key) / tot) for e in events[:10]]
    return share, top


TTA_EPOCHS = 100.0  # the learning-rate schedule of the time-to-accuracy runs


def _parse_bool(value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise ValueError(value)
    return value.lower() == "true"


def variant_overrides(variant: str) -> dict:
    """``"default"`` -> ``{}``; ``"scales=2,augment_shift=2"`` -> typed TrainConfig overrides.

    Raises:
        ValueError: an unknown field or a value of the wrong type, naming it.
    """
    if variant.strip() == "default":
        return {}
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    out: dict = {}
    for item in variant.split(","):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in fields:
            raise ValueError(f"time-to-accuracy variant {variant!r}: {item!r} is not "
                             f"field=value with a TrainConfig field (e.g. scales=2)")
        kind = str(fields[key].type).removesuffix(" | None")  # annotations are strings here
        try:
            out[key] = {"int": int, "float": float, "bool": _parse_bool}.get(kind, str)(value)
        except ValueError:
            raise ValueError(f"time-to-accuracy variant {variant!r}: {key}={value!r} is not "
                             f"{kind}") from None
    return out


def time_to_accuracy(bc: BenchConfig, dev: torch.device, log=print,
                     variant: str = "default") -> dict[int, float | None]:
    """Wall seconds of REINFORCE on mnist28 until val accuracy first reaches each target."""
    from .ram_common import Evaluator

    n = bc.time_to_accuracy_eval_size
    cfg = train_config("mnist28", bc.batch_size, str(dev), bc.seed, epochs=TTA_EPOCHS,
                       eval_size=n, eval_batch=math.gcd(n, 1000), **variant_overrides(variant))
    cfg.validate()
    e2e = EndToEnd(cfg, dev)
    val = Evaluator(cfg, dev, "val", cfg.eval_size)
    reached: dict[int, float | None] = {95: None, 97: None, 99: None}
    train_s = 0.0  # training wall time only: validation is not counted
    while train_s < bc.time_to_accuracy_s and reached[99] is None:
        train_s += _time(e2e.step, 50, dev)
        acc = val(e2e.model)["accuracy"]
        for target, when in reached.items():
            if when is None and acc >= target:
                reached[target] = train_s
        if e2e.update % 500 == 0:
            log(f"  time to accuracy: {train_s:.0f} s, {e2e.update} updates, val {acc:.2f}%")
    return reached


def bench(bc: BenchConfig) -> Path:
    """Run the benchmark and write ``speed_<cpu|cuda>.json``; prints a summary table."""
    from .run import resolve_device

    bc.validate()
    dev = resolve_device(bc.device)
    precision_list(bc)  # bad flags fail before any timing
    process_commit()  # the code being timed (the file is written at the end)
    n = bc.time_to_accuracy_eval_size
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10_000:
        raise ValueError(f"--time-to-accuracy-eval-size={n!r} must be an integer in [1, 10000] "
                         f"(validation canvases)")
    for variant in bc.time_to_accuracy_variants:
        train_config("mnist28", bc.batch_size, str(dev), epochs=TTA_EPOCHS,
                     **variant_overrides(variant)).validate()  # as time_to_accuracy runs it
    torch.set_num_threads(bc.threads or usable_cores())
    t0 = time.perf_counter()
    rows = []
    for preset in bc.preset_list():
        m = measure_preset(preset, bc, dev)
        conf = {**m["config"], "updates_per_repeat": bc.updates, "repeats": bc.repeats,
                "gflop_per_update_roofline": m["gflops_per_update"],
                "torch_threads": torch.get_num_threads(), "loadavg_1m": os.getloadavg()[0]}
        med = {k: statistics.median(v) for k, v in m["ips"].items()}
        for (impl, prec), v in m["ips"].items():
            rows.append(result("images_per_s", v, "images/s", True,
                               {"preset": preset, "impl": impl, "precision": prec,
                                "batch_size": bc.batch_size, "glimpses": m["glimpses"]},
                               {**conf, "precision": prec}, aggregate="median"))
        for prec in precision_list(bc):
            for of, of_prec in (("roofline", prec), ("floor", prec), ("naive", "fp32")):
                per = [a / b for a, b in zip(m["ips"][("hardattn", prec)],
                                             m["ips"][(of, of_prec)])]  # same repeat
                rows.append(result("ratio", per, "x", True,
                                   {"preset": preset, "of": of, "precision": prec,
                                    "batch_size": bc.batch_size},
                                   {**conf, "precision": prec}, aggregate="median"))
            print(f"{preset} ({prec}): images/s " + ", ".join(
                f"{i} {v:.0f}" for (i, p), v in med.items() if p == prec or i == "naive") +
                f"; end-to-end = "
                f"{100 * med[('hardattn', prec)] / med[('roofline', prec)]:.0f}% of roofline, "
                f"{100 * med[('hardattn', prec)] / med[('floor', prec)]:.0f}% of floor, "
                f"{med[('hardattn', prec)] / med[('naive', 'fp32')]:.1f}x naive")
        for (impl, prec), v in m["peak"].items():
            rows.append(result("peak_mem_mib", v, "MiB", False,
                               {"preset": preset, "impl": impl, "precision": prec,
                                "scope": "step_above_resident"}))
        for phase, pct in m.get("breakdown", {}).items():
            rows.append(result("time_share_pct", pct, "%", False,
                               {"preset": preset, "impl": "hardattn", "phase": phase}))
        if "breakdown" in m:
            print("  time: " + ", ".join(f"{k} {v:.0f}%" for k, v in m["breakdown"].items()))
            print("  top ops: " + ", ".join(f"{k} {v:.0f}%" for k, v in m["top_ops"][:6]))
    if dev.type == "cpu":
        rows.append(result("peak_mem_mib", peak_rss_mib(), "MiB", False,
                           {"preset": "all", "impl": "process_rss"}))
    for variant in bc.time_to_accuracy_variants if bc.time_to_accuracy_s > 0 else ():
        name = variant.strip()
        print(f"time to accuracy, mnist28, {name} config:")
        for target, secs in time_to_accuracy(bc, dev, variant=variant).items():
            # Not reached within the budget: the value is the budget, a lower bound.
            rows.append(result("seconds_to_val_acc", bc.time_to_accuracy_s if secs is None
                               else secs, "s", False,
                               {"preset": "mnist28", "target": target,
                                "reached": secs is not None,
                                "budget_s": bc.time_to_accuracy_s, "config": name},
                               {"batch_size": bc.batch_size,
                                "eval_size": bc.time_to_accuracy_eval_size,
                                "eval_every_updates": 50, "counts": "training time only",
                                "epochs": TTA_EPOCHS, **variant_overrides(variant)}))
    path = write_results(f"speed_{dev.type}", rows, time.perf_counter() - t0, dev,
                         command="hardattn bench " + " ".join(sys.argv[2:])
                         if sys.argv[1:2] == ["bench"] else None, out_dir=bc.out)
    return path
