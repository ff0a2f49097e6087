"""Training speed of the RAM agents: end to end vs. compute floor, GEMM roofline and a naive
trainer, measured in one run on the current device (``hardattn bench`` with the same flags).

    python benchmarks/speed.py --presets mnist28,cluttered60,cluttered100 --repeats 5

writes ``benchmarks/results/speed_<cpu|cuda>.json`` (metrics ``images_per_s``, ``ratio``,
``peak_mem_mib``, ``time_share_pct``; ``seconds_to_val_acc`` with --time-to-accuracy-s).
"""

import sys

import tyro

from hardattn.agents.bench import BenchConfig, bench

if __name__ == "__main__":
    cfg = tyro.cli(BenchConfig, args=sys.argv[1:], prog="python benchmarks/speed.py")
    print(f"wrote {bench(cfg)}")
