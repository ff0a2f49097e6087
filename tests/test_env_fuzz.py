"""Property-based fuzzing of ``step`` in every registered env id, single and batched.

Random actions (valid ones, equivalent spellings of valid ones, and garbage: NaN and +-inf,
huge and negative numbers, wrong shapes and dtypes, nested containers, out-of-range classes,
addresses and grid cells, python vs numpy vs torch numbers) are thrown at every registered id
with every action type, as single envs (``gym.make(id).unwrapped``) and, where the id has a
``vector_entry_point``, as batched envs (``gym.make_vec(id, num_envs=3)``). Each step must
either

- be a correct step: observation inside ``observation_space`` (tensors converted to numpy for
  the batched envs), reward a finite float of the documented set, flags bools; or
- raise ``ValueError``/``TypeError``/``RuntimeError`` (or a ``gymnasium.error`` error) whose
  message names the bad field, never an error from deep inside numpy or torch.

Every action is drawn with a label: *must* be accepted (a documented spelling of a valid
action), *may* be accepted (undocumented but harmless spellings, e.g. ``3.0`` for class 3),
or *must* be rejected. Accepted actions carry their canonical valid action, and the env must
behave exactly like a twin env stepped only with canonical valid actions, so a rejected action
leaves no trace and an accepted spelling is never silently read as something else.

Everything is derandomized (``FUZZ`` below): CI runs the same examples every time.
``HARDATTN_FUZZ_EXAMPLES`` scales the number of examples (default 8 per id and action type);
``HARDATTN_FUZZ_EXPLORE=1`` with ``--hypothesis-seed=N`` explores other examples.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import hardattn.envs
from hardattn.envs import registered_ids

FUZZ = settings(
    max_examples=int(os.environ.get("HARDATTN_FUZZ_EXAMPLES", "8")),
    deadline=None,
    derandomize=not os.environ.get("HARDATTN_FUZZ_EXPLORE"),  # explore: --hypothesis-seed=N
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)

NUM_ENVS = 3
FAMILY_OF = {id_: fam for fam in ("glimpse", "memory", "tape") for id_ in registered_ids(fam)}
ACTION_TYPES = {"glimpse": ("tuple", "multidiscrete", "box"),
                "memory": ("tuple", "multidiscrete"),
                "tape": ("tuple", "multidiscrete")}
# The documented rewards (see the env docstrings).
REWARDS = {"glimpse": {0.0, 1.0}, "memory": {0.0, 1.0}, "tape": {1.0, -0.5, 0.0, -1.0}}
# An error message must name one of its family's fields (or the action itself).
FIELDS = {"glimpse": ("location", "class", "action", "grid"),
          "memory": ("address", "output", "action"),
          "tape": ("move", "write", "symbol", "action")}
ERRORS = (ValueError, TypeError, RuntimeError, gym.error.Error)

SINGLE_CASES = [(i, at) for i in registered_ids() for at in ACTION_TYPES[FAMILY_OF[i]]]
VEC_CASES = [(i, at) for i, at in SINGLE_CASES if gym.spec(i).vector_entry_point]


def case_id(case) -> str:
    return f"{case[0].split('/')[1]}-{case[1]}"


def make_single(env_id: str, action_type: str) -> gym.Env:
    return gym.make(env_id, action_type=action_type).unwrapped


def make_vec(env_id: str, action_type: str):
    return gym.make_vec(env_id, num_envs=NUM_ENVS, action_type=action_type)


@pytest.fixture
def need_data(request):
    """MNIST for the glimpse ids (skips them when it is absent); nothing for the others."""
    if FAMILY_OF[request.node.callspec.params["case"][0]] == "glimpse":
        request.getfixturevalue("data_root")


# ----------------------------------------------------------------------------- labels

MUST, MAY, NEVER = 0, 1, 2  # accepted: must be, may be, must not be


@dataclass
class Part:
    """One drawn value: what is sent, the canonical valid value it stands for (None when it
    must be rejected), whether it must be accepted, and the words a rejection must name."""

    value: Any
    canon: Any
    status: int
    words: tuple[str, ...] = ()


def combine(parts: list[Part], value: Any, canon: Any) -> Part:
    """Fields sent together: rejected if one must be; a rejection may name any of them."""
    status = max(p.status for p in parts)
    words = tuple(w for p in parts for w in p.words)
    return Part(value, None if status == NEVER else canon, status, words)


def named(*words: str):
    """Attach the field names a rejection may use to every drawn ``Part``."""
    return lambda p: Part(p.value, p.canon, p.status, p.words + words)


def bad(value: Any, *words: str) -> Part:
    return Part(value, None, NEVER, words)


# numpy dtypes torch.as_tensor takes (torch cannot even compare its uint16/32/64 tensors).
TORCH_DTYPES = [np.dtype(d) for d in ("bool", "uint8", "uint16", "uint32", "uint64", "int8",
                                      "int16", "int32", "int64", "float16", "float32",
                                      "float64", "complex64", "complex128")]
NASTY = st.sampled_from([None, "3", "", b"\x00", {"a": 1}, {}, [], [[]], (), object(), 1 + 2j,
                         np.complex64(1), [[1, 2], [3, [4]]], [[0.0], 1.0], {1, 2}, Ellipsis,
                         np.array([None, 1], dtype=object), np.datetime64(1, "D"),
                         np.timedelta64(1, "s"), slice(1)])


@st.composite
def out_of_range_int(draw, high: int):
    """An integer outside ``[0, high)`` as a python int or a numpy scalar that can hold it."""
    v = draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=high),
                       st.sampled_from([-1, high, 2**31, 2**63 - 1, 2**63, 2**64 - 1, 2**64,
                                        10**30, -2**63, -2**63 - 1])))
    kinds = ["py"]
    if -2**63 <= v < 2**63:
        kinds.append("int64")
    if 0 <= v < 2**64:
        kinds.append("uint64")
    if -2**31 <= v < 2**31:
        kinds += ["int32", "torch"]
    kind = draw(st.sampled_from(kinds))
    return torch.tensor(v) if kind == "torch" else v if kind == "py" else getattr(np, kind)(v)


def bad_float_int(high: int):
    """Floats that are no valid integer in ``[0, high)``."""
    return st.one_of(
        st.floats(allow_nan=True, allow_infinity=True).filter(
            lambda f: not (f == int(f) and 0 <= f < high) if math.isfinite(f) else True),
        st.sampled_from([math.nan, math.inf, -math.inf, 1e30, -0.5, high - 0.5, 1e300]))


@st.composite
def scalar_int(draw, high: int, what: str, *, torch_status: int, list_status: int,
               bool_status: int):
    """A scalar integer field in ``[0, high)`` (class, address, output, move, ...)."""
    c = draw(st.integers(0, high - 1))
    form = draw(st.sampled_from(
        ["int", "int64", "int32", "uint8", "0d", "torch", "float", "float32", "list", "bool",
         "out", "frac", "nasty", "complex", "text", "shape"]))
    if form == "int":
        return Part(c, c, MUST)
    if form in ("int64", "int32"):
        return Part(getattr(np, form)(c), c, MUST)
    if form == "uint8":
        return Part(np.uint8(c), c, MUST) if c < 256 else Part(c, c, MUST)
    if form == "0d":
        return Part(np.array(c), c, MUST)
    if form == "torch":
        return Part(torch.tensor(c), c, torch_status)
    if form == "float":
        return Part(float(c), c, MAY)
    if form == "float32":
        return Part(np.float32(c), c, MAY)
    if form == "list":
        return Part(draw(st.sampled_from([[c], np.array([c])])), c, list_status)
    if form == "bool":
        return Part(bool(c), c, bool_status) if c < 2 else Part(c, c, MUST)
    if form == "out":
        return bad(draw(out_of_range_int(high)), what)
    if form == "frac":
        f = draw(bad_float_int(high))
        forms = [f, np.float64(f), torch.tensor(f, dtype=torch.float64)]
        with np.errstate(over="ignore", under="ignore"):
            f32 = np.float32(f)
        if not (f32 == np.round(f32) and 0 <= f32 < high):  # 1e-50 rounds to a valid 0.0
            forms.append(f32)
        return bad(draw(st.sampled_from(forms)), what)
    if form == "nasty":
        return bad(draw(NASTY), what)
    if form == "complex":
        return bad(draw(st.sampled_from([complex(c, 1), np.complex128(c), np.array(c + 0j),
                                         torch.tensor(c + 0j)])), what)
    if form == "text":
        return bad(draw(st.sampled_from([str(c), np.str_(c), np.array(str(c))])), what)
    return bad(draw(st.sampled_from([[c, c], np.array([c, c]), np.zeros(0, np.int64),
                                     np.zeros((1, 1), np.int64) + c, [[c]]])), what)


@st.composite
def int_array(draw, highs: tuple[int, ...], rows: int | None, what: str, *,
              torch_status: int, float_status: int, batch1_status: int, bool_status: int):
    """An integer array whose last axis has ``len(highs)`` fields (``rows`` rows; None: 1-D)."""
    k = len(highs)
    shape = (k,) if rows is None else (rows, k)
    cols = [st.integers(0, h - 1) for h in highs]
    c = np.array(draw(st.lists(st.tuples(*cols), min_size=shape[0] if rows else 1,
                               max_size=shape[0] if rows else 1)), np.int64).reshape(shape)
    if k == 1:  # a (rows,) vector of one field
        shape, c = (rows,), c.reshape(rows)
    form = draw(st.sampled_from(
        ["np", "list", "int32", "uint8", "torch", "float", "batch1", "bool", "out", "frac",
         "shape", "complex", "text", "object", "nasty", "ragged"]))
    if form == "np":
        return Part(c, c, MUST)
    if form == "list":
        return Part(c.tolist(), c, MUST)
    if form == "int32":
        return Part(c.astype(np.int32), c, MUST)
    if form == "uint8":
        return Part(c.astype(np.uint8), c, MUST) if c.max(initial=0) < 256 else Part(c, c, MUST)
    if form == "torch":
        return Part(torch.as_tensor(c), c, torch_status)
    if form == "float":
        return Part(c.astype(np.float64), c, float_status)
    if form == "batch1":
        return Part(c[None], c, batch1_status) if rows is None else Part(c, c, MUST)
    if form == "bool":
        return Part(c.astype(bool), c, bool_status) if c.max(initial=0) < 2 else Part(c, c, MUST)
    if form in ("out", "frac"):
        idx = tuple(draw(st.integers(0, s - 1)) for s in c.shape)
        field = idx[-1] if k > 1 else 0
        if form == "out":
            v = draw(out_of_range_int(highs[field]))
            v = int(v) if isinstance(v, (np.integer, torch.Tensor)) else v
            arr = c.tolist()
            ref = arr
            for i in idx[:-1]:
                ref = ref[i]
            ref[idx[-1]] = v
            return bad(draw(st.sampled_from([arr, np.array(arr) if abs(v) < 2**63 else arr])),
                       what)
        arr = c.astype(np.float64)
        arr[idx] = draw(bad_float_int(highs[field]))
        return bad(draw(st.sampled_from([arr, arr.tolist(), torch.as_tensor(arr)])), what)
    if form == "shape":
        n0 = c.shape[0]
        other = draw(st.sampled_from([(), (0,), (n0 + 1,), (n0 - 1,), (n0, 1), (1, n0, 1),
                                      (2, 2, 2), (0,) + c.shape[1:]]
                                     + ([(n0 + 1, k), (n0, k + 1), (n0, k - 1)]
                                        if rows is not None and k > 1 else [])))
        if other == shape or (rows is None and other == (1,) + shape):
            other = (7, 7)
        return bad(np.zeros(other, np.int64), what)
    if form == "complex":
        return bad(draw(st.sampled_from([c + 0j, c.astype(np.complex64), torch.as_tensor(c + 1j)])),
                   what)
    if form == "text":
        return bad(draw(st.sampled_from([c.astype(str), c.astype(bytes)])), what)
    if form == "object":
        o = c.astype(object)
        o.flat[0] = None
        return bad(o, what)
    if form == "nasty":
        return bad(draw(NASTY), what)
    return bad(draw(st.sampled_from([ragged(c.tolist()), [c.tolist(), [1]], [[[0]], 1, 2]])),
               what)


def ragged(nested: list) -> list:
    """``nested`` with its last number replaced by a list: no array has that shape."""
    last = nested
    while isinstance(last[-1], list):
        last = last[-1]
    last[-1] = [0, 1]
    return nested


@st.composite
def float_array(draw, shape: tuple[int, ...], what: str, *, torch_status: int, batch1_status: int,
                box: bool = False):
    """A float array of ``shape`` in [-1, 1] (a location, or a box action when ``box``).

    Its canonical form is float32; finite values outside [-1, 1] are documented to clamp
    (class scores of a box action only matter through their argmax).
    """
    c = draw(hnp.arrays(np.float32, shape, elements=st.floats(-1, 1, width=32)))

    def canonical(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        out = np.clip(x, -1, 1).astype(np.float32)
        if box:  # the class is the argmax of the scores: a one-hot of it is equivalent
            scores = x.reshape(-1, x.shape[-1])[:, 2:]
            onehot = -np.ones_like(scores, dtype=np.float32)
            onehot[np.arange(len(scores)), scores.argmax(axis=1)] = 1.0
            out = out.reshape(-1, x.shape[-1])
            out[:, 2:] = onehot
            out = out.reshape(x.shape)
        return out

    form = draw(st.sampled_from(
        ["np", "float64", "list", "torch", "torch64", "grad", "clamp", "float16", "int", "bool",
         "batch1", "nonfinite", "shape", "complex", "text", "object", "nasty", "ragged"]))
    if form == "np":
        return Part(c, canonical(c), MUST)
    if form == "float64":
        return Part(c.astype(np.float64), canonical(c), MUST)
    if form == "list":
        v = c.tolist()
        return Part(tuple(v) if len(shape) == 1 and draw(st.booleans()) else v, canonical(c), MUST)
    if form in ("torch", "torch64", "grad"):
        t = torch.as_tensor(c.astype(np.float64) if form == "torch64" else c)
        if form == "grad":
            t = t.clone().requires_grad_(True)
        return Part(t, canonical(c), torch_status)
    if form == "clamp":  # finite values of any size: clamped (documented)
        x = draw(hnp.arrays(np.float64, shape, elements=st.floats(allow_nan=False,
                                                                     allow_infinity=False)))
        return Part(x, canonical(x), MUST)
    if form == "float16":
        x = c.astype(np.float16)
        return Part(x, canonical(x.astype(np.float32)), MAY)
    if form == "int":
        x = draw(hnp.arrays(np.int64, shape, elements=st.integers(-3, 3)))
        return Part(x, canonical(x.astype(np.float32)), MAY)
    if form == "bool":
        x = c > 0
        return Part(x, canonical(x.astype(np.float32)), MAY)
    if form == "batch1":
        return Part(c[None], canonical(c), batch1_status) if len(shape) == 1 else \
            Part(c, canonical(c), MUST)
    if form == "nonfinite":
        x = c.astype(np.float64)
        idx = tuple(draw(st.integers(0, s - 1)) for s in shape)
        x[idx] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        return bad(draw(st.sampled_from([x, x.tolist(), x.astype(np.float32),
                                         torch.as_tensor(x)])), what)
    if form == "shape":
        other = draw(st.sampled_from([(), (0,), (1,), (shape[-1] + 1,), (shape[-1] - 1,),
                                      (shape[-1], shape[-1]), (2, 1, shape[-1]),
                                      shape[:-1] + (0,), (7,) + shape[1:]]))
        if other == shape or (len(shape) == 1 and other == (1,) + shape):
            other = (5, 5)
        return bad(np.zeros(other, np.float32), what)
    if form == "complex":
        return bad(draw(st.sampled_from([c + 0j, c + 1j, torch.as_tensor(c + 1j),
                                         torch.as_tensor(c).to(torch.complex64)])), what)
    if form == "text":
        return bad(c.astype(str), what)
    if form == "object":
        o = c.astype(object)
        o.flat[0] = None
        return bad(o, what)
    if form == "nasty":
        return bad(draw(NASTY), what)
    v = c.tolist()
    return bad(draw(st.sampled_from([[v, 0.5], [[0.1], [0.2, 0.3]], v[:-1] + [[0.0]]])), what)


# ----------------------------------------------------------------------------- actions


def glimpse_action(env, n: int | None):
    """Labelled actions of a glimpse env (``n`` rows for a batched env, None for single)."""
    cfg = env.cfg
    single = n is None
    if cfg.action_type == "tuple":
        loc = float_array((2,) if single else (n, 2), "location", torch_status=MUST,
                          batch1_status=MAY).map(named("location"))
        cls = (scalar_int(10, "class", torch_status=MUST, list_status=MAY, bool_status=MAY)
               if single else
               int_array((10,), n, "class", torch_status=MUST, float_status=MAY,
                         batch1_status=MUST, bool_status=MAY)).map(named("class"))
        return structured(st.tuples(loc, cls), "action", "location")
    torch_status = MAY if single else MUST  # a single env reads a tensor as a batch
    if cfg.action_type == "multidiscrete":
        return int_array((cfg.grid, cfg.grid, 10), n, "action", torch_status=torch_status,
                         float_status=MAY, batch1_status=MAY, bool_status=MAY
                         ).map(named("action", "grid", "class"))
    return float_array((12,) if single else (n, 12), "action", torch_status=torch_status,
                       batch1_status=MAY, box=True).map(named("action", "location"))


def memory_action(env, n: int | None):
    """Labelled actions of a memory env."""
    cfg = env.cfg
    single = n is None
    if cfg.action_type == "tuple":
        def field(high, what):
            if single:
                s = scalar_int(high, what, torch_status=MAY, list_status=MAY, bool_status=MAY)
            else:
                s = int_array((high,), n, what, torch_status=MUST, float_status=MAY,
                              batch1_status=MUST, bool_status=MAY)
            return s.map(named(what))
        return structured(st.tuples(field(cfg.n_cells, "address"), field(cfg.n_out, "output")),
                          "action", "address")
    return int_array((cfg.n_cells, cfg.n_out), n, "action",
                     torch_status=MAY if single else MUST, float_status=MAY, batch1_status=MAY,
                     bool_status=MAY).map(named("action", "address", "output"))


def tape_action(env, n: int | None):
    """Labelled actions of a tape env (booleans and shaped fields are documented errors)."""
    assert n is None  # no vector_entry_point: make_vec is Gymnasium's SyncVectorEnv
    highs = (len(env.MOVES), 2, env.base)
    names = ("move", "write", "symbol")
    if env.action_type == "tuple":
        fields = [scalar_int(h, w, torch_status=MAY, list_status=NEVER, bool_status=NEVER
                             ).map(named(w)) for h, w in zip(highs, names)]
        return structured(st.tuples(*fields), "action")
    return int_array(highs, None, "action", torch_status=MAY, float_status=MAY,
                     batch1_status=NEVER, bool_status=NEVER).map(named("action", *names))


@st.composite
def _structured(draw, fields, words: tuple[str, ...]):
    parts = draw(fields)
    words += tuple(w for p in parts for w in p.words)  # any field may be the one named
    value = tuple(p.value for p in parts)
    canon = tuple(p.canon for p in parts)
    form = draw(st.sampled_from(["tuple", "tuple", "tuple", "list", "short", "long", "dict",
                                 "array", "nested", "nasty"]))
    if form == "tuple":
        return combine(list(parts), value, canon)
    if form == "list":
        return combine(list(parts), list(value), canon)
    if form == "short":
        return bad(value[:-1], *words)
    if form == "long":
        return bad(value + (0,), *words)
    if form == "dict":
        return bad(dict(enumerate(value)), *words)
    if form == "array":
        arr = np.empty(len(value), dtype=object)
        for i, v in enumerate(value):  # element by element: numpy would convert tensors
            arr[i] = v
        return bad(arr, *words)
    if form == "nested":
        return bad((value,), *words)
    # Not a list: [[0.0], 1.0] is a fine (address, output) pair of a single memory env.
    return bad(draw(NASTY.filter(lambda v: not isinstance(v, list))), *words)


def structured(fields, *words: str):
    return _structured(fields, words)


ACTIONS = {"glimpse": glimpse_action, "memory": memory_action, "tape": tape_action}

# Anything at all: the env must reject it cleanly or take a correct step.
_JUNK_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.complex_numbers(),
    st.text(max_size=3), st.binary(max_size=3), NASTY,
    hnp.arrays(hnp.scalar_dtypes(), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0,
                                                   max_side=4)),
    hnp.arrays(st.sampled_from(TORCH_DTYPES),
               hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=4)).map(
        lambda a: torch.as_tensor(a)),
)
JUNK = st.recursive(_JUNK_LEAVES, lambda c: st.one_of(
    st.lists(c, max_size=4), st.tuples(c, c), st.tuples(c, c, c),
    st.dictionaries(st.text(max_size=2), c, max_size=2)), max_leaves=6)


# ----------------------------------------------------------------------------- checks


def to_numpy(x):
    if isinstance(x, dict):
        return {k: to_numpy(v) for k, v in x.items()}
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return x


def same(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and bool(torch.equal(a.detach(), b.detach())))
    if isinstance(a, (np.ndarray, np.generic)):
        b = np.asarray(b)
        return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b))
    return type(a) is type(b) and a == b


def check_step(env, family: str, result, vec: bool) -> None:
    """A correct step: obs in space, finite documented rewards, bool flags."""
    assert isinstance(result, tuple) and len(result) == 5, result
    obs, reward, terminated, truncated, info = result
    assert isinstance(info, dict)
    if vec:
        assert isinstance(obs, dict) and all(isinstance(v, torch.Tensor) for v in obs.values())
        assert not any(v.requires_grad for v in obs.values()), "observation carries a graph"
        assert env.observation_space.contains(to_numpy(obs)), obs
        assert reward.dtype == torch.float32 and reward.shape == (env.num_envs,), reward
        assert not reward.requires_grad
        for flag in (terminated, truncated):
            assert flag.dtype == torch.bool and flag.shape == (env.num_envs,), flag
        rewards = reward.tolist()
    else:
        assert env.observation_space.contains(obs), obs
        assert type(reward) is float, type(reward)
        assert type(terminated) is bool and type(truncated) is bool, (terminated, truncated)
        rewards = [reward]
    for r in rewards:
        assert math.isfinite(r) and r in REWARDS[family], rewards


def check_error(exc: BaseException, words: tuple[str, ...]) -> None:
    """A clear rejection: one of our error types, raised with our wording."""
    msg = str(exc)
    assert isinstance(exc, ERRORS) and not isinstance(exc, NotImplementedError), \
        f"{type(exc).__name__}: {msg}"
    assert any(w in msg.lower() for w in words), \
        f"{type(exc).__name__} does not name any of {words}: {msg!r}"


def attempt(env, action):
    """``env.step(action)``: the result, or the exception it raised."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's "casting complex to real discards ..."
        try:
            return env.step(action), None
        except Exception as exc:  # noqa: BLE001 - classified by check_error
            return None, exc


