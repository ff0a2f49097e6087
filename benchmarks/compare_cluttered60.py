"""Hard vs. soft vs. full-image agents on cluttered60 (`GlimpseCluttered60-v0`), 3 seeds each.

Agents: reinforce, actor-critic (hard glimpses, REINFORCE), soft-glimpse, reparam-glimpse,
draw, soft-cnn (attention trained by backprop), cnn, mlp (the whole canvas). Every run gets the
same budget of 2,000,000 training canvases (40 epochs of the 50,000-image train split), batch
128, Adam lr 1e-3 with cosine decay, validation every 1000 updates on the 10,000 fixed
validation canvases (model selection), and the 10,000 fixed test canvases scored once.

Run: `python benchmarks/compare_cluttered60.py [--seeds 3] [--budget-images N] [--device cuda]`
(hours on a GPU for the whole matrix; days on 2 CPU cores). Resumable: run the same command
again after an interruption. Writes `benchmarks/results/compare_cluttered60.json` (BENCHMARKS.md
format) and `benchmarks/results/compare_cluttered60/` (results.md, results.csv, PNGs); the runs go
to `runs/compare-cluttered60/` (`tensorboard --logdir runs/compare-cluttered60`).

The committed results are a CPU budget: `--budget-images 800000 --eval-every 500 --threads 1
--overrides reinforce.std=0.25 actor-critic.std=0.25 soft-cnn.attention_dim=64` on 2 shared
cores, two runs at a time (the JSON's `command`; each run's training commit is in its
`trained_at_commits`). The hard agents' std is the one their own cluttered benchmarks
selected; soft-cnn's narrower additive attention (a = 64) trains 2.3x faster than a = 256,
which made the budget fit.
"""

from hardattn.agents.compare import benchmark

BUDGET_IMAGES = 2_000_000

if __name__ == "__main__":
    print(benchmark("cluttered60", BUDGET_IMAGES))
