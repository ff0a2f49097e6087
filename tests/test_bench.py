"""``hardattn bench``: the four implementations, the results file, the command."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

from hardattn.agents.bench import IMPLS, BenchConfig, bench, train_config
from hardattn.agents.bench_impls import EndToEnd, Naive, NaiveRAM, Roofline, layer_shapes
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


def test_naive_network_is_the_same_function_written_with_separate_linears(data_root):
    cfg = train_config("cluttered60", 8, "cpu")
    e2e = EndToEnd(cfg, torch.device("cpu"))
    ram, g = e2e.model, e2e.env.cfg
    naive = NaiveRAM(g.scales * g.patch * g.patch, cfg)
    wh, gh = cfg.what_hidden, cfg.glimpse_hidden
    with torch.no_grad():  # split the fused matrices of RAM into the naive ones
        comb, cell = ram.glimpse_net.combine, ram.core.cell
        pairs = [(naive.fc_what, ram.glimpse_net.what), (naive.fc_where, ram.glimpse_net.where),
                 (naive.fc_loc, ram.location.fc), (naive.classifier, ram.classifier),
                 (naive.fc_baseline, ram.baseline)]
        for a, b in pairs:
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)
        naive.what_to_g.weight.copy_(comb.weight[:, :wh])
        naive.where_to_g.weight.copy_(comb.weight[:, wh:])
        naive.what_to_g.bias.copy_(comb.bias)
        naive.where_to_g.bias.zero_()
        naive.i2h.weight.copy_(cell.weight[:, :gh])
        naive.h2h.weight.copy_(cell.weight[:, gh:])
        naive.i2h.bias.copy_(cell.bias)
        naive.h2h.bias.zero_()
    gen = torch.Generator().manual_seed(0)
    patches = torch.rand(8, g.scales, 1, g.patch, g.patch, generator=gen)
    loc = torch.rand(8, 2, generator=gen) * 2 - 1
    h0 = torch.rand(8, cfg.core_hidden, generator=gen)
    _, want = ram.step(patches, loc, h0)
    _, got = naive.step(patches, loc, h0)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(naive.location_mean(got), ram.location_mean(want))
    torch.testing.assert_close(naive.value(got), ram.value(want))
    extra_biases = gh + cfg.core_hidden
    assert sum(p.numel() for p in naive.parameters()) == \
        sum(p.numel() for p in ram.parameters()) - 2 + extra_biases  # RAM's log_std (2,)
    before = [p.detach().clone() for p in naive.parameters()]
    trainer = Naive(cfg, torch.device("cpu"), e2e)
    trainer.model.load_state_dict(naive.state_dict())
    trainer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_bf16_roofline_multiplies_bfloat16_matrices(data_root):
    cfg = train_config("mnist28", 8, "cpu", precision="bf16")
    roof = Roofline(cfg, torch.device("cpu"), EndToEnd(cfg, torch.device("cpu")))
    assert {t.dtype for op in roof.ops for t in op[1:] if t is not None} == {torch.bfloat16}


@pytest.mark.parametrize("precisions, named", [("fp16", "'fp16'"), (",", "empty")])
def test_bad_precisions_fail_before_any_timing(tmp_path, precisions, named):
    with pytest.raises(ValueError, match=named):
        bench(BenchConfig(presets="mnist28", device="cpu", precisions=precisions,
                          out=str(tmp_path)))
    assert not any(tmp_path.iterdir())


def test_roofline_covers_every_linear_of_the_model_as_often_as_an_update_runs_it(data_root):
    cfg = train_config("mnist28", 8, "cpu")
    e2e = EndToEnd(cfg, torch.device("cpu"))
    shapes = layer_shapes(e2e.model, T=6)
    # what, where, combine, core, location, classifier, baseline
    assert len(shapes) == 7
    roof = Roofline(cfg, torch.device("cpu"), e2e)
    assert [dx for _, _, dx, _ in shapes] == [False, False, True, True, False, True, False]
    # Every glimpse step but the last moves (location head T - 1 times); one classification.
    assert [uses for *_, uses in shapes] == [6, 6, 6, 6, 5, 1, 6]
    assert roof.flops == 2 * 8 * sum((3 if dx else 2) * i * o * uses
                                     for i, o, dx, uses in shapes)
    roof.step()


def _gemms(fn) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(ev.name in ("aten::mm", "aten::addmm", "aten::bmm") for ev in prof.events())


def test_roofline_runs_the_gemms_of_one_update_no_more_no_fewer(data_root):
    # Small GEMMs cost per call as much as per FLOP: the roofline must make the same calls.
    cfg = train_config("mnist28", 8, "cpu")
    e2e = EndToEnd(cfg, torch.device("cpu"))
    e2e.step()  # warm: the first update builds the optimizer state
    assert _gemms(Roofline(cfg, torch.device("cpu"), e2e).step) == _gemms(e2e.step)


def test_bench_writes_the_results_file(data_root, tmp_path):
    path = bench(BenchConfig(presets="mnist28", batch_size=16, repeats=2, updates=1,
                             device="cpu", threads=2, profile=True, out=str(tmp_path),
                             precisions="fp32,bf16"))
    assert path.name == "speed_cpu.json"
    blob = json.loads(path.read_text())
    rows = blob["results"]
    ips = {(r["labels"]["impl"], r["labels"]["precision"]): r for r in rows
           if r["metric"] == "images_per_s"}
    assert set(ips) == {(i, "fp32") for i in IMPLS} | {(i, "bf16") for i in IMPLS[:3]}
    assert all(r["value"] > 0 and len(r["per_repeat"]) == 2 for r in ips.values())
    assert ips[("hardattn", "bf16")]["config"]["precision"] == "bf16"
    ratios = {(r["labels"]["of"], r["labels"]["precision"]): r for r in rows
              if r["metric"] == "ratio"}
    assert set(ratios) == {(of, p) for of in ("roofline", "floor", "naive")
                           for p in ("fp32", "bf16")}
    for (of, prec), r in ratios.items():  # per-repeat ratios of the same repeat
        ref = ips[(of, "fp32" if of == "naive" else prec)]  # one naive script, in fp32
        want = [a / b for a, b in zip(ips[("hardattn", prec)]["per_repeat"], ref["per_repeat"])]
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


def test_time_to_accuracy_rows_per_config_variant(data_root, tmp_path):
    path = bench(BenchConfig(presets="", batch_size=8, device="cpu", threads=1,
                             time_to_accuracy_s=0.5, out=str(tmp_path),
                             time_to_accuracy_eval_size=300,
                             time_to_accuracy_variants=("default", "scales=2,augment_shift=1")))
    rows = [r for r in json.loads(path.read_text())["results"]
            if r["metric"] == "seconds_to_val_acc"]
    got = {(r["labels"]["config"], r["labels"]["target"]) for r in rows}
    assert got == {(c, t) for c in ("default", "scales=2,augment_shift=1") for t in (95, 97, 99)}
    for r in rows:
        assert r["config"]["epochs"] == 100.0 and r["config"]["eval_size"] == 300
        tuned = r["labels"]["config"] != "default"
        assert (r["config"].get("scales"), r["config"].get("augment_shift")) == \
            ((2, 1) if tuned else (None, None))


@pytest.mark.parametrize("n", [0, 10_001, 2.5])
def test_bad_time_to_accuracy_eval_size_fails_before_any_timing(tmp_path, n):
    with pytest.raises(ValueError, match=f"--time-to-accuracy-eval-size={n!r}"):
        bench(BenchConfig(presets="mnist28", device="cpu", time_to_accuracy_s=1.0,
                          out=str(tmp_path), time_to_accuracy_eval_size=n))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("variant,named", [("scales=two", "scales='two'"),
                                           ("nope=1", "'nope=1'"), ("scales=0", "scales")])
def test_bad_time_to_accuracy_variant_fails_before_any_timing(tmp_path, variant, named):
    with pytest.raises(ValueError, match=re.escape(named)):
        bench(BenchConfig(presets="mnist28", device="cpu", time_to_accuracy_s=1.0,
                          out=str(tmp_path), time_to_accuracy_variants=(variant,)))
    assert not any(tmp_path.iterdir())


def test_end_to_end_draws_samples_per_image_paths_of_each_canvas_as_training_does(
        data_root, monkeypatch):
    # A time-to-accuracy variant with samples_per_image=2,baseline=loo must group the paths of
    # one canvas, as agents.reinforce.train does, or the leave-one-out baseline mixes canvases.
    from hardattn.agents import bench_impls

    seen = []
    real = bench_impls.rollout

    def spy(*args, **kwargs):
        seen.append(kwargs.get("options"))
        return real(*args, **kwargs)

    monkeypatch.setattr(bench_impls, "rollout", spy)
    cfg = train_config("mnist28", 8, "cpu", samples_per_image=2, baseline="loo")
    EndToEnd(cfg, torch.device("cpu")).step()
    EndToEnd(train_config("mnist28", 8, "cpu"), torch.device("cpu")).step()
    assert seen == [{"repeat": 2}, None]