def describe(action) -> str:
    return f"{type(action).__name__} {action!r:.200}"


# ----------------------------------------------------------------------------- the property


def fuzz(make, family: str, data, vec: bool) -> None:
    """Drive an env and its twin: garbage to the env, canonical actions to both, compare."""
    env, twin = make(), make()
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    assert same(env.reset(seed=seed), twin.reset(seed=seed))
    env.action_space.seed(seed)
    n = env.num_envs if vec else None
    actions = ACTIONS[family](env.unwrapped, n)
    words = FIELDS[family]
    ended = False  # single envs: the episode ended and reset() is due
    for _ in range(data.draw(st.integers(1, 12), label="ops")):
        op = data.draw(st.sampled_from(["labelled"] * 4 + ["junk", "burst"]), label="op")
        if ended:
            action = data.draw(st.one_of(JUNK, st.just(env.action_space.sample())))
            result, exc = attempt(env, action)
            assert isinstance(exc, RuntimeError) and "reset" in str(exc), (result, exc)
            assert same(env.reset(), twin.reset())
            ended = False
            continue
        if op == "burst":  # canonical actions only, up to a whole episode
            for _ in range(data.draw(st.integers(1, 130), label="burst")):
                action = env.action_space.sample()
                result = env.step(action)
                check_step(env, family, result, vec)
                assert same(result, twin.step(action))
                if not vec and (result[2] or result[3]):
                    ended = True
                    break
            continue
        part = data.draw(actions, label="action") if op == "labelled" else \
            Part(data.draw(JUNK, label="junk"), None, MAY, words)
        result, exc = attempt(env, part.value)
        if exc is not None:
            assert part.status != MUST, f"{describe(part.value)} rejected: {exc!r}"
            check_error(exc, part.words or words)
            continue
        assert part.status != NEVER, f"{describe(part.value)} accepted: {result!r:.300}"
        check_step(env, family, result, vec)
        # An accepted spelling acts exactly as its canonical action (junk: as itself).
        expected = twin.step(part.value if part.canon is None else part.canon)
        assert same(result, expected), f"{describe(part.value)} != {part.canon!r}"
        if not vec and (result[2] or result[3]):
            ended = True
    # After everything the env is still usable and still the twin.
    if ended:
        assert same(env.reset(), twin.reset())
    action = env.action_space.sample()
    assert same(env.step(action), twin.step(action))


