"""Data-parallel training across processes (``torchrun --nproc_per_node=N -m hardattn train``).

Every rank runs the whole agent on its own batch of ``--batch-size`` canvases; gradients are
averaged across ranks inside ``backward`` (one all-reduce per parameter as its gradient is
accumulated: the reduction DistributedDataParallel performs, done with hooks because the
RAM's rollout calls ``model.step`` many times rather than one ``forward``), so every rank
applies the same update and the weights stay identical.

Rules:
- agents: ``reinforce`` and ``actor-critic`` (``agents.run.DATA_PARALLEL_AGENTS``). Statistics
  taken over a batch (advantage normalisation, the EMA and variance-optimal baselines) are
  per rank, i.e. over that rank's ``--batch-size`` canvases.
- effective batch = ``N x --batch-size`` canvases per update; the averaged gradient is the
  gradient of the mean loss over that batch, so the same ``--lr`` gives the step of a single
  process on the concatenated batch (no learning-rate scaling is applied; scale ``--lr``
  yourself if you want the linear rule). The budget (``--epochs``/``--total-images``) counts
  updates as in one process, so N ranks see N times the canvases: divide it by N to keep
  the number of canvases.
- seeds: initial weights from ``--seed`` on every rank (and broadcast from rank 0); the env and
  the location noise of rank r use ``seed + r * RANK_SEED_STRIDE``, so rank 0 is the
  single-process run.
- rank 0 alone writes the run folder: config, TensorBoard logs, checkpoints, report. The
  checkpoint holds rank 0's state; resuming it with a different N continues rank 0 exactly
  and reseeds the other ranks from ``(seed, rank, update)``.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

RANK_SEED_STRIDE = 1_000_003


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def setup(device: torch.device | None = None) -> bool:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); True when distributed.

    The rendezvous is ``env://`` (torchrun's) unless ``HARDATTN_DIST_INIT`` names another
    (the tests use ``file://``). gloo on CPU, nccl on CUDA.
    """
    if world_size() > 1:
        return True
    n = int(os.environ.get("WORLD_SIZE", "1"))
    if n <= 1:
        return False
    backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=os.environ.get("HARDATTN_DIST_INIT", "env://"),
                            rank=int(os.environ["RANK"]), world_size=n)
    return True


def local_device(device: torch.device) -> torch.device:
    """One GPU per rank (``LOCAL_RANK``) when training on CUDA."""
    if device.type == "cuda" and world_size() > 1 and device.index is None:
        idx = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(idx)
        return torch.device("cuda", idx)
    return device


def local_threads(cores: int) -> int:
    """CPU threads per rank: the cores shared among the ranks of this node."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    return max(1, cores // max(1, local))


def rank_seed(seed: int) -> int:
    """The seed of this rank's env and location noise (rank 0: ``seed`` itself)."""
    return seed + rank() * RANK_SEED_STRIDE


def broadcast_model(model: torch.nn.Module) -> None:
    """Rank 0's weights on every rank."""
    if world_size() > 1:
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, 0)


def average_gradients(model: torch.nn.Module) -> list:
    """Average every gradient across ranks as backward accumulates it; returns the handles.

    Every rank runs the same graph, so the hooks fire in the same order on every rank.
    """
    if world_size() <= 1:
        return []
    n = float(world_size())

    def hook(p: torch.Tensor) -> None:
        dist.all_reduce(p.grad)
        p.grad.div_(n)

    return [p.register_post_accumulate_grad_hook(hook) for p in model.parameters()
            if p.requires_grad]


def agree_finite(losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """If any rank's losses are not finite, make them non-finite on every rank, so that all
    ranks skip (or stop) together rather than some waiting in the gradient all-reduce."""
    if world_size() <= 1:
        return losses
    bad = torch.tensor([0.0 if all(bool(torch.isfinite(v).all()) for v in losses.values())
                        else 1.0])
    dev = next(iter(losses.values())).device
    bad = bad.to(dev)
    dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    if float(bad) > 0 and bool(torch.isfinite(losses["loss"]).all()):
        losses = {**losses, "loss": losses["loss"] * float("nan")}
    return losses


def agree_stop(signum: int | None, device: torch.device) -> int | None:
    """The stop signal of any rank (the largest number), on every rank, or None.

    Called after every update: a rank that left the loop alone would leave the others waiting
    in the next gradient all-reduce, and rank 0 might never write the checkpoint.
    """
    if world_size() <= 1:
        return signum
    flag = torch.tensor([float(signum or 0)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None


def assert_in_sync(model: torch.nn.Module) -> None:
    """Raise if the ranks' weights differ (checked at every checkpoint)."""
    if world_size() <= 1:
        return
    flat = torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])
    mine = torch.stack([flat.sum(), (flat * torch.arange(1, flat.numel() + 1,
                                                          dtype=flat.dtype,
                                                          device=flat.device)).sum()])
    lo, hi = mine.clone(), mine.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    if not torch.equal(lo, hi):
        raise RuntimeError("data-parallel ranks hold different weights")


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank."""
    if world_size() <= 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, 0)
    return box[0]


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
