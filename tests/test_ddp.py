"""Data-parallel REINFORCE: 2 CPU processes (gloo, ``file://`` rendezvous, no fixed port).

- one update step on a fixed batch of canvases with fixed location noise: both ranks end with
  the weights of a single process that takes the step on the concatenated batch (the
  equality is tested at this level because in the full loop each rank draws its own
  canvases and noise);
- the full ``hardattn train`` loop on 2 ranks (weights checked identical across ranks at
  every checkpoint), rank 0 alone writing the run folder, and its checkpoint resuming in
  one process; a one-process checkpoint resuming on 2 ranks.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

from hardattn.config import TrainConfig

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="torch.distributed is not available")


def tiny(run_dir, **kw) -> TrainConfig:
    base = dict(agent="reinforce", env="GlimpseMNIST-v0", device="cpu", batch_size=8,
                total_images=8 * 4, eval_every=2, eval_size=50, test_size=50, eval_batch=50,
                log_every=1, image_every=100, grad_stats_every=0, checkpoint_every=2,
                progress=False, run_dir=str(run_dir), core_hidden=32, glimpse_hidden=32,
                what_hidden=16, where_hidden=16, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def _env_for(rank: int, world: int, init: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world), HARDATTN_DIST_INIT=init)
    torch.set_num_threads(1)


# ---------------------------------------------------------------- one step, fixed batch
B = 8  # per rank


def _setup_step(cfg: TrainConfig):
    from hardattn import baselines as bl
    from hardattn import data
    from hardattn.agents.ram_common import make_env, make_model

    torch.manual_seed(0)
    env = make_env(cfg, torch.device("cpu"), B)
    model = make_model(cfg, env)
    images, labels = data.fixed_set("mnist28", "train", n=2 * B)
    baselines = {"ema": bl.EMABaseline(cfg.ema_decay),
                 "optimal": bl.RunningOptimalBaseline(cfg.ema_decay)}
    return env, model, (images, labels), baselines


def _rank_rollout(model, env, canvases, r: int):
    from hardattn.agents.ram_common import rollout

    gen = torch.Generator().manual_seed(100 + r)  # this rank's fixed location noise
    sl = slice(r * B, (r + 1) * B)
    return rollout(model, env, 0.15, gen, options={"canvases": (canvases[0][sl],
                                                                canvases[1][sl])})


def _loss_fn(agent: str):
    """The agent's loss terms as ``f(cfg, rollout, baselines)``."""
    if agent == "actor-critic":
        from hardattn.agents.actor_critic import loss_terms

        return lambda cfg, ro, _baselines: loss_terms(cfg, ro)
    from hardattn.agents.reinforce import loss_terms

    return loss_terms


def _one_step_worker(rank: int, world: int, init: str, out: str, agent: str) -> None:
    _env_for(rank, world, init)
    from hardattn.agents import distributed
    from hardattn.agents.ram_common import safe_step

    loss_terms = _loss_fn(agent)
    cfg = tiny(out, agent=agent)
    distributed.setup(torch.device("cpu"))
    env, model, canvases, baselines = _setup_step(cfg)
    distributed.broadcast_model(model)
    distributed.average_gradients(model)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ro = _rank_rollout(model, env, canvases, rank)
    losses = distributed.agree_finite(loss_terms(cfg, ro, baselines))
    applied, _ = safe_step(losses, model, opt, cfg)
    assert applied
    torch.save(model.state_dict(), os.path.join(out, f"rank{rank}.pt"))
    distributed.cleanup()
    _exit_cleanly()


def _exit_cleanly() -> None:
    # gloo's background threads can abort ("terminate called without an active exception")
    # during interpreter teardown of a spawned worker, after its work is done and saved;
    # leave without that teardown so the exit code reflects the work (0 here).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _cat_rollouts(a, b):
    from hardattn.agents.ram_common import Rollout

    fields = {}
    for f in dataclasses.fields(Rollout):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name in ("std", "entropy"):
            fields[f.name] = x
        elif f.name in ("logits", "labels", "reward"):
            fields[f.name] = torch.cat([x, y], 0)
        else:  # time-major (T or T-1, B, ...)
            fields[f.name] = torch.cat([x, y], 1)
    return Rollout(**fields)