@pytest.mark.parametrize("case", SINGLE_CASES, ids=case_id)
@FUZZ
@given(data=st.data())
def test_single_env_steps_correctly_or_rejects_cleanly(need_data, case, data):
    env_id, action_type = case
    fuzz(lambda: make_single(env_id, action_type), FAMILY_OF[env_id], data, vec=False)


@pytest.mark.parametrize("case", VEC_CASES, ids=case_id)
@FUZZ
@given(data=st.data())
def test_vec_env_steps_correctly_or_rejects_cleanly(need_data, case, data):
    env_id, action_type = case
    fuzz(lambda: make_vec(env_id, action_type), FAMILY_OF[env_id], data, vec=True)


# ----------------------------------------------------------------------------- episode bounds


@pytest.mark.parametrize("case", SINGLE_CASES, ids=case_id)
@FUZZ
@given(action=st.one_of(JUNK, st.just("sample")))
def test_single_step_before_reset_raises_runtime_error(need_data, case, action):
    env = make_single(*case)
    if isinstance(action, str) and action == "sample":
        action = env.action_space.sample()
    result, exc = attempt(env, action)
    assert isinstance(exc, RuntimeError) and "before reset" in str(exc), (result, exc)
    env.reset(seed=0)  # and the env is fine afterwards
    check_step(env, FAMILY_OF[case[0]], env.step(env.action_space.sample()), vec=False)


