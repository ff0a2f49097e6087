"""Backprop baselines: soft sensor gradients, each model learns a tiny problem, training runs,
reports, determinism and resume, config checks, CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from hardattn import checkpoint as ckpt
from hardattn import sensors
from hardattn.config import SOFT_AGENTS, TrainConfig, used_by

TINY = dict(env="GlimpseMNIST-v0", device="cpu", batch_size=16, total_images=16 * 6,
            eval_every=3, eval_size=100, test_size=100, eval_batch=100, log_every=1,
            image_every=3, grad_stats_every=0, checkpoint_every=3, progress=False,
            core_hidden=64, glimpse_hidden=64, what_hidden=32, where_hidden=32, fc_hidden=64,
            feature_channels=16)
HARD_REPORT_KEYS = {"env", "agent", "seed", "val_error_pct", "best_update", "test_error_pct",
                    "test_size", "images", "wall_s", "images_per_s", "nonfinite_steps",
                    "device", "run_dir"}


def tiny(tmp_path, agent="soft-glimpse", **kw) -> TrainConfig:
    return TrainConfig(**{**used_by(agent, TINY), "agent": agent, "run_dir": str(tmp_path / "run"),
                          **kw})


def model_and_task(agent: str, **kw):
    from hardattn.agents import soft_common as sc

    cfg = TrainConfig(**{**used_by(agent, TINY), "agent": agent, **kw}).validate()
    task = sc.task_config(cfg)
    torch.manual_seed(0)
    return sc.make_model(cfg, task), task, cfg


# ---------------------------------------------------------------- gradients


def test_soft_sensor_gradient_reaches_the_location():
    # A smooth blob, so the glimpse depends smoothly on where it is taken.
    H = W = 28
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64),
                            torch.arange(W, dtype=torch.float64), indexing="ij")
    img = torch.exp(-((ys - 10.0) ** 2 + (xs - 17.0) ** 2) / 30.0)[None, None]
    loc = torch.tensor([[0.1, -0.2]], dtype=torch.float64, requires_grad=True)
    w = torch.linspace(-1, 1, 2 * 8 * 8, dtype=torch.float64).view(1, 2, 1, 8, 8)

    def f(x):
        return (sensors.glimpse(img, x, 8, 2, mode="soft") * w).sum()

    (grad,) = torch.autograd.grad(f(loc), loc)
    assert grad.abs().min() > 1e-4  # both coordinates
    eps = 1e-6
    for j in range(2):
        e = torch.zeros_like(loc)
        e[0, j] = eps
        fd = (f(loc.detach() + e) - f(loc.detach() - e)) / (2 * eps)
        assert torch.allclose(grad[0, j], fd, rtol=1e-4, atol=1e-8), (j, grad, fd)
    # ... and the image gets one too; the hard retina gives the location none.
    img.requires_grad_(True)
    assert torch.autograd.grad(f(loc), img)[0].abs().sum() > 0
    hard = sensors.glimpse(img.detach().float(), loc.float(), 8, 2, mode="hard")
    assert not hard.requires_grad


@pytest.mark.parametrize("agent, head", [("soft-glimpse", "location"),
                                         ("reparam-glimpse", "location"), ("draw", "read")])
def test_the_class_loss_trains_where_to_look(data_root, agent, head):
    from hardattn import data

    model, task, _ = model_and_task(agent)
    images, labels = data.fixed_set("mnist28", "train", n=8)
    first = torch.zeros(8, 2)
    noise = torch.Generator().manual_seed(0)
    out = model(images, first if model.uses_first else None, noise=noise, std=0.1)
    F.cross_entropy(out.logits, labels).backward()
    grads = [p.grad for p in getattr(model, head).parameters() if p.requires_grad]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("agent", ["soft-glimpse", "reparam-glimpse", "draw"])
@pytest.mark.parametrize("location_grad", ["head", "core"])
def test_the_location_reaches_the_core_only_with_location_grad_core(data_root, agent,
                                                                    location_grad):
    # Backprop from a location through the sensor into the core state, and on through every
    # later step, is a feedback loop whose gradient exploded on cluttered60 (norms of 1e3 to
    # 1e6 under a clip of 5: the class loss starved, accuracy stayed near chance). With
    # location_grad="head" the location head reads the core state detached, as RAM's does.
    from hardattn import data

    model, _, _ = model_and_task(agent, location_grad=location_grad)
    images, _ = data.fixed_set("mnist28", "train", n=4)
    out = model(images, torch.zeros(4, 2) if model.uses_first else None,
                noise=torch.Generator().manual_seed(0), std=0.1)
    later = out.locs[1:].sum()  # the locations chosen from the core state
    grads = torch.autograd.grad(later, list(model.core.parameters()), allow_unused=True)
    reached = any(g is not None and bool(g.abs().sum() > 0) for g in grads)
    assert reached == (location_grad == "core")


def test_reparam_noise_is_pathwise_and_evaluation_is_deterministic(data_root):
    from hardattn import data

    model, _, _ = model_and_task("reparam-glimpse", std_schedule="learned")
    images, labels = data.fixed_set("mnist28", "train", n=8)
    first = torch.zeros(8, 2)
    a = model(images, first, noise=torch.Generator().manual_seed(0))
    b = model(images, first, noise=torch.Generator().manual_seed(1))
    assert not torch.equal(a.locs[1:], b.locs[1:])  # the noise moves the glimpses
    F.cross_entropy(a.logits, labels).backward()
    assert model.location.log_std.grad.abs().sum() > 0  # the learned std gets the pathwise grad
    with torch.no_grad():
        e1, e2 = model(images, first), model(images, first)
    assert torch.equal(e1.locs, e2.locs) and torch.equal(e1.logits, e2.logits)


@pytest.mark.parametrize("score", ["dot", "scaled", "general", "additive"])
def test_soft_cnn_scores_are_distributions_over_positions(data_root, score):
    from hardattn import data

    model, _, _ = model_and_task("soft-cnn", score=score)
    images, _ = data.fixed_set("mnist28", "train", n=4)
    out, alpha = model._run(images, None, False)
    T, B, P = alpha.shape
    assert (T, B, P) == (6, 4, 7 * 7)
    assert torch.allclose(alpha.sum(-1), torch.ones(T, B), atol=1e-5)
    assert out.locs.shape == (T, B, 2) and out.locs.abs().max() <= 1
    n_score = sum(p.numel() for p in model.score.parameters())
    assert n_score == {"dot": 0, "scaled": 0, "general": 64 * 64,
                       "additive": 64 * 64 * 2 + 64 + 64}[score]
    if score == "additive":  # a narrower attention width: W h and U k are a wide
        narrow, _, _ = model_and_task("soft-cnn", score=score, attention_dim=8)
        assert sum(p.numel() for p in narrow.score.parameters()) == 64 * 8 * 2 + 8 + 8
        _, alpha8 = narrow._run(images, None, False)
        assert torch.allclose(alpha8.sum(-1), torch.ones(T, B), atol=1e-5)
    if score in ("dot", "scaled", "general"):  # zero initial state: the first read is uniform
        assert torch.allclose(alpha[0], torch.full((B, P), 1.0 / P), atol=1e-6)
    out.logits.sum().backward()  # the class loss reaches the score and the feature CNN
    for p in [*model.score.parameters(), *model.features.parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_soft_cnn_loads_checkpoints_that_hold_the_embedding_as_a_1x1_conv(data_root):
    from hardattn import data

    model, _, _ = model_and_task("soft-cnn")
    old = model.state_dict()
    old["embed.weight"] = old["embed.weight"][..., None, None].clone()  # (d, C + 2, 1, 1)
    fresh, _, _ = model_and_task("soft-cnn")
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)  # so that loading must overwrite every weight
    fresh.load_state_dict(old)
    images, _ = data.fixed_set("mnist28", "train", n=4)
    with torch.no_grad():
        assert torch.equal(fresh(images).logits, model(images).logits)


# ---------------------------------------------------------------- learning a tiny problem


@pytest.mark.parametrize("agent, kw", [
    ("soft-glimpse", {}), ("reparam-glimpse", {}), ("draw", {}), ("soft-cnn", {}), ("cnn", {}),
    ("mlp", {}),
])
def test_loss_falls_on_a_tiny_problem(data_root, agent, kw):
    from hardattn import data

    model, _, _ = model_and_task(agent, **kw)
    images, labels = data.fixed_set("mnist28", "train", n=64)
    first = torch.zeros(64, 2) if model.uses_first else None
    noise = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        loss = F.cross_entropy(model(images, first, noise=noise, std=0.05).logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses


# ---------------------------------------------------------------- full runs


@pytest.mark.parametrize("agent", SOFT_AGENTS)
def test_train_writes_the_hard_agents_outputs_plus_costs(data_root, tmp_path, agent):
    from hardattn.agents.run import train

    report = train(tiny(tmp_path, agent))
    run = tmp_path / "run"
    assert HARD_REPORT_KEYS | {"pixels_read_per_image", "macs_per_image", "params"} \
        <= set(report)
    assert json.loads((run / "report.json").read_text()) == report
    for name in ("config.json", "meta.json", "checkpoints/best.pt"):
        assert (run / name).exists(), name
    assert ckpt.periodic_checkpoints(run / "checkpoints")
    assert report["images"] == 96 and 0 <= report["test_error_pct"] <= 100
    assert report["pixels_read_per_image"] == {"soft-glimpse": 6 * 64, "reparam-glimpse": 6 * 64,
                                               "draw": 6 * 64}.get(agent, 28 * 28)
    if agent == "cnn":  # conv 8 x (10x10) on a 4x4 grid, then 128 -> 64 -> 10
        assert report["macs_per_image"] == 16 * 8 * 100 + 128 * 64 + 64 * 10
    assert report["params"] == sum(
        v.numel() for k, v in ckpt.load_checkpoint(run / "checkpoints" / "best.pt")["model"]
        .items() if not k.endswith("log_std"))


def test_logs_the_hard_agents_tags_and_attention_images(data_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from hardattn.agents.run import train

    train(tiny(tmp_path, "reparam-glimpse"))
    acc = EventAccumulator(str(tmp_path / "run"))
    acc.Reload()
    tags = acc.Tags()
    for tag in ("rollout/accuracy", "rollout/reward", "train/loss", "train/loss_classify",
                "train/grad_norm", "train/lr", "train/nonfinite_steps", "eval/accuracy",
                "eval/error", "time/images_per_s", "time/elapsed_s", "attention/location_std",
                "attention/mean_abs_location"):
        assert tag in tags["scalars"], tag
    assert {"attention/glimpse_paths_val", "attention/glimpse_paths_test"} <= set(tags["images"])
    assert "attention/locations_x" in tags["histograms"]
    assert [e.step for e in acc.Scalars("eval/error")] == [48, 96]  # images, as the hard agents


def final_weights(run_dir) -> dict:
    return ckpt.load_latest(run_dir)[0]["model"]


def test_same_seed_same_weights_and_resume_equals_uninterrupted(data_root, tmp_path):
    from hardattn.agents.run import train

    # reparam-glimpse with a random first glimpse uses every generator of a soft run.
    full = tiny(tmp_path / "a", "reparam-glimpse", first_glimpse="random")
    report = train(full)
    train(dataclasses.replace(full, run_dir=str(tmp_path / "b" / "run")))
    a, b = final_weights(tmp_path / "a" / "run"), final_weights(tmp_path / "b" / "run")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Interrupted after update 2: only ckpt_00000002 (and best.pt if it was at or before 2).
    cut = tmp_path / "cut" / "run"
    shutil.copytree(tmp_path / "a" / "run", cut)
    best_update = ckpt.load_checkpoint(cut / "checkpoints" / "best.pt")["update"]
    for p in (cut / "checkpoints").iterdir():
        if p.name != "ckpt_00000002.pt" and not (p.name == "best.pt" and best_update <= 2):
            p.unlink()
    (cut / "report.json").unlink()
    resumed = train(dataclasses.replace(full, resume=str(cut), run_dir=None))
    c = final_weights(cut)
    assert all(torch.equal(a[k], c[k]) for k in a)
    assert resumed["test_error_pct"] == report["test_error_pct"]
    assert resumed["best_update"] == report["best_update"]


# ---------------------------------------------------------------- config and CLI


@pytest.mark.parametrize("kw, field", [
    (dict(agent="soft-cnn", score="cosine"), "--score"),
    (dict(agent="draw", draw_grid=1), "--draw-grid"),
    (dict(agent="cnn", samples_per_image=2, batch_size=16), "samples-per-image"),
    (dict(agent="mlp", fc_hidden=0), "--fc-hidden"),
    (dict(agent="soft-cnn", feature_channels=0), "--feature-channels"),
    (dict(agent="soft-cnn", attention_dim=0), "--attention-dim"),
    (dict(agent="soft-cnn", location_grad="core"), "--location-grad=core is for"),
    (dict(agent="soft-cnn", score="dot", attention_dim=32), "--attention-dim=32 is for"),
])
def test_invalid_soft_configs_fail_before_training(tmp_path, kw, field):
    from hardattn.agents.run import registered_ids

    with pytest.raises(ValueError, match=field):
        tiny(tmp_path, **kw).validate(registered_ids())
    assert not (tmp_path / "run").exists()


def test_cli_trains_a_soft_agent_with_its_flags(data_root, tmp_path):
    from hardattn.cli import main

    args = ["train", "--agent", "soft-cnn", "--score", "general", "--run-dir",
            str(tmp_path / "run")]
    for k, v in used_by("soft-cnn", TINY).items():
        flag = "--" + k.replace("_", "-")
        args += [flag if v is not False else "--no-" + k.replace("_", "-")] + \
            ([] if isinstance(v, bool) else [str(v)])
    main(args)
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["agent"] == "soft-cnn" and cfg["score"] == "general"
    assert (tmp_path / "run" / "report.json").exists()


# ---------------------------------------------------------------- learning (slow)


@pytest.mark.slow
@pytest.mark.parametrize("agent", SOFT_AGENTS)
def test_short_run_learns_mnist28(data_root, tmp_path, agent):
    from hardattn.agents.run import train

    report = train(tiny(tmp_path, agent, total_images=64 * 300, batch_size=64, eval_every=100,
                        checkpoint_every=100, eval_size=1000, test_size=1000, eval_batch=500,
                        core_hidden=256, glimpse_hidden=256, what_hidden=128, where_hidden=128,
                        log_every=20, image_every=100,
                        **used_by(agent, dict(fc_hidden=256, feature_channels=64))))
    # Chance is 90%. After 19,200 canvases cnn, mlp, soft-glimpse and draw were < 30% (2 CPU
    # cores, 2026-11), soft-cnn 23%, the noisier reparam-glimpse 38%.
    assert report["val_error_pct"] < 50.0


def test_hardattn_eval_scores_a_backprop_checkpoint_like_its_report(data_root, tmp_path):
    import json
    import subprocess
    import sys

    from hardattn.agents.run import train

    cfg = tiny(tmp_path, agent="cnn")
    report = train(cfg)
    run_dir = report["run_dir"]
    subprocess.run([sys.executable, "-m", "hardattn.cli", "eval", "--checkpoint", run_dir,
                    "--split", "test", "--n", str(cfg.test_size), "--device", "cpu"],
                   check=True, capture_output=True, text=True)
    ev = json.loads((tmp_path / "run" / "eval_test.json").read_text())
    assert ev["error_pct"] == report["test_error_pct"]
    bad = subprocess.run([sys.executable, "-m", "hardattn.cli", "eval", "--checkpoint", run_dir,
                          "--mc-samples", "4"], capture_output=True, text=True)
    assert bad.returncode != 0 and "deterministic" in bad.stderr and "Traceback" not in bad.stderr


# ---------------------------------------------------------------- bfloat16 (feature extractors)


@pytest.mark.parametrize("agent", ["soft-cnn", "cnn", "mlp"])
def test_bf16_trains_the_feature_extractors_in_autocast_with_float32_weights(
        data_root, tmp_path, agent):
    """``--precision bf16`` for the agents whose cost is matrix work on the whole canvas
    (about 2x on an AVX512-BF16 CPU for soft-cnn on cluttered100): the forward runs in
    bfloat16 autocast, weights, optimiser state and the loss stay float32."""
    from hardattn import checkpoint as ckpt
    from hardattn.agents.run import train

    seen = []

    def spy(module, args, out):
        seen.append(out.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda m, a, o: spy(m, a, o) if isinstance(m, torch.nn.Linear) else None)
    try:
        bf = train(tiny(tmp_path / "bf", agent, precision="bf16"))
    finally:
        handle.remove()
    train(tiny(tmp_path / "fp", agent))
    assert torch.bfloat16 in seen  # training ran in autocast
    state = ckpt.load_latest(tmp_path / "bf" / "run")[0]
    assert all(v.dtype == torch.float32 for v in state["model"].values()
               if v.is_floating_point())
    assert math.isfinite(bf["test_error_pct"]) and bf["nonfinite_steps"] == 0
    a = ckpt.load_latest(tmp_path / "fp" / "run")[0]["model"]
    assert any(not torch.equal(a[k], state["model"][k]) for k in a)  # not the fp32 run


@pytest.mark.parametrize("agent", ["soft-glimpse", "reparam-glimpse", "draw"])
def test_bf16_is_refused_for_agents_that_place_a_sensor(agent):
    with pytest.raises(ValueError, match="--precision=bf16 is for"):
        TrainConfig(**{**used_by(agent, TINY), "agent": agent, "precision": "bf16"}).validate()


def test_soft_precision_benchmark_rows(data_root, tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "soft_precision.py"
    spec = importlib.util.spec_from_file_location("bench_soft_precision", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--agents", "cnn,mlp", "--presets", "mnist28", "--batch-size", "8",
                      "--repeats", "2", "--updates", "1", "--out", str(tmp_path)])
    assert Path(out).name == "soft_precision_cpu.json"
    rows = json.loads(Path(out).read_text())["results"]
    ips = {(r["labels"]["agent"], r["labels"]["precision"]) for r in rows
           if r["metric"] == "images_per_s"}
    assert ips == {(a, p) for a in ("cnn", "mlp") for p in ("fp32", "bf16")}
    ratios = [r for r in rows if r["metric"] == "ratio"]
    assert len(ratios) == 2 and all(len(r["per_repeat"]) == 2 and r["value"] > 0
                                    for r in ratios)
