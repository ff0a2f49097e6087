"""Training-canvas shifts (``--augment-shift``): exact translations of the canvases of
shift 0, training canvases only, refused where they mean nothing."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hardattn import data
from hardattn.config import TrainConfig, used_by


def _bank(n: int = 64):
    g = torch.Generator().manual_seed(0)
    digits = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
    return digits, torch.randint(0, 10, (n,), generator=g)


def test_translate_moves_content_and_fills_zeros():
    img = torch.arange(1, 26, dtype=torch.float32).view(1, 1, 5, 5).repeat(2, 1, 1, 1)
    out = data.translate(img, torch.tensor([[1, -2], [0, 0]]), 2)
    assert out.shape == img.shape
    assert torch.equal(out[1], img[1])
    # content moved 1 down and 2 left: out[y, x] = img[y - 1, x + 2]
    assert torch.equal(out[0, 0, 1:, :3], img[0, 0, :4, 2:])
    assert torch.all(out[0, 0, 0] == 0) and torch.all(out[0, 0, :, 3:] == 0)


@pytest.mark.parametrize("preset", ["mnist28", "cluttered60"])
def test_shifted_canvases_are_translations_of_the_unshifted_ones(preset):
    digits, labels = _bank()
    k = 3
    base = data.CanvasGenerator(digits, labels, data.get_spec(preset))
    shifted = data.CanvasGenerator(digits, labels, data.get_spec(preset, shift=k))
    a = base.sample(32, torch.Generator().manual_seed(5))
    b = shifted.sample(32, torch.Generator().manual_seed(5))
    assert torch.equal(a.labels, b.labels) and torch.equal(a.digit_index, b.digit_index)
    off = b.digit_pos - a.digit_pos  # (n, 2): the shift each canvas received
    assert off.abs().max() <= k and (off != 0).any() and len({tuple(o) for o in off.tolist()}) > 3
    assert torch.equal(b.distractor_pos - a.distractor_pos, off[:, None].expand_as(
        b.distractor_pos))
    assert torch.equal(b.images, data.translate(a.images, off, k))
    # still exact multiples of 1/255 in [0, 1] (the uint8 cache contract)
    assert torch.equal((b.images * 255).round() / 255, b.images)
    assert b.images.min() >= 0 and b.images.max() <= 1


def test_shift_zero_keeps_the_canvases_and_stream():
    digits, labels = _bank()
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = data.CanvasGenerator(digits, labels, data.get_spec("mnist28")).sample(8, g1)
    b = data.CanvasGenerator(digits, labels, data.get_spec("mnist28", shift=0)).sample(8, g2)
    assert torch.equal(a.images, b.images) and torch.equal(g1.get_state(), g2.get_state())


@pytest.mark.parametrize("bad", [-1, 28, 1.5, True])
def test_bad_shift_is_refused_with_the_value(bad):
    with pytest.raises(ValueError, match="shift"):
        data.get_spec("mnist28", shift=bad)


def test_config_refuses_bad_or_meaningless_shifts():
    with pytest.raises(ValueError, match="--augment-shift=-2"):
        TrainConfig(augment_shift=-2).validate()
    with pytest.raises(ValueError, match="--augment-shift=2 is for the image agents"):
        TrainConfig(agent="hard-read", env="CopyMemory-v0", augment_shift=2).validate()
    TrainConfig(augment_shift=2).validate()


def test_only_training_canvases_are_shifted(data_root):
    from hardattn.agents import soft_common as sc
    from hardattn.agents.ram_common import make_env

    cfg = TrainConfig(env="GlimpseMNIST-v0", device="cpu", augment_shift=2).validate()
    dev = torch.device("cpu")
    assert make_env(cfg, dev, 4).unwrapped._task.canvas.spec.shift == 2
    assert make_env(cfg, dev, 4, split="val").unwrapped._task.canvas.spec.shift == 0
    assert sc.task_config(cfg).spec.shift == 2
    plain = dataclasses.replace(cfg, augment_shift=0)
    assert make_env(plain, dev, 4).unwrapped._task.canvas.spec.shift == 0


@pytest.mark.parametrize("agent", ["reinforce", "soft-glimpse"])
def test_a_shifted_run_trains_and_differs_from_an_unshifted_one(data_root, tmp_path, agent):
    from hardattn.agents.run import train

    kw = dict(agent=agent, env="GlimpseMNIST-v0", device="cpu", batch_size=16,
              total_images=16 * 4, eval_every=4, eval_size=100, test_size=100,
              eval_batch=100, log_every=1, image_every=100, grad_stats_every=0,
              checkpoint_every=4, progress=False, core_hidden=32, glimpse_hidden=32,
              what_hidden=16, where_hidden=16, fc_hidden=32, feature_channels=8, threads=1)
    kw = used_by(agent, kw)
    a = train(TrainConfig(**kw, augment_shift=2, run_dir=str(tmp_path / "a")))
    b = train(TrainConfig(**kw, run_dir=str(tmp_path / "b")))
    assert a["test_size"] == b["test_size"] == 100
    from hardattn import checkpoint as ckpt

    wa = ckpt.load_latest(tmp_path / "a")[0]["model"]
    wb = ckpt.load_latest(tmp_path / "b")[0]["model"]
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)


def test_a_shift_as_wide_as_the_canvas_fails_before_the_run_folder(data_root, tmp_path):
    from hardattn.agents.run import train

    cfg = TrainConfig(env="GlimpseMNIST-v0", device="cpu", augment_shift=30, total_images=16,
                      batch_size=16, progress=False, run_dir=str(tmp_path / "run"))
    with pytest.raises(ValueError, match=r"--augment-shift=30 .*28 pixels"):
        train(cfg)
    assert not (tmp_path / "run").exists()