@pytest.mark.parametrize("case", VEC_CASES, ids=case_id)
def test_vec_step_before_reset_raises_runtime_error(need_data, case):
    env = make_vec(*case)
    for action in (env.action_space.sample(), None, "x"):
        result, exc = attempt(env, action)
        assert isinstance(exc, RuntimeError) and "before reset" in str(exc), (result, exc)
    env.reset(seed=0)
    check_step(env, FAMILY_OF[case[0]], env.step(env.action_space.sample()), vec=True)


def play_to_the_end(env, policy, limit: int = 1000):
    for _ in range(limit):
        _, _, terminated, truncated, _ = env.step(policy())
        if terminated or truncated:
            return terminated, truncated
    raise AssertionError(f"no episode end in {limit} steps")


@pytest.mark.parametrize("case", SINGLE_CASES, ids=case_id)
def test_single_step_after_the_episode_ended_raises_runtime_error(need_data, case):
    env = make_single(*case)
    env.reset(seed=1)
    env.action_space.seed(1)
    play_to_the_end(env, env.action_space.sample)
    for action in (env.action_space.sample(), None, (math.nan,) * 3):
        result, exc = attempt(env, action)
        assert isinstance(exc, RuntimeError) and "after the episode" in str(exc), (result, exc)
    env.reset()
    check_step(env, FAMILY_OF[case[0]], env.step(env.action_space.sample()), vec=False)


