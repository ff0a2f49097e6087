"""``hardattn bench``: the four implementations, the results file, the command."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from hardattn.agents.bench import (
    IMPLS,
    BenchConfig,
    EndToEnd,
    Naive,
    Roofline,
    bench,
    layer_shapes,
    train_config,
)
from hardattn.sensors import glimpse


def test_naive_retina_reads_the_same_glimpses_as_the_sensor(data_root):
    for preset in ("mnist28", "cluttered60"):
        cfg = train_config(preset, 8, "cpu")
        e2e = EndToEnd(cfg, torch.device("cpu"))
        naive = Naive(cfg, torch.device("cpu"), e2e)
        g = e2e.env.cfg
        images = naive.sampler.sample(8, torch.Generator().manual_seed(0)).images
        loc = torch.rand(8, 2, generator=torch.Generator().manual_seed(1)) * 2.4 - 1.2
        loc[0] = torch.tensor([0.0, 0.0])
        want = glimpse(images, loc, g.patch, g.scales, g.scale_factor)
        torch.testing.assert_close(naive.retina(images, loc), want, rtol=0, atol=1e-6)


def test_roofline_covers_every_linear_of_the_model(data_root):
    cfg = train_config("mnist28", 8, "cpu")
    e2e = EndToEnd(cfg, torch.device("cpu"))
    shapes = layer_shapes(e2e.model)
    # what, where, combine, core, location, classifier, baseline
    assert len(shapes) == 7
    roof = Roofline(cfg, torch.device("cpu"), e2e)
    assert [dx for *_, dx in shapes] == [False, False, True, True, False, True, False]
    assert roof.flops == 2 * 6 * 8 * sum((3 if dx else 2) * i * o for i, o, dx in shapes)
    roof.step()


def test_bench_writes_the_results_file(data_root, tmp_path):
    path = bench(BenchConfig(presets="mnist28", batch_size=16, repeats=2, updates=1,
                             device="cpu", threads=2, profile=True, out=str(tmp_path)))
    assert path.name == "speed_cpu.json"
    blob = json.loads(path.read_text())
    rows = blob["results"]
    ips = {r["labels"]["impl"]: r for r in rows if r["metric"] == "images_per_s"}
    assert set(ips) == set(IMPLS)
    assert all(r["value"] > 0 and len(r["per_repeat"]) == 2 for r in ips.values())
    ratios = {r["labels"]["of"]: r for r in rows if r["metric"] == "ratio"}
    assert set(ratios) == {"roofline", "floor", "naive"}
    for of, r in ratios.items():  # per-repeat ratios of the same repeat
        want = [a / b for a, b in zip(ips["hardattn"]["per_repeat"], ips[of]["per_repeat"])]
        assert r["per_repeat"] == want
    assert any(r["metric"] == "peak_mem_mib" for r in rows)
    shares = [r["value"] for r in rows if r["metric"] == "time_share_pct"]
    assert len(shares) == 3 and all(0 <= s <= 100 for s in shares)


def test_bench_is_a_command():
    out = subprocess.run([sys.executable, "-m", "hardattn", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "bench" in out
    out = subprocess.run([sys.executable, "-m", "hardattn", "bench", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--presets" in out and "--repeats" in out and "--batch-size" in out
