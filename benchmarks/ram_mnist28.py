"""RAM on mnist28 (`GlimpseMNIST-v0`): test error over seeds, validation-selected.

Run: `python benchmarks/ram_mnist28.py --seeds 3 [--epochs E] [--device cuda]`; writes
`benchmarks/results/ram_mnist28.json`. Finished runs (their report.json) are not trained again.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ram_bench import main  # noqa: E402

DEFAULTS = {"epochs": 100.0, "batch_size": 128, "eval_every": 1000, "grad_stats_every": 0,
            "progress": False}

if __name__ == "__main__":
    print(main("mnist28", "GlimpseMNIST-v0", DEFAULTS))