@pytest.mark.parametrize("env_id", registered_ids("tape"))
def test_tape_step_after_truncation_raises_runtime_error_as_documented(env_id):
    """Documented: stepping after the episode *ended* (terminated or truncated) raises."""
    env = make_single(env_id, "tuple")
    env.reset(seed=0)
    terminated, truncated = play_to_the_end(env, lambda: (1, 0, 0))  # never writes
    assert truncated and not terminated
    with pytest.raises(RuntimeError, match="after the episode"):
        env.step((1, 0, 0))


@pytest.mark.parametrize("case", VEC_CASES, ids=case_id)
def test_vec_step_after_termination_autoresets_as_documented(need_data, case):
    """Batched envs never raise after termination: the next step is the NEXT_STEP autoreset
    (reward 0, not terminated, a fresh episode at t=0), as their docstrings say."""
    env = make_vec(*case)
    env.reset(seed=2)
    env.action_space.seed(2)
    for _ in range(1000):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        if bool(terminated.all()):
            break
    else:
        raise AssertionError("no termination")
    result = env.step(env.action_space.sample())
    check_step(env, FAMILY_OF[case[0]], result, vec=True)
    obs, reward, terminated, truncated, _ = result
    assert not bool(reward.any()) and not bool(terminated.any()) and not bool(truncated.any())
    assert not bool(obs["t"].any())


