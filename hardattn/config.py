"""``TrainConfig``: every knob of ``hardattn train``, one frozen dataclass parsed by tyro.

``validate()`` checks every field and every combination before anything is built or trained,
with a message naming the field, the value and the accepted range.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import typing
from dataclasses import dataclass
from typing import Literal

AGENTS = ("reinforce", "actor-critic", "sb3-ppo", "sb3-recurrent-ppo", "soft-glimpse",
          "reparam-glimpse", "draw", "soft-cnn", "cnn", "mlp", "hard-read", "hard-read-ac",
          "soft-read", "memoryless", "sab")
# Agents of the memory-read envs (CopyMemory-v0, AssociativeRecall-v0; agents/memory_readers.py).
MEMORY_AGENTS = ("hard-read", "hard-read-ac", "soft-read", "memoryless", "sab")
HARD_READERS = ("hard-read", "hard-read-ac")  # the memory agents trained by REINFORCE
# Agents trained end to end by backprop on canvases (no env, no REINFORCE).
# --precision bf16: the RAM agents and the backprop agents whose cost is dense matrix work on
# the whole canvas (the sensor-placing ones keep their coordinates in float32).
BF16_AGENTS = ("reinforce", "actor-critic", "soft-cnn", "cnn", "mlp")
SOFT_AGENTS = ("soft-glimpse", "reparam-glimpse", "draw", "soft-cnn", "cnn", "mlp")
LOCATION_AGENTS = ("soft-glimpse", "reparam-glimpse", "draw")  # a location learned by backprop
# Fields that came with a default other than what the code before them did: name -> (agents,
# value of that older code). A recorded config without the field ran with that value.
LEGACY_VALUES = {"location_grad": (LOCATION_AGENTS, "core")}


def with_legacy_values(recorded: dict) -> dict:
    """A recorded config with the fields it predates set as the code of its time ran them."""
    out = dict(recorded)
    for name, (agents, value) in LEGACY_VALUES.items():
        if name not in out and out.get("agent") in agents:
            out[name] = value
    return out

IMAGES_PER_EPOCH = 50_000  # the training split


@functools.cache
def _literal_fields() -> dict[str, tuple]:
    """``{field: its allowed values}`` for every ``Literal``-typed field of ``TrainConfig``."""
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: typing.get_args(hints[f.name]) for f in dataclasses.fields(TrainConfig)
            if typing.get_origin(hints[f.name]) is Literal}


# Fields that one family of agents reads: given to another agent they would be ignored, so
# ``validate`` refuses them (compare applies a global override only where it is read).
AGENT_FIELDS = {
    "score": ("soft-cnn",), "attention_dim": ("soft-cnn",), "feature_channels": ("soft-cnn",),
    "draw_grid": ("draw",), "cnn_channels": ("cnn",), "fc_hidden": ("cnn", "mlp"),
    "read_score": ("hard-read", "hard-read-ac", "soft-read", "sab"),
    "sab_k_top": ("sab",), "sab_k_att": ("sab",), "sab_k_trunc": ("sab",),
}

def used_by(agent: str, fields: dict) -> dict:
    """``fields`` without those of ``AGENT_FIELDS`` that ``agent`` does not read: one set of
    settings for several agents (``hardattn compare``'s overrides, sweeps)."""
    return {k: v for k, v in fields.items() if agent in AGENT_FIELDS.get(k, (agent,))}


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _fits(value, kind) -> bool:
    """Whether ``value`` has the plain type ``kind`` (bool is not an int; an int is a float)."""
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if kind is float else kind)


def plain_numbers(config) -> None:
    """Turn numpy (or other ``numbers``) scalars in the frozen dataclass ``config`` into plain
    ``int``/``float``: sweeps hand them, and JSON records and the type checks want Python's."""
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        if isinstance(v, (bool, int, float)) or v is None:
            continue
        if isinstance(v, numbers.Integral):
            object.__setattr__(config, f.name, int(v))
        elif isinstance(v, numbers.Real):
            object.__setattr__(config, f.name, float(v))


