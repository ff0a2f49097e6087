"""The four implementations that ``hardattn bench`` times against each other.

- ``EndToEnd``: the REINFORCE agent's update as ``hardattn train`` runs it.
- ``Floor``: the same network's forward + backward + Adam on glimpses extracted beforehand.
- ``Roofline``: only the matrix multiplies of the same layer shapes.
- ``Naive``: a typical research script (``NaiveRAM``, a per-sample retina loop, a host sync
  every step).

``bench.py`` builds them per preset, interleaves their repeats and writes the results.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from hardattn import baselines as bl
from hardattn.config import TrainConfig

from .ram_common import (
    lr_at,
    make_env,
    make_model,
    make_optimizer,
    rollout,
    safe_step,
    std_at,
)
from .reinforce import loss_terms


def sync_device(dev: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that a timer stops after it."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class EndToEnd:
    """The agent's update, as ``agents.reinforce.train`` runs it (without the bookkeeping)."""

    def __init__(self, cfg: TrainConfig, dev: torch.device) -> None:
        torch.manual_seed(cfg.seed)
        self.cfg, self.dev = cfg, dev
        self.env = make_env(cfg, dev, cfg.batch_size)
        self.model = make_model(cfg, self.env).to(dev)
        self.opt = make_optimizer(self.model, cfg)
        self.baselines = {"ema": bl.EMABaseline(cfg.ema_decay),
                          "optimal": bl.RunningOptimalBaseline(cfg.ema_decay)}
        self.noise = torch.Generator(device=dev).manual_seed(cfg.seed + 1)
        self.env.reset(seed=cfg.seed)
        # As agents.reinforce.train: S paths of each canvas side by side (leave-one-out groups).
        self.options = {"repeat": cfg.samples_per_image} if cfg.samples_per_image > 1 else None
        self.update = 0

    def step(self, phases: dict | None = None) -> None:
        cfg = self.cfg
        t0 = time.perf_counter()
        for group in self.opt.param_groups:
            group["lr"] = lr_at(cfg, self.update)
        ro = rollout(self.model, self.env, std_at(cfg, self.update), self.noise,
                     options=self.options)
        losses = loss_terms(cfg, ro, self.baselines)
        if phases is not None:
            sync_device(self.dev)  # CUDA: the queued forward belongs to this phase
        t1 = time.perf_counter()
        safe_step(losses, self.model, self.opt, cfg)
        self.update += 1
        if phases is not None:
            sync_device(self.dev)
            phases["rollout+loss"] = phases.get("rollout+loss", 0.0) + t1 - t0
            phases["backward+clip+adam"] = phases.get("backward+clip+adam", 0.0) + \
                time.perf_counter() - t1


class Floor:
    """Forward + backward + Adam of the same network on pre-extracted glimpses."""

    def __init__(self, cfg: TrainConfig, dev: torch.device, e2e: EndToEnd) -> None:
        self.cfg, self.dev = cfg, dev
        torch.manual_seed(cfg.seed)
        self.model = make_model(cfg, e2e.env).to(dev)
        self.opt = make_optimizer(self.model, cfg)
        env, T, B = e2e.env, e2e.env.cfg.n_glimpses, cfg.batch_size
        obs, _ = env.reset(seed=cfg.seed + 5)
        g, locs = [], []
        gen = torch.Generator(device=dev).manual_seed(cfg.seed + 6)
        no_class = torch.zeros(B, dtype=torch.long, device=dev)
        for _ in range(T):
            g.append(obs["glimpse"])
            locs.append(obs["loc"])
            obs, *_ = env.step((torch.rand(B, 2, generator=gen, device=dev) * 2 - 1, no_class))
        self.glimpses, self.locs = torch.stack(g), torch.stack(locs)  # (T, B, ...), (T, B, 2)
        self.labels = torch.randint(10, (B,), generator=gen, device=dev)
        self.noise = torch.randn(T - 1, B, 2, generator=gen, device=dev)

    def step(self) -> None:
        model, cfg = self.model, self.cfg
        T, B = self.glimpses.shape[:2]
        state = model.initial_state(B, self.dev)
        std = model.location.std(cfg.std)
        logps, values = [], []
        for t in range(T):
            state, h = model.step(self.glimpses[t], self.locs[t], state)
            values.append(model.value(h))
            if t < T - 1:
                mean = model.location_mean(h)
                loc = (mean + std * self.noise[t]).detach()
                logps.append(_log_prob(loc, mean, std))
        logits = model.classify(h)
        reward = (logits.argmax(1) == self.labels).float()
        v = torch.stack(values[:-1])
        adv = (reward[None] - v).detach()
        loss = F.cross_entropy(logits, self.labels) - (torch.stack(logps) * adv).sum(0).mean() \
            + F.mse_loss(v, reward[None].expand_as(v))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        self.opt.step()