def test_fuzz_covers_every_registered_id_and_vector_entry_point():
    ids = {i for i, _ in SINGLE_CASES}
    assert ids == set(registered_ids()) == set(FAMILY_OF)
    assert {i for i, _ in VEC_CASES} == {i for i in hardattn.envs.registered_ids()
                                         if gym.spec(i).vector_entry_point}
    assert {FAMILY_OF[i] for i, _ in VEC_CASES} == {"glimpse", "memory"}


# ----------------------------------------------------------------------------- regressions
# Each case below is one the fuzzer found (shrunk by hypothesis), pinned so it stays fixed
# whatever examples the derandomized search draws in the future.


def glimpse_pair(action_type: str = "tuple"):
    """A glimpse env and its twin, reset alike."""
    env, twin = (make_single("hardattn/GlimpseMNIST-v0", action_type) for _ in range(2))
    env.reset(seed=4)
    twin.reset(seed=4)
    return env, twin


@pytest.mark.parametrize("loc", [np.array([0.5 + 0j, 0.0]), np.array([0.5 + 1j, 0.0]),
                                 torch.tensor([0.5 + 1j, 0.0]), [0.5j, 0.0], (1j, 0)],
                         ids=["np-real", "np-imag", "torch", "list", "scalars"])
def test_complex_locations_are_rejected_not_cast_to_real(data_root, loc):
    env, _ = glimpse_pair()
    _, exc = attempt(env, (loc, 3))
    assert isinstance(exc, ValueError) and "location" in str(exc), exc
    vec = make_vec("hardattn/GlimpseMNIST-v0", "tuple")
    vec.reset(seed=0)
    batch = torch.tensor([[0.5 + 1j, 0.0]] * NUM_ENVS)
    _, exc = attempt(vec, (batch, np.zeros(NUM_ENVS, np.int64)))
    assert isinstance(exc, ValueError) and "location" in str(exc), exc


