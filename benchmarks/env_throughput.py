"""Env throughput on cluttered60 (8 glimpses of 3 scales of 12x12): steps per second of

- ``single``: one ``GlimpseEnv`` (``gym.make(id).unwrapped``), pre-sampled actions, resets
  included in the timing;
- ``sync``: ``gymnasium.vector.SyncVectorEnv`` of N ``gym.make(id)`` envs (Gymnasium's
  reference way to batch a single env), pre-sampled numpy actions;
- ``batched``: ``gym.make_vec(id, num_envs=N)``, our ``GlimpseVecEnv``, pre-made torch actions;

and the ``ratio`` batched / sync at the same N, from timings interleaved repeat by repeat so
that both see the same load on a shared machine. Vector timings include the autoreset steps
(the step after termination, which resets the canvases): one step counts N env steps.

On CUDA (when available) a second file gives the batched env's steps/s at large N and
``glimpse_steps_per_s``: glimpses per second of the sensor alone, ``read_pyramid`` (what a
step costs) and ``glimpse`` (pyramid build + read, what a reset and a step cost).

Usage: ``python benchmarks/env_throughput.py [--quick] [--out-dir DIR]``; writes
``benchmarks/results/env_throughput_cpu.json`` (and ``env_throughput_cuda.json``).
"""

from __future__ import annotations

import argparse
import functools
import gc
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import hardattn.envs  # noqa: F401  (registers the ids)
from hardattn import sensors
from hardattn.benchmarking import result, usable_cores, write_results

ENV_ID = "hardattn/GlimpseCluttered60-v0"
PRESET = "cluttered60"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_single(steps: int, seed: int = 0) -> float:
    """Steps/s of one ``GlimpseEnv`` over ``steps`` steps, resets included."""
    env = gym.make(ENV_ID).unwrapped
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(steps)]
    env.reset(seed=seed)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, _, _ = env.step(action)
        if terminated:
            env.reset()
    return steps / (time.perf_counter() - start)


def make_sync(num_envs: int) -> gym.vector.SyncVectorEnv:
    return gym.vector.SyncVectorEnv([functools.partial(gym.make, ENV_ID)] * num_envs)


def time_vector(env: gym.vector.VectorEnv, actions: list[Any], seed: int,
                device: torch.device | None = None) -> float:
    """Env steps/s of a vector env stepping through ``actions`` (one batch per step)."""
    device = device or torch.device("cpu")
    env.reset(seed=seed)
    _sync(device)
    start = time.perf_counter()
    for action in actions:
        env.step(action)
    _sync(device)
    return env.num_envs * len(actions) / (time.perf_counter() - start)


def sync_actions(env: gym.vector.VectorEnv, steps: int, seed: int) -> list[Any]:
    env.action_space.seed(seed)
    return [env.action_space.sample() for _ in range(steps)]