@pytest.mark.parametrize("agent", ["reinforce", "actor-critic"])
def test_one_step_on_two_ranks_equals_one_process_on_the_concatenated_batch(data_root,
                                                                           tmp_path, agent):
    from hardattn.agents.ram_common import safe_step

    loss_terms = _loss_fn(agent)
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_one_step_worker, args=(2, init, str(tmp_path), agent), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")

    cfg = tiny(tmp_path, agent=agent)
    env, model, canvases, baselines = _setup_step(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ro = _cat_rollouts(_rank_rollout(model, env, canvases, 0),
                       _rank_rollout(model, env, canvases, 1))
    applied, _ = safe_step(loss_terms(cfg, ro, baselines), model, opt, cfg)
    assert applied
    ref = model.state_dict()
    changed = 0
    for k in ref:
        assert torch.equal(r0[k], r1[k]), f"ranks differ in {k}"
        torch.testing.assert_close(r0[k], ref[k], rtol=1e-5, atol=1e-6, msg=k)
        changed += not torch.equal(ref[k], before[k])
    assert changed >= 8  # the step did move the weights


# ---------------------------------------------------------------- the full training loop
def _train_worker(rank: int, world: int, init: str, cfg: TrainConfig) -> None:
    _env_for(rank, world, init)
    from hardattn.agents.run import train

    train(cfg)  # raises in assert_in_sync if the ranks' weights ever differ at a checkpoint
    _exit_cleanly()  # only reached when training succeeded


def _spawn_train(tmp_path, name: str, cfg: TrainConfig) -> None:
    init = f"file://{tmp_path / ('rendezvous_' + name)}"
    mp.spawn(_train_worker, args=(2, init, cfg), nprocs=2, join=True)


def test_two_rank_training_and_resume_across_world_sizes(data_root, tmp_path):
    from hardattn import checkpoint as ckpt
    from hardattn.agents.run import train

    run = tmp_path / "ddp"
    _spawn_train(tmp_path, "a", tiny(run))
    assert (run / "report.json").exists() and (run / "checkpoints" / "best.pt").exists()
    assert sorted(p.name for p in (run / "checkpoints").glob("ckpt_*.pt")) == \
        ["ckpt_00000001.pt", "ckpt_00000003.pt"]
    ddp_final, _ = ckpt.load_latest(run)

    # 2 ranks -> 1 process: drop the last checkpoint and resume from update 1.
    (run / "checkpoints" / "ckpt_00000003.pt").unlink()
    (run / "report.json").unlink()
    train(TrainConfig(resume=str(run), progress=False))
    resumed, _ = ckpt.load_latest(run)
    assert resumed["update"] == 3
    assert any(not torch.equal(resumed["model"][k], ddp_final["model"][k])
               for k in resumed["model"])  # one process continued on its own batches

    # 1 process -> 2 ranks.
    single = tmp_path / "single"
    train(tiny(single))
    (single / "checkpoints" / "ckpt_00000003.pt").unlink()
    _spawn_train(tmp_path, "b", TrainConfig(resume=str(single), progress=False))
    state, _ = ckpt.load_latest(single)
    assert state["update"] == 3 and (single / "report.json").exists()


# ---------------------------------------------------------------- a signal on one rank
def _signal_worker(rank: int, world: int, init: str, cfg: TrainConfig, out: str) -> None:
    _env_for(rank, world, init)
    import signal

    from hardattn.agents import training
    from hardattn.agents.run import TrainingInterrupted, train

    if rank == 1:  # only rank 1 is told to stop, after its update 1 (as a SIGTERM would)
        real = training.Trainer.after_update

        def after_update(self, update, *args, **kwargs):
            real(self, update, *args, **kwargs)
            if update == 1:
                self.run.stop_signal = signal.SIGTERM

        training.Trainer.after_update = after_update
    try:
        train(cfg)
        result = "finished"
    except TrainingInterrupted as exc:
        result = f"interrupted {exc}"
    with open(os.path.join(out, f"rank{rank}.txt"), "w") as f:
        f.write(result)
    _exit_cleanly()


def test_a_signal_on_one_rank_stops_every_rank_after_the_same_update(data_root, tmp_path):
    # Alone, the signalled rank would leave the loop while the others wait in the gradient
    # all-reduce of the next update, and rank 0 would never write the checkpoint.
    run = tmp_path / "ddp"
    cfg = tiny(run, total_images=8 * 6, checkpoint_every=100)
    ctx = mp.start_processes(_signal_worker, nprocs=2, join=False, start_method="spawn",
                             args=(2, f"file://{tmp_path / 'rendezvous'}", cfg, str(tmp_path)))
    try:
        deadline = time.monotonic() + 120
        while not ctx.join(timeout=5):
            assert time.monotonic() < deadline, "a rank is stuck: the ranks did not agree to stop"
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}.txt").read_text().startswith("interrupted"), rank
    assert "after update 1" in (tmp_path / "rank0.txt").read_text()
    assert sorted(p.name for p in (run / "checkpoints").glob("ckpt_*.pt")) == \
        ["ckpt_00000001.pt"]  # rank 0 saved where they stopped
    assert not (run / "report.json").exists()


def test_each_rank_draws_its_own_canvases_and_noise(monkeypatch):
    # Same seed on every rank would train N copies of one batch: the effective batch would not
    # grow with the ranks. Rank 0 keeps the single-process seed.
    from hardattn.agents import distributed

    seeds = {}
    for r in range(4):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        seeds[r] = distributed.rank_seed(7)
    assert seeds[0] == 7 and len(set(seeds.values())) == 4
    gens = [torch.Generator().manual_seed(s) for s in seeds.values()]
    draws = [torch.randint(50_000, (64,), generator=g) for g in gens]
    assert all(not torch.equal(draws[0], d) for d in draws[1:])
