"""The recurrent attention model (RAM, Mnih et al. 2014): glimpse network, core, heads.

One step of the model, for a batch of B glimpses::

    patches (B, S, C, p, p), loc (B, 2)
      -> GlimpseNetwork: what = ReLU(W_what patches) (B, 128); where = ReLU(W_where loc) (B, 128)
                         g = ReLU(W_g [what, where]) (B, 256)
      -> Core (ReLU RNN / LSTM / GRU): h = core(g, h_prev) (B, 256)
      -> LocationHead: mean = tanh(W_l h.detach()) (B, 2), Gaussian with std fixed/learned
      -> ClassifierHead: logits = W_c h (B, 10)
      -> BaselineHead: b = W_b h.detach() (B,)

With ``compute_dtype=torch.bfloat16`` (``--precision bf16``) the matrix multiplies of every
step and head run in autocast and the heads return float32, so sampling, log-probabilities and
losses stay float32; the weights and Adam's state are float32 throughout.

The location and baseline heads read the *detached* core state: in the hybrid RAM loss the
classifier's cross-entropy trains glimpse network and core, REINFORCE trains only the location
head, and the baseline regression trains only the baseline head (tested as gradient isolation).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

CORES = ("rnn", "lstm", "gru")


@dataclass(frozen=True)
class RAMSpec:
    """Sizes of a RAM network (the paper's defaults)."""

    scales: int
    """Scales per glimpse."""
    patch: int
    """Side of each glimpse patch."""
    channels: int = 1
    """Image channels."""
    n_classes: int = 10
    """Classes of the classifier head."""
    what_hidden: int = 128
    """Width of the 'what' pathway (patches -> features)."""
    where_hidden: int = 128
    """Width of the 'where' pathway (location -> features)."""
    glimpse_hidden: int = 256
    """Width of the combined glimpse feature g."""
    core_hidden: int = 256
    """Width of the core state h."""
    core: str = "rnn"
    """Core cell: "rnn" (ReLU RNN, the paper's), "lstm" or "gru"."""

    def validate(self) -> RAMSpec:
        for name in ("scales", "patch", "channels", "n_classes", "what_hidden", "where_hidden",
                     "glimpse_hidden", "core_hidden"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive integer")
        if self.core not in CORES:
            raise ValueError(f"core={self.core!r} is not one of {CORES}")
        return self


class GlimpseNetwork(nn.Module):
    """Patches and their location to one glimpse feature ``g`` (B, glimpse_hidden)."""

    def __init__(self, spec: RAMSpec) -> None:
        super().__init__()
        n_in = spec.scales * spec.channels * spec.patch * spec.patch
        self.what = nn.Linear(n_in, spec.what_hidden)
        self.where = nn.Linear(2, spec.where_hidden)
        # One GEMM over [what, where] is the paper's W1 h_what + W2 h_where, fused.
        self.combine = nn.Linear(spec.what_hidden + spec.where_hidden, spec.glimpse_hidden)

    def forward(self, patches: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        x = patches.flatten(1)  # (B, S*C*p*p)
        what = F.relu(self.what(x))  # (B, what_hidden)
        where = F.relu(self.where(loc))  # (B, where_hidden)
        return F.relu(self.combine(torch.cat([what, where], dim=1)))  # (B, glimpse_hidden)


class Core(nn.Module):
    """The recurrent core. State is a tensor (rnn, gru) or an (h, c) pair (lstm)."""

    def __init__(self, spec: RAMSpec) -> None:
        super().__init__()
        self.kind, self.hidden = spec.core, spec.core_hidden
        if spec.core == "rnn":
            # h = ReLU(W [g, h_prev] + b): input and recurrent weights in one GEMM.
            self.cell = nn.Linear(spec.glimpse_hidden + spec.core_hidden, spec.core_hidden)
        elif spec.core == "lstm":
            self.cell = nn.LSTMCell(spec.glimpse_hidden, spec.core_hidden)
        else:
            self.cell = nn.GRUCell(spec.glimpse_hidden, spec.core_hidden)

    def initial_state(self, batch: int, device: torch.device, dtype=torch.float32):
        h = torch.zeros(batch, self.hidden, device=device, dtype=dtype)
        return (h, torch.zeros_like(h)) if self.kind == "lstm" else h

    @staticmethod
    def output(state) -> torch.Tensor:
        """The features the heads read: h (B, core_hidden)."""
        return state[0] if isinstance(state, tuple) else state

    def forward(self, g: torch.Tensor, state):
        if self.kind == "rnn":
            return F.relu(self.cell(torch.cat([g, state], dim=1)))  # (B, core_hidden)
        return self.cell(g, state)


class LocationHead(nn.Module):
    """Gaussian location policy: mean ``tanh(W h)``; std fixed/scheduled (given) or learned.

    The log-probability is always that of the location actually sampled, before the
    environment clamps it to ``[-1, 1]``.
    """

    def __init__(self, hidden: int, std: float, learn_std: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(hidden, 2)
        self.learn_std = learn_std
        self.log_std = nn.Parameter(torch.full((2,), math.log(std)), requires_grad=learn_std)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(h))  # (B, 2)

    def std(self, override: float | None = None) -> torch.Tensor:
        """The current std (B-independent, (2,)): learned, or ``override`` for a schedule."""
        if override is not None and not self.learn_std:
            return torch.full_like(self.log_std, override)
        return self.log_std.exp()


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, std) summed over the last dim: (..., 2) -> (...)."""
    z = (x - mean) / std
    return (-0.5 * z * z - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_entropy(std: torch.Tensor) -> torch.Tensor:
    """Entropy of a diagonal Gaussian with ``std`` (..., 2), summed over the last dim."""
    return (0.5 + 0.5 * math.log(2 * math.pi) + torch.log(std)).sum(-1)


class RAM(nn.Module):
    """The recurrent attention model: glimpse network, core, and the three heads.

    Args:
        spec: sizes (``RAMSpec``).
        std: location std (initial value when learned).
        learn_std: make the std a parameter trained by REINFORCE.
    """

    def __init__(self, spec: RAMSpec, std: float = 0.1, learn_std: bool = False,
                 compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.spec = spec.validate()
        # bfloat16: the matrix multiplies of every step and head run in autocast; the heads
        # hand float32 back, so sampling, log-probs and losses never see bfloat16.
        self.compute_dtype = compute_dtype
        self.glimpse_net = GlimpseNetwork(spec)
        self.core = Core(spec)
        self.location = LocationHead(spec.core_hidden, std, learn_std)
        self.classifier = nn.Linear(spec.core_hidden, spec.n_classes)
        self.baseline = nn.Linear(spec.core_hidden, 1)

    def initial_state(self, batch: int, device: torch.device):
        return self.core.initial_state(batch, device)

    def _autocast(self, x: torch.Tensor):
        # fp32: no context at all. A disabled autocast would switch off one the caller set,
        # and costs four context switches per glimpse step.
        if self.compute_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(x.device.type, dtype=self.compute_dtype)

    def step(self, patches: torch.Tensor, loc: torch.Tensor, state):
        """One glimpse: returns the new core state and its output ``h`` (B, core_hidden)."""
        with self._autocast(patches):
            state = self.core(self.glimpse_net(patches, loc), state)
        return state, Core.output(state)

    def location_mean(self, h: torch.Tensor) -> torch.Tensor:
        # Detached: REINFORCE trains only the location head (the hybrid RAM loss).
        with self._autocast(h):
            return self.location(h.detach()).float()  # (B, 2)

    def value(self, h: torch.Tensor) -> torch.Tensor:
        # Detached: the baseline never shapes the features it baselines.
        with self._autocast(h):
            return self.baseline(h.detach()).squeeze(-1).float()  # (B,)

    def classify(self, h: torch.Tensor) -> torch.Tensor:
        """Class scores ``(B, n_classes)``, float32."""
        with self._autocast(h):
            return self.classifier(h).float()

    def head_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Parameter groups by role, for gradient-isolation checks and diagnostics."""
        return {
            "glimpse_net": list(self.glimpse_net.parameters()),
            "core": list(self.core.parameters()),
            "location": [p for p in self.location.parameters()],
            "classifier": list(self.classifier.parameters()),
            "baseline": list(self.baseline.parameters()),
        }