def type_errors(config) -> list[str]:
    """One message per field of the dataclass ``config`` whose value is not of its declared
    plain type (``int``, ``float``, ``bool``, ``str``, or one of those or None); ``Literal``
    fields are checked against their choices elsewhere. Values from ``--overrides`` JSON or
    Python callers reach a config unchecked by the command-line parser."""
    hints = typing.get_type_hints(type(config))
    out = []
    for f in dataclasses.fields(config):
        hint, value = hints[f.name], getattr(config, f.name)
        kinds = [a for a in (typing.get_args(hint) or (hint,)) if a is not type(None)]
        if not kinds or not all(k in _KINDS for k in kinds):
            continue  # Literal and compound types
        if value is None and type(None) in typing.get_args(hint):
            continue
        if not any(_fits(value, k) for k in kinds):
            out.append(f"--{f.name.replace('_', '-')}={value!r} must be "
                       f"{' or '.join(_KINDS[k] for k in kinds)}")
    return out


@dataclass(frozen=True)
class TrainConfig:
    """Train a glimpse agent (``hardattn train``)."""

    agent: Literal["reinforce", "actor-critic", "sb3-ppo", "sb3-recurrent-ppo", "soft-glimpse",
                   "reparam-glimpse", "draw", "soft-cnn", "cnn", "mlp", "hard-read",
                   "hard-read-ac", "soft-read", "memoryless", "sab"] = "reinforce"
    """Agent: REINFORCE (hybrid RAM loss), actor-critic (GAE), Stable-Baselines3 PPO; or a
    backprop baseline: soft-glimpse, reparam-glimpse, draw, soft-cnn, cnn, mlp. Memory envs
    (CopyMemory-v0, AssociativeRecall-v0): hard-read, hard-read-ac, soft-read, sab, memoryless."""
    env: str = "GlimpseCluttered60-v0"
    """Environment id, with or without the "hardattn/" namespace."""
    seed: int = 0
    """Seed of every generator of the run (env, policy noise, initial weights)."""
    device: str = "auto"
    """"auto" (CUDA when available), "cpu", "cuda" or "cuda:N"."""
    total_images: int | None = None
    """Training budget in canvases (episodes); exclusive with --epochs."""
    epochs: float | None = None
    """Training budget in epochs of 50,000 canvases; default 1 when neither budget is given."""
    batch_size: int = 128
    """Canvases per update (with --samples-per-image S: B/S canvases, S paths each)."""
    lr: float = 1e-3
    """Adam learning rate."""
    lr_decay: bool = True
    """Cosine-decay the learning rate to 1% over the budget."""
    n_glimpses: int | None = None
    """Glimpses per episode; None = the env's RAM default."""
    patch: int | None = None
    """Glimpse patch side; None = the env's default."""
    scales: int | None = None
    """Glimpse scales; None = the env's default."""
    first_glimpse: Literal["random", "center"] = "center"
    """Where the first glimpse is taken."""
    augment_shift: int = 0
    """Training canvases only: translate each by a random whole number of pixels in [-k, k]
    per axis (zeros fill in). Regularises mnist28, where RAM overfits the 50,000 digits;
    validation and test canvases are never shifted. 0 = off."""
    core: Literal["rnn", "lstm", "gru"] = "rnn"
    """Recurrent core: ReLU RNN (the paper's), LSTM or GRU."""
    core_hidden: int = 256
    """Width of the core state."""
    glimpse_hidden: int = 256
    """Width of the glimpse feature."""
    what_hidden: int = 128
    """Width of the patch ('what') pathway."""
    where_hidden: int = 128
    """Width of the location ('where') pathway."""
    std: float = 0.15
    """Location-policy std (initial value when --std-schedule learned)."""
    std_schedule: Literal["fixed", "linear", "learned"] = "fixed"
    """Std: fixed; linear from --std to --std-end over the budget; or a learned parameter."""
    std_end: float = 0.05
    """Final std of the linear schedule."""
    baseline: Literal["none", "ema", "learned", "loo", "optimal"] = "learned"
    """REINFORCE baseline: none, moving average, learned per step (RAM), leave-one-out over
    --samples-per-image paths, or the running variance-optimal scalar."""
    samples_per_image: int = 1
    """S glimpse paths per canvas in one batch (>= 2 for --baseline loo)."""
    ema_decay: float = 0.99
    """Decay of the moving-average and running-optimal baselines."""
    normalize_advantages: bool = False
    """Normalise advantages over the batch."""
    entropy_coef: float = 0.0
    """Entropy bonus weight (acts on a learned std)."""
    reinforce_coef: float = 1.0
    """Weight of the REINFORCE term."""
    value_coef: float = 1.0
    """Weight of the baseline / critic regression term."""
    gamma: float = 1.0
    """Discount (the reward arrives on the last step)."""
    gae_lambda: float = 0.9
    """GAE lambda (actor-critic only)."""
    max_grad_norm: float = 5.0
    """Clip the global gradient norm (0 disables)."""
    on_nonfinite: Literal["stop", "skip"] = "stop"
    """A NaN/inf loss or gradient: stop with a message, or skip the step and count it."""
    eval_every: int = 200
    """Validate every N updates (and at the end)."""
    eval_size: int = 10_000
    """Validation canvases: the fixed val set of that size (10000: every digit of the split
    once; a smaller N is a set of its own, not the first N of the full one)."""
    test_size: int = 10_000
    """Test canvases for the final report: the fixed test set of that size (as
    --eval-size)."""
    eval_batch: int = 1000
    """Canvases per evaluation batch."""
    log_every: int = 20
    """Write training scalars every N updates."""
    image_every: int = 500
    """Write glimpse-path images and location histograms every N updates."""
    grad_stats_every: int = 500
    """Measure the location gradient's variance and SNR every N updates (0 disables)."""
    checkpoint_every: int = 200
    """Write a checkpoint every N updates."""
    keep_checkpoints: int = 3
    """How many periodic checkpoints to keep."""
    run_dir: str | None = None
    """Run folder; default runs/{env}__{agent}__{seed}__{time}."""
    resume: str | None = None
    """Continue from a checkpoint file or a run folder (its latest good checkpoint)."""
    from_run: str | None = None
    """Re-run, in a new folder, the config recorded in a run folder's config.json."""
    init_from: str | None = None
    """Start from the model weights of a checkpoint file or a run folder (its best.pt):
    fine-tuning and curricula (CopyMemory T=20, then 100, then 300). The architecture must
    match; the optimiser, update counter and random streams start fresh."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16: the network's matrix multiplies in bfloat16 (autocast, CPU or CUDA); weights,
    Adam, losses, locations and their log-probabilities stay float32. For reinforce and
    actor-critic (the RAM), and soft-cnn, cnn and mlp (the forward pass of training; their
    evaluation stays float32); not for the agents that place a differentiable sensor. Fast
    where the hardware has bf16 GEMMs (AVX512-BF16/AMX, tensor cores)."""
    deterministic: bool = False
    """torch.use_deterministic_algorithms(True) (GPU runs: bit-reproducible, slower)."""
    progress: bool = True
    """Show a progress bar."""
    threads: int = 0
    """torch CPU threads (0: all available cores)."""
    score: Literal["dot", "scaled", "general", "additive"] = "additive"
    """soft-cnn's attention score: dot h.k, scaled dot h.k/sqrt(d), general (bilinear) h W k,
    or additive (Bahdanau) v.tanh(W h + U k)."""
    location_grad: Literal["head", "core"] = "head"
    """soft-glimpse, reparam-glimpse, draw: how far the class loss's gradient through the
    glimpse location goes. head: into the location (draw: read) head, which reads the core
    state detached, as RAM's does. core: on into the core state and through every later step
    (full backprop, as in spatial transformers and DRAW); on cluttered60 its gradient norm
    reached 1e3-1e6 and training stalled near chance."""
    attention_dim: int | None = None
    """soft-cnn, additive score: width a of the projections W h and U k (Bahdanau's attention
    size); None = --core-hidden. A smaller a cuts the per-step (B, positions, a) work."""
    feature_channels: int = 64
    """soft-cnn: channels of the attended CNN feature map (its first conv has half as many)."""
    draw_grid: int | None = None
    """draw: side N of the N x N grid of Gaussian read filters; None = the env's patch."""
    cnn_channels: int = 8
    """cnn: filters of the 10x10, stride-5 conv layer (the RAM paper's baseline)."""
    fc_hidden: int = 256
    """cnn and mlp: width of the fully connected hidden layer(s)."""
    read_score: Literal["dot", "scaled", "general", "additive", "concat"] = "general"
    """Memory agents (hard-read, hard-read-ac, soft-read, sab): score of a memory cell's key against
    the controller's query: dot, scaled dot, general (bilinear), additive (Bahdanau) or concat
    (SAB's MLP on [query; key])."""
    memory_T: int | None = None
    """Memory agents on CopyMemory-v0: the delay T of the training episodes; None = the env's
    default (100)."""
    eval_T: int | None = None
    """Memory agents on CopyMemory-v0: the delay T of the validation and test episodes; None =
    --memory-T (generalisation to other delays otherwise)."""
    memory_pairs: int | None = None
    """Memory agents on AssociativeRecall-v0: N, the key -> value pairs of an episode (at most
    26, the key alphabet); None = the env's default (8)."""
    time_code: Literal["absolute", "none"] = "absolute"
    """Memory agents: what the controller knows of time. absolute: a sinusoidal code of the
    step t enters the controller, the query and the value head; none: no clock (the cells keep
    the code of their own position in their keys), so what is learned at one CopyMemory delay
    can hold at longer ones."""
    rb_top_k: int = 0
    """hard-read: the Rao-Blackwellised top-k sum-and-sample estimator of the address gradient
    (the k most probable cells summed exactly through one-step counterfactual reads, one more
    sampled from the rest); 0 = plain REINFORCE. Needs --gamma 0 and --baseline none/learned
    (--normalize-advantages does not apply to it)."""
    sab_k_top: int = 5
    """sab: the read is the softmax over the k_top best-scoring cells only (sparse)."""
    sab_k_att: int = 1
    """sab: attend every k_att steps (the other steps read nothing)."""
    sab_k_trunc: int = 10
    """sab: truncate backprop through the controller state every k_trunc steps (gradients
    still reach the cells read through the sparse attention)."""

    # ------------------------------------------------------------------ derived values
    @property
    def env_id(self) -> str:
        return self.env if "/" in self.env else f"hardattn/{self.env}"

    @property
    def budget_images(self) -> int:
        if self.total_images is not None:
            return self.total_images
        return int(round((1.0 if self.epochs is None else self.epochs) * IMAGES_PER_EPOCH))

    @property
    def n_updates(self) -> int:
        return max(1, math.ceil(self.budget_images / self.batch_size))

    def __post_init__(self) -> None:
        plain_numbers(self)  # numpy scalars from a sweep

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = with_legacy_values(d)  # configs recorded before a field existed
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    def canvas_overrides(self) -> dict:
        """Canvas fields this run changes on its *training* canvases (``CanvasSpec``)."""
        return {"shift": self.augment_shift} if self.augment_shift else {}

    # ------------------------------------------------------------------ validation
    def validate(self, registered: list[str] | None = None) -> TrainConfig:
        """Check every field and combination; return self.

        Args:
            registered: the env ids that exist (the agents pass ``gym.registry``'s hardattn
                ids; core code never imports the envs).

        Raises:
            ValueError: naming the field(s), the value and the accepted range.
        """
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        def positive_int(name: str, allow_zero: bool = False) -> None:
            v = getattr(self, name)
            lo = 0 if allow_zero else 1
            need(isinstance(v, int) and not isinstance(v, bool) and v >= lo,
                 f"--{name.replace('_', '-')}={v!r} must be an integer >= {lo}")

        bad_types = type_errors(self)
        need(not bad_types, "; ".join(bad_types))
        need(self.agent in AGENTS, f"--agent={self.agent!r} is not one of {AGENTS}")
        need(self.seed >= 0, f"--seed={self.seed} must be an integer >= 0")
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
        for name, users in AGENT_FIELDS.items():
            value = getattr(self, name)
            need(value == defaults[name] or self.agent in users,
                 f"--{name.replace('_', '-')}={value!r} is for --agent {', '.join(users)}; "
                 f"--agent {self.agent} does not use it (leave it out)")
        for name in ("memory_T", "eval_T"):  # CopyMemory's delay; AssociativeRecall has none
            value = getattr(self, name)
            need(value is None or self.agent not in MEMORY_AGENTS or "CopyMemory" in self.env,
                 f"--{name.replace('_', '-')}={value!r} is for --env CopyMemory-v0 (its delay); "
                 f"{self.env} is sized by --memory-pairs")
        for name, choices in _literal_fields().items():
            value = getattr(self, name)
            need(value in choices, f"--{name.replace('_', '-')}={value!r} is not one of "
                 f"{choices}")
        if registered is not None:
            need(self.env_id in registered,
                 f"--env={self.env!r} is not registered; registered ids: {sorted(registered)}")
        need(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
             f"--device={self.device!r} must be auto, cpu, cuda or cuda:N")
        if self.device.startswith("cuda"):
            import torch

            need(torch.cuda.is_available(),
                 f"--device={self.device!r} but CUDA is not available; use --device cpu")
        need(self.total_images is None or self.epochs is None,
             "--total-images and --epochs are exclusive; give one")
        if self.total_images is not None:
            positive_int("total_images")
        if self.epochs is not None:
            need(self.epochs > 0, f"--epochs={self.epochs!r} must be > 0")
        for name in ("batch_size", "core_hidden", "glimpse_hidden", "what_hidden",
                     "where_hidden", "samples_per_image", "eval_every", "eval_size",
                     "test_size", "eval_batch", "log_every", "image_every",
                     "checkpoint_every", "keep_checkpoints"):
            positive_int(name)
        if self.total_images is not None:
            budget = f"--total-images={self.total_images} is"
        elif self.epochs is not None:
            budget = f"--epochs={self.epochs} is {self.budget_images} canvases,"
        else:
            budget = f"the default budget, 1 epoch = {self.budget_images} canvases, is"
        need(self.budget_images >= self.batch_size,
             f"{budget} less than one batch (--batch-size={self.batch_size}); give "
             f"--total-images of at least {self.batch_size} (or more --epochs)")
        positive_int("grad_stats_every", allow_zero=True)
        positive_int("augment_shift", allow_zero=True)
        need(self.augment_shift == 0 or self.agent not in MEMORY_AGENTS,
             f"--augment-shift={self.augment_shift} is for the image agents; --agent "
             f"{self.agent} reads a memory (leave it at 0)")
        positive_int("threads", allow_zero=True)
        for name in ("n_glimpses", "patch", "scales"):
            if getattr(self, name) is not None:
                positive_int(name)
        need(self.n_glimpses is None or self.n_glimpses >= 2,
             f"--n-glimpses={self.n_glimpses} must be >= 2 (one location decision at least)")
        need(0 < self.lr < 1, f"--lr={self.lr!r} must be in (0, 1)")
        need(0 < self.std < 2, f"--std={self.std!r} must be in (0, 2)")
        need(0 < self.std_end < 2, f"--std-end={self.std_end!r} must be in (0, 2)")
        need(0 <= self.gamma <= 1, f"--gamma={self.gamma!r} must be in [0, 1]")
        need(0 <= self.gae_lambda <= 1, f"--gae-lambda={self.gae_lambda!r} must be in [0, 1]")
        need(0 < self.ema_decay < 1, f"--ema-decay={self.ema_decay!r} must be in (0, 1)")
        need(self.max_grad_norm >= 0, f"--max-grad-norm={self.max_grad_norm!r} must be >= 0")
        for name in ("entropy_coef", "reinforce_coef", "value_coef"):
            need(getattr(self, name) >= 0, f"--{name.replace('_', '-')} must be >= 0")
        need(self.batch_size % self.samples_per_image == 0,
             f"--batch-size={self.batch_size} must be a multiple of --samples-per-image="
             f"{self.samples_per_image}")
        need(self.baseline != "loo" or self.samples_per_image >= 2,
             f"--baseline loo needs --samples-per-image >= 2 (got {self.samples_per_image})")
        # hard-read-ac also trains without a critic (--baseline none, an ablation);
        # actor-critic's loss always uses its critic.
        need(self.agent != "actor-critic" or self.baseline == "learned",
             f"--agent actor-critic uses its critic as baseline; --baseline={self.baseline!r} "
             f"is for --agent reinforce (leave it at 'learned')")
        need(self.agent != "hard-read-ac" or self.baseline in ("learned", "none"),
             f"--agent hard-read-ac uses its critic as baseline (or none); "
             f"--baseline={self.baseline!r} is for --agent hard-read (leave it at 'learned')")
        need(self.entropy_coef == 0 or self.std_schedule == "learned"
             or self.agent.startswith("sb3-") or self.agent in HARD_READERS,
             f"--entropy-coef={self.entropy_coef} has no effect unless --std-schedule learned")
        need(self.eval_size % min(self.eval_batch, self.eval_size) == 0,
             f"--eval-size={self.eval_size} must be a multiple of --eval-batch={self.eval_batch}")
        need(self.test_size % min(self.eval_batch, self.test_size) == 0,
             f"--test-size={self.test_size} must be a multiple of --eval-batch={self.eval_batch}")
        need(self.location_grad == "head" or self.agent in LOCATION_AGENTS,
             f"--location-grad={self.location_grad} is for --agent "
             f"{', '.join(LOCATION_AGENTS)}; --agent {self.agent} has no differentiable "
             f"location (leave it at 'head')")
        need(self.precision == "fp32" or self.agent in BF16_AGENTS,
             f"--precision={self.precision} is for --agent {', '.join(BF16_AGENTS)}; "
             f"--agent {self.agent} trains in fp32 (leave --precision at fp32)")
        for name in ("feature_channels", "cnn_channels", "fc_hidden"):
            positive_int(name)
        if self.attention_dim is not None:
            positive_int("attention_dim")
            need(self.score == "additive", f"--attention-dim={self.attention_dim} is for "
                 f"--score additive (--score={self.score!r} scores h against k directly)")
        if self.draw_grid is not None:
            positive_int("draw_grid")
            need(self.draw_grid >= 2, f"--draw-grid={self.draw_grid} must be >= 2")
        elif self.agent == "draw" and self.patch is not None:
            need(self.patch >= 2, f"--patch={self.patch}: --agent draw reads an N x N grid, "
                 f"N = --patch unless --draw-grid is given; give --draw-grid >= 2")
        need(self.agent not in SOFT_AGENTS or self.samples_per_image == 1,
             f"--samples-per-image={self.samples_per_image} is for the REINFORCE agents; "
             f"--agent {self.agent} is trained by backprop (leave it at 1)")
        for name in ("memory_T", "eval_T"):
            if getattr(self, name) is not None:
                positive_int(name)
        if self.memory_pairs is not None:
            need("AssociativeRecall" in self.env,
                 f"--memory-pairs={self.memory_pairs} is for --env AssociativeRecall-v0, not "
                 f"{self.env!r}")
            positive_int("memory_pairs")
            need(self.memory_pairs <= 26, f"--memory-pairs={self.memory_pairs}: at most 26 "
                 f"distinct keys can be drawn (the key alphabet); use 1..26")
        for name in ("sab_k_top", "sab_k_att", "sab_k_trunc"):
            positive_int(name)
        positive_int("rb_top_k", allow_zero=True)
        need(self.rb_top_k == 0 or (self.agent == "hard-read" and self.gamma == 0
                                    and self.baseline in ("none", "learned")
                                    and self.samples_per_image == 1),
             f"--rb-top-k={self.rb_top_k} is for --agent hard-read with --gamma 0, --baseline "
             f"none or learned and --samples-per-image 1")
        need(self.agent in MEMORY_AGENTS or self.time_code == "absolute",
             f"--time-code={self.time_code!r} is for the memory agents {MEMORY_AGENTS}")
        need(self.agent in MEMORY_AGENTS or (self.memory_T is None and self.eval_T is None),
             f"--memory-T and --eval-T are for the memory agents {MEMORY_AGENTS}")
        need(self.agent in HARD_READERS or self.agent not in MEMORY_AGENTS
             or self.samples_per_image == 1,
             f"--samples-per-image={self.samples_per_image} is for the REINFORCE agents; "
             f"--agent {self.agent} is trained by backprop (leave it at 1)")
        need(self.init_from is None or not self.agent.startswith("sb3-"),
             f"--init-from is not supported by --agent {self.agent} (Stable-Baselines3 keeps "
             f"its own model files); leave --init-from out")
        need(self.eval_size <= 10_000 and self.test_size <= 10_000,
             "--eval-size and --test-size must be <= 10000 (the split sizes)")
        return self
