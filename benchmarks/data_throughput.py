"""Canvas generation speed: canvases per second for every preset, on CPU and CUDA.

Writes ``benchmarks/results/data_throughput_<device>.json`` in the format of
``../shared/BENCHMARKS.md`` (metric ``canvases_per_s``, the median over timed repeats).

Usage::

    HARDATTN_DATA=/path/to/data python benchmarks/data_throughput.py [--device cpu|cuda|all]
        [--batch 256] [--repeats 7]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import torch

from hardattn import data
from hardattn.benchmarking import result, usable_cores, write_results

SPLIT = "train"  # the split training draws from; the bank size barely affects speed
SEED = 0


def _sync(device: torch.device) -> None:
    # CUDA kernels run asynchronously: without a sync the clock stops before the work does.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(gen: data.CanvasGenerator, batch: int, repeats: int, repeat_s: float,
            warmup_s: float) -> tuple[list[float], int]:
    """Canvases per second of ``gen.sample(batch)``, one figure per timed repeat.

    Each repeat times enough batches to last about ``repeat_s`` seconds, so the clock's
    resolution and per-call jitter stay small against the measured time (at most
    ``3 * repeat_s``: a repeat stops early when the machine got slower after calibration).

    Args:
        gen: the generator to time.
        batch: canvases per ``sample`` call.
        repeats: number of timed repeats.
        repeat_s: target duration of one repeat, in seconds.
        warmup_s: untimed sampling first (allocator, thread pool, CUDA kernels warm up).

    Returns:
        The per-repeat rates and the number of batches each repeat aimed to time.
    """
    g = torch.Generator(device=gen.device).manual_seed(SEED)
    call_s: list[float] = []
    start = time.perf_counter()
    while len(call_s) < 5 or time.perf_counter() - start < warmup_s:
        t0 = time.perf_counter()
        gen.sample(batch, g)
        _sync(gen.device)
        call_s.append(time.perf_counter() - t0)
    # Calibrate on the median call: one call stalled by another process must not shrink
    # every repeat to a handful of batches.
    n_batches = max(1, int(repeat_s / statistics.median(call_s)))
    rates = []
    for _ in range(repeats):
        _sync(gen.device)
        t0 = time.perf_counter()
        done = 0
        # Cut a repeat short when the machine slowed down after calibration, so a busy
        # machine cannot stretch the run to minutes; the rate uses the batches really done.
        while done < n_batches and (done == 0 or time.perf_counter() - t0 < 3 * repeat_s):
            gen.sample(batch, g)
            done += 1
        _sync(gen.device)
        rates.append(done * batch / (time.perf_counter() - t0))
    return rates, n_batches


def run_device(device: torch.device, args: argparse.Namespace) -> None:
    """Time every preset on one device and write its results file."""
    t_start = time.perf_counter()
    rows = []
    for preset in data.PRESETS:
        spec = data.get_spec(preset)
        gen = data.CanvasGenerator.from_split(SPLIT, spec, args.data_root, device)
        rates, n_batches = measure(gen, args.batch, args.repeats, args.repeat_s, args.warmup_s)
        config = {
            **dataclasses.asdict(spec),
            "digit_size": spec.digit_size,
            "split": SPLIT,
            "bank_size": len(gen),
            "seed": SEED,
            "repeats": args.repeats,
            "batches_per_repeat": n_batches,
            "warmup_s": args.warmup_s,
            "torch_threads": torch.get_num_threads(),
            # Other processes on the machine slow the figures down; this says how busy it was.
            "load_avg_1min": round(os.getloadavg()[0], 2),
            "torch_version": torch.__version__,
        }
        row = result("canvases_per_s", rates, "canvases/s", True,
                     {"preset": preset, "batch": args.batch, "device": device.type},
                     config, aggregate="median")
        rows.append(row)
        print(f"{device.type:>4} {preset:<13} batch {args.batch}: {row['value']:>12,.0f} "
              f"canvases/s (std {row['std']:,.0f} over {args.repeats} x {n_batches} batches)",
              flush=True)
    path = write_results(f"data_throughput_{device.type}", rows, time.perf_counter() - t_start,
                         device, out_dir=args.out_dir)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all",
                        help="cpu, cuda, or all (cpu, then cuda when available)")
    parser.add_argument("--batch", type=int, default=256, help="canvases per sample() call")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats (median quoted)")
    parser.add_argument("--repeat-s", type=float, default=0.5,
                        help="target seconds per timed repeat")
    parser.add_argument("--warmup-s", type=float, default=0.5, help="untimed warm-up seconds")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: the cores this process may use)")
    parser.add_argument("--out-dir", default=None,
                        help="results folder (default: benchmarks/results)")
    parser.add_argument("--data-root", default=None,
                        help=f"MNIST root (else ${data.DATA_ENV}, else ./data)")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--batch, --repeats and --threads must be >= 1")

    # One intra-op thread per core this process may run on (the affinity mask, not the host).
    cores = usable_cores()
    torch.set_num_threads(args.threads or cores or 1)

    devices = []
    if args.device in ("cpu", "all"):
        devices.append(torch.device("cpu"))
    if args.device in ("cuda", "all"):
        if torch.cuda.is_available():
            devices.append(torch.device("cuda"))
        elif args.device == "cuda":
            parser.error("--device cuda: torch.cuda.is_available() is False on this machine")
        else:
            print("cuda not available: timing cpu only")
    for device in devices:
        run_device(device, args)


if __name__ == "__main__":
    main()