def _log_prob(x, mean, std):
    z = (x - mean) / std
    return (-0.5 * z * z - torch.log(std)).sum(-1)


# Linears whose input carries a gradient (the others read data or the detached core state).
NEEDS_INPUT_GRAD = ("glimpse_net.combine", "core.cell", "classifier")
# Linears an update runs other than once per glimpse step: no move after the last glimpse,
# one classification at the end.
USES_PER_UPDATE = {"location.fc": lambda T: T - 1, "classifier": lambda T: 1}


def layer_shapes(model: torch.nn.Module, T: int) -> list[tuple[int, int, bool, int]]:
    """``(in, out, input needs a gradient, uses per update)`` of every Linear of the RAM, for
    episodes of ``T`` glimpses."""
    return [(m.in_features, m.out_features, name in NEEDS_INPUT_GRAD,
             USES_PER_UPDATE.get(name, lambda T: T)(T))
            for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


class Roofline:
    """Only the GEMMs one update needs: per use of a Linear ``X W^T`` and ``dY^T X``, plus
    ``dY W`` where the layer's input needs a gradient (not for the 'what'/'where' layers,
    whose inputs are data, nor for the location/baseline heads on the detached state), in
    the precision of the update (``cfg.precision``)."""

    def __init__(self, cfg: TrainConfig, dev: torch.device, e2e: EndToEnd) -> None:
        B, T = cfg.batch_size, e2e.env.cfg.n_glimpses
        self.T = T
        self.ops = []
        self.flops = 0
        # --precision bf16 runs these GEMMs in bfloat16 (autocast): so does its roofline.
        kw = {"device": dev, "dtype": torch.bfloat16 if cfg.precision == "bf16" else None}
        for i, o, dx, uses in layer_shapes(e2e.model, T):
            x, w, dy = torch.randn(B, i, **kw), torch.randn(o, i, **kw), torch.randn(B, o, **kw)
            self.ops.append((uses, x, w, dy, torch.empty(B, o, **kw),
                             torch.empty(B, i, **kw) if dx else None, torch.empty(o, i, **kw)))
            self.flops += 2 * (3 if dx else 2) * uses * B * i * o

    def step(self) -> None:
        for t in range(self.T):  # step by step, as the previous roofline (and the model) runs
            for uses, x, w, dy, y, dx, dw in self.ops:
                if t < uses:
                    torch.mm(x, w.t(), out=y)  # (B, o)
                    if dx is not None:
                        torch.mm(dy, w, out=dx)  # (B, i)
                    torch.mm(dy.t(), x, out=dw)  # (o, i)


class NaiveRAM(torch.nn.Module):
    """The RAM as research scripts write it: one ``nn.Linear`` per weight matrix of the paper.

    Same widths as ``hardattn.networks.RAM`` (and two more bias vectors); where that model
    runs one GEMM over ``[what, where]`` and one over ``[g, h_prev]``, this one runs two each:
    ``g = ReLU(W_what' what + W_where' where)``, ``h = ReLU(W_i g + W_h h_prev)``.
    """

    def __init__(self, n_in: int, cfg: TrainConfig) -> None:
        super().__init__()
        lin = torch.nn.Linear
        self.fc_what, self.fc_where = lin(n_in, cfg.what_hidden), lin(2, cfg.where_hidden)
        self.what_to_g = lin(cfg.what_hidden, cfg.glimpse_hidden)
        self.where_to_g = lin(cfg.where_hidden, cfg.glimpse_hidden)
        self.i2h = lin(cfg.glimpse_hidden, cfg.core_hidden)
        self.h2h = lin(cfg.core_hidden, cfg.core_hidden)
        self.fc_loc, self.classifier = lin(cfg.core_hidden, 2), lin(cfg.core_hidden, 10)
        self.fc_baseline = lin(cfg.core_hidden, 1)
        self.hidden = cfg.core_hidden

    def initial_state(self, batch: int, device: torch.device) -> torch.Tensor:
        return torch.zeros(batch, self.hidden, device=device)

    def step(self, patches: torch.Tensor, loc: torch.Tensor, h: torch.Tensor):
        what = F.relu(self.fc_what(patches.flatten(1)))  # (B, what_hidden)
        where = F.relu(self.fc_where(loc))  # (B, where_hidden)
        g = F.relu(self.what_to_g(what) + self.where_to_g(where))  # (B, glimpse_hidden)
        h = F.relu(self.i2h(g) + self.h2h(h))  # (B, core_hidden)
        return h, h

    def location_mean(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc_loc(h.detach()))  # (B, 2)

    def value(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc_baseline(h.detach()).squeeze(-1)  # (B,)


class Naive:
    """A typical research script: Python loop over samples for the retina, one Linear per
    weight matrix, sync every step."""

    def __init__(self, cfg: TrainConfig, dev: torch.device, e2e: EndToEnd) -> None:
        self.cfg, self.dev = cfg, dev
        torch.manual_seed(cfg.seed)
        g = e2e.env.cfg
        self.model = NaiveRAM(g.scales * g.patch * g.patch, cfg).to(dev)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.sampler = e2e.env.unwrapped._task.canvas
        self.gcfg = e2e.env.cfg
        self.gen = torch.Generator(device=dev).manual_seed(cfg.seed + 9)

    def retina(self, images: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        p, S, f = self.gcfg.patch, self.gcfg.scales, self.gcfg.scale_factor
        B, _, H, W = images.shape
        pad = p * f ** (S - 1)
        padded = F.pad(images, (pad, pad, pad, pad))
        out = []
        for b in range(B):  # one sample at a time
            x, y = float(loc[b, 0]), float(loc[b, 1])
            cx, cy = (x + 1) * W / 2, (y + 1) * H / 2
            scales = []
            for s in range(S):
                k = f ** s
                size = p * k
                x0 = max(-size, min(W, math.floor(cx - size / 2 + 0.5)))  # fully outside: 0s
                y0 = max(-size, min(H, math.floor(cy - size / 2 + 0.5)))
                crop = padded[b, :, y0 + pad:y0 + pad + size, x0 + pad:x0 + pad + size]
                scales.append(F.avg_pool2d(crop[None], k)[0] if k > 1 else crop)
            out.append(torch.stack(scales))
        return torch.stack(out)  # (B, S, C, p, p)

    def step(self) -> None:
        cfg, model = self.cfg, self.model
        batch = self.sampler.sample(cfg.batch_size, self.gen)
        images, labels = batch.images, batch.labels
        B, T = images.shape[0], self.gcfg.n_glimpses
        loc = torch.zeros(B, 2, device=self.dev)
        state = model.initial_state(B, self.dev)
        std = torch.full((2,), cfg.std, device=self.dev)
        logps, values = [], []
        for t in range(T):
            state, h = model.step(self.retina(images, loc), loc, state)
            values.append(model.value(h))
            if t < T - 1:
                mean = model.location_mean(h)
                new = (mean + std * torch.randn(B, 2, device=self.dev)).detach()
                logps.append(_log_prob(new, mean, std))
                loc = new.clamp(-1, 1)
                float(mean.sum().item())  # host sync every step
        logits = model.classifier(h)
        reward = (logits.argmax(1) == labels).float()
        v = torch.stack(values[:-1])
        adv = (reward[None] - v).detach()
        loss = F.cross_entropy(logits, labels) - (torch.stack(logps) * adv).sum(0).mean() \
            + F.mse_loss(v, reward[None].expand_as(v))
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        self.opt.step()
        self.last_loss = loss.item()  # the per-step logging of a typical script