def batched_actions(num_envs: int, steps: int, seed: int,
                    device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pre-made ``(loc (N, 2), cls (N,))`` tuple actions on ``device``."""
    g = torch.Generator().manual_seed(seed)
    return [((torch.rand(num_envs, 2, generator=g) * 2 - 1).to(device),
             torch.randint(0, 10, (num_envs,), generator=g).to(device)) for _ in range(steps)]


def cpu_results(quick: bool) -> list[dict[str, Any]]:
    """Single, sync and batched steps/s on CPU and the batched/sync ratios.

    Args:
        quick: tiny sizes and few repeats (a smoke test of the script, not a measurement).
    """
    cpu = torch.device("cpu")
    T = gym.make(ENV_ID).unwrapped.cfg.n_glimpses
    period = T + 1  # one episode and its autoreset step
    sizes = [16, 64] if quick else [256, 4096]
    repeats = 2 if quick else 5
    common = {"preset": PRESET, "n_glimpses": T, "patch": 12, "scales": 3,
              "torch_threads": torch.get_num_threads()}
    out = []

    single_steps = 500 if quick else 8 * 1000
    single = [time_single(single_steps, seed=r) for r in range(repeats)]
    out.append(result("steps_per_s", single, "steps/s", True,
                      {"impl": "single", "num_envs": 1, "preset": PRESET},
                      {**common, "steps": single_steps, "resets_included": True},
                      aggregate="median"))

    for n in sizes:
        # Sync at N=4096 takes about a second a step: time 3 episodes, 3 repeats.
        big = n >= 4096
        sync_steps = period * (3 if big else 5)
        batched_steps = period * (5 if big else 20)
        sync_repeats = 3 if big and not quick else repeats
        start = time.perf_counter()
        sync_env = make_sync(n)
        construct_s = time.perf_counter() - start
        batched_env = gym.make_vec(ENV_ID, num_envs=n)
        s_actions = sync_actions(sync_env, sync_steps, seed=n)
        b_actions = batched_actions(n, batched_steps, seed=n, device=cpu)
        sync_sps, batched_sps, ratios = [], [], []
        for r in range(max(sync_repeats, repeats)):
            # Interleaved: each ratio compares timings taken moments apart.
            b = time_vector(batched_env, b_actions, seed=r)
            batched_sps.append(b)
            if r < sync_repeats:
                s = time_vector(sync_env, s_actions, seed=r)
                sync_sps.append(s)
                ratios.append(b / s)
        sync_env.close()
        out.append(result("steps_per_s", sync_sps, "steps/s", True,
                          {"impl": "sync", "num_envs": n, "preset": PRESET},
                          {**common, "steps": sync_steps, "construct_s": round(construct_s, 2)},
                          aggregate="median"))
        out.append(result("steps_per_s", batched_sps, "steps/s", True,
                          {"impl": "batched", "num_envs": n, "preset": PRESET},
                          {**common, "steps": batched_steps, "device": "cpu"},
                          aggregate="median"))
        out.append(result("ratio", ratios, "x", True,
                          {"impl": "batched", "num_envs": n, "of": "sync", "preset": PRESET},
                          {**common, "sync_steps": sync_steps, "batched_steps": batched_steps},
                          aggregate="median"))
        print(f"N={n}: sync {np.median(sync_sps):,.0f} steps/s, batched "
              f"{np.median(batched_sps):,.0f} steps/s, ratio {np.median(ratios):.1f}x "
              f"(sync construction {construct_s:.1f} s)", flush=True)
    return out


def _time_fn(fn: Callable[[], Any], reps: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` (after one warm-up call)."""
    fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / reps


def accelerator_results(device: torch.device, sizes: list[int],
                        repeats: int = 5) -> list[dict[str, Any]]:
    """Batched env steps/s and sensor glimpses/s at large N on ``device``.

    Args:
        device: where the env and the sensor run (CUDA in ``main``; CPU works for a check).
        sizes: the numbers of envs (= images glimpsed per call).
        repeats: timings per figure; the median is quoted.
    """
    env0 = gym.make(ENV_ID).unwrapped
    cfg, T = env0.cfg, env0.cfg.n_glimpses
    common = {"preset": PRESET, "n_glimpses": T, "patch": cfg.patch, "scales": cfg.scales}
    out = []
    for n in sizes:
        env = gym.make_vec(ENV_ID, num_envs=n, device=device)
        steps = (T + 1) * 3
        actions = batched_actions(n, steps, seed=n, device=device)
        time_vector(env, actions[: T + 1], seed=0, device=device)  # warm-up (kernels, caches)
        sps = [time_vector(env, actions, seed=r, device=device) for r in range(repeats)]
        out.append(result("steps_per_s", sps, "steps/s", True,
                          {"impl": "batched", "num_envs": n, "preset": PRESET},
                          {**common, "steps": steps, "device": str(device)}, aggregate="median"))
        del env, actions
        gc.collect()  # the env's pyramid (about 13 GB at N=262144) before the sensor's own

        g = torch.Generator().manual_seed(n)
        images = (torch.randint(0, 256, (n, 1, 60, 60), generator=g).float() / 255).to(device)
        loc = (torch.rand(n, 2, generator=g) * 2 - 1).to(device)
        # The full glimpse (build + read) first, so that its temporaries are freed before the
        # pyramid kept for the reads is built.
        full_fn = functools.partial(sensors.glimpse, images, loc, cfg.patch, cfg.scales,
                                    cfg.scale_factor)
        full = [n / _time_fn(full_fn, 3, device) for _ in range(repeats)]
        del full_fn
        pyr = sensors.build_pyramid(images, cfg.patch, cfg.scales, cfg.scale_factor)
        read_fn = functools.partial(sensors.read_pyramid, pyr, loc)
        read = [n / _time_fn(read_fn, 10, device) for _ in range(repeats)]
        for impl, vals in (("read_pyramid", read), ("glimpse", full)):
            out.append(result("glimpse_steps_per_s", vals, "glimpses/s", True,
                              {"impl": impl, "num_envs": n, "preset": PRESET},
                              {**common, "device": str(device)}, aggregate="median"))
        print(f"{device} N={n}: batched {np.median(sps):,.0f} steps/s, read_pyramid "
              f"{np.median(read):,.0f} glimpses/s, glimpse {np.median(full):,.0f} glimpses/s",
              flush=True)
        del read_fn, pyr, images, loc
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test")
    parser.add_argument("--out-dir", default=None, help="default: benchmarks/results")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: the available cores; 1 on a loaded machine)")
    args = parser.parse_args()
    cores = usable_cores()
    torch.set_num_threads(args.threads or cores)

    start = time.perf_counter()
    results = cpu_results(args.quick)
    path = write_results("env_throughput_cpu", results, time.perf_counter() - start, "cpu",
                         out_dir=args.out_dir)
    print(f"wrote {path}")
    for row in results:
        print(f"  {row['metric']:>12} {row['labels']}: {row['value']:,.1f}")

    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        start = time.perf_counter()
        results = []
        for n in [4096] if args.quick else [65536, 262144]:
            try:
                results += accelerator_results(cuda, [n])
            except torch.cuda.OutOfMemoryError as exc:  # a smaller GPU: keep the other sizes
                print(f"N={n} skipped: {exc}".splitlines()[0])
                gc.collect()
                torch.cuda.empty_cache()
        path = write_results("env_throughput_cuda", results, time.perf_counter() - start,
                             cuda, out_dir=args.out_dir)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