@pytest.mark.parametrize("action_type", ["tuple", "box"])
def test_finite_float64_locations_beyond_float32_range_are_clamped(data_root, action_type):
    env, twin = glimpse_pair(action_type)
    huge = np.array([1e300, -3.5e38])
    if action_type == "tuple":
        action, canon = (huge, 2), (np.array([1.0, -1.0], np.float32), 2)
    else:
        action = np.concatenate([huge, np.eye(10)[2] * 1e300])
        canon = np.concatenate([[1.0, -1.0], np.eye(10)[2]]).astype(np.float32)
    assert same(env.step(action), twin.step(canon))


def test_locations_that_require_grad_are_taken_as_values(data_root):
    env, twin = glimpse_pair()
    loc = torch.tensor([0.25, -0.5], requires_grad=True)
    assert same(env.step((loc, 1)), twin.step((loc.detach().numpy(), 1)))
    vec = make_vec("hardattn/GlimpseMNIST-v0", "tuple")
    vec.reset(seed=0)
    locs = torch.zeros(NUM_ENVS, 2, requires_grad=True)
    result = vec.step((locs * 0.5, torch.zeros(NUM_ENVS, dtype=torch.long)))
    check_step(vec, "glimpse", result, vec=True)
    assert not vec.unwrapped._task.history.requires_grad


RAGGED = {
    ("glimpse", "tuple"): ([[0.0], [0.1, 0.2]], 1),
    ("glimpse", "multidiscrete"): [0, 0, [0, 1]],
    ("glimpse", "box"): [[0.0] * 11, [0.0]],
    ("memory", "tuple"): (0, [0, [1]]),
    ("memory", "multidiscrete"): [0, [0, 1]],
    ("tape", "tuple"): (0, 0, [0, [1]]),
    ("tape", "multidiscrete"): [0, 0, [0, 1]],
}
ODD_DTYPES = [np.timedelta64(1, "s"), np.datetime64(1, "D"), np.uint64(2**63), 2**63, 2**64 - 1,
              np.array(1 + 0j), 1j]


def _one_bad_field(family: str, action_type: str, bad_value):
    """A valid action of ``family`` with its last integer field replaced by ``bad_value``."""
    if family == "glimpse":
        if action_type == "tuple":
            return (np.zeros(2, np.float32), bad_value), ("class",)
        if action_type == "multidiscrete":
            return [0, 0, bad_value], ("action", "class")
        return np.array([0.0] * 11 + [bad_value]), ("action",)
    if family == "memory":
        return ((0, bad_value) if action_type == "tuple" else [0, bad_value]), ("output",
                                                                              "action")
    return ((1, 0, bad_value) if action_type == "tuple" else [1, 0, bad_value]), ("symbol",
                                                                                "action")


@pytest.mark.parametrize("env_id", ["hardattn/GlimpseMNIST-v0", "hardattn/AssociativeRecall-v0",
                                    "hardattn/TapeCopy-v0"])
def test_ragged_nesting_and_odd_dtypes_are_rejected_naming_the_field(need_data_for, env_id):
    family = FAMILY_OF[env_id]
    for action_type in ACTION_TYPES[family]:
        env = make_single(env_id, action_type)
        env.reset(seed=0)
        cases = [(RAGGED[family, action_type], FIELDS[family])]
        for value in ODD_DTYPES:
            if action_type == "box" and np.asarray(value).dtype.kind in "iuO":
                continue  # a huge integer is a finite class score: valid in a box action
            cases.append(_one_bad_field(family, action_type, value))
        for action, words in cases:
            _, exc = attempt(env, action)
            assert exc is not None, f"{action!r} accepted"
            check_error(exc, words)
            assert not isinstance(exc, NotImplementedError), exc


@pytest.fixture
def need_data_for(request):
    if FAMILY_OF[request.node.callspec.params["env_id"]] == "glimpse":
        request.getfixturevalue("data_root")


def test_big_endian_arrays_are_read_by_value(data_root):
    env, twin = glimpse_pair()
    loc = np.array([0.25, -0.5], dtype=">f8")
    assert same(env.step((loc, np.array(3, dtype=">i4"))), twin.step((loc.astype(np.float32), 3)))
    mem, mem_twin = (make_single("hardattn/AssociativeRecall-v0", "multidiscrete")
                     for _ in range(2))
    mem.reset(seed=0)
    mem_twin.reset(seed=0)
    assert same(mem.step(np.array([0, 3], dtype=">i8")), mem_twin.step(np.array([0, 3])))


def test_unsigned_torch_tensors_are_read_by_value(data_root):
    """torch has no comparisons for uint16/32/64: the envs read such tensors by value."""
    actions = {"hardattn/GlimpseMNIST-v0": (torch.zeros(NUM_ENVS, 2),
                                            torch.tensor([1, 2, 3], dtype=torch.uint32)),
               "hardattn/AssociativeRecall-v0": (torch.tensor([0, 1, 2], dtype=torch.uint64),
                                                 torch.tensor([3, 4, 5], dtype=torch.uint16))}
    for env_id, (a, b) in actions.items():
        env, twin = make_vec(env_id, "tuple"), make_vec(env_id, "tuple")
        env.reset(seed=0)
        twin.reset(seed=0)
        assert same(env.step((a, b)), twin.step((a.long() if a.dtype != torch.float32 else a,
                                                  b.long())))
        too_big = torch.tensor([0, 2**40, 0], dtype=torch.uint64)
        _, exc = attempt(env, (a, too_big))
        check_error(exc, ("class", "output"))


@pytest.mark.parametrize("value,shown", [(1e30, "1e+30"), (np.uint64(2**63), "9.22"),
                                         (math.inf, "inf"), (2**63, "9.22")])
def test_out_of_range_class_error_shows_the_value_sent(data_root, value, shown):
    env, _ = glimpse_pair()
    with pytest.raises(ValueError, match=r"class must be in \[0, 9\]") as info:
        env.step((np.zeros(2, np.float32), value))
    assert shown in str(info.value) and "-9223372036854775808" not in str(info.value)
