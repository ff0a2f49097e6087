"""Gymnasium environments of hardattn; importing ``hardattn.envs`` registers every id.

Glimpse tasks (classify an MNIST canvas by choosing where to look):

| id | canvas | default sensor |
| --- | --- | --- |
| ``hardattn/GlimpseMNIST-v0`` | 28x28 | 6 glimpses, 8x8, 1 scale |
| ``hardattn/GlimpseTranslated60-v0`` | 60x60 | 8 glimpses, 12x12, 3 scales |
| ``hardattn/GlimpseCluttered60-v0`` | 60x60, 4 distractors | 8 glimpses, 12x12, 3 scales |
| ``hardattn/GlimpseCluttered100-v0`` | 100x100, 8 distractors | 8 glimpses, 12x12, 4 scales |

``gym.make(id)`` gives the single ``GlimpseEnv``; ``gym.make_vec(id, num_envs=N,
device="cuda")`` gives the batched ``GlimpseVecEnv`` (torch tensors on the device).

Memory-read tasks (choose which past step or slot to read; ``envs/memory.py``):

| id | task | episode |
| --- | --- | --- |
| ``hardattn/CopyMemory-v0`` | copy 10 symbols across T=100 blanks (SAB's copy task) | 120 steps |
| ``hardattn/AssociativeRecall-v0`` | 8 key -> value pairs, then a query key | 10 steps |

``gym.make_vec`` gives ``CopyMemoryVecEnv`` / ``AssociativeRecallVecEnv`` (torch, batched).

Algorithmic tape tasks (gym 0.x ``algorithmic`` ported; ``envs/tape.py``,
``envs/tape_tasks.py``; ``gym.make_vec`` gives Gymnasium's ``SyncVectorEnv``):
``hardattn/TapeCopy-v0``, ``TapeDuplicatedInput-v0``, ``TapeReverse-v0``, ``TapeRepeatCopy-v0``,
``TapeReversedAddition-v0``.
"""

from gymnasium.envs.registration import register, registry

from .glimpse import GlimpseEnv
from .glimpse_task import GlimpseConfig, GlimpseTask
from .glimpse_vec import GlimpseVecEnv
from .memory import AssociativeRecallEnv, CopyMemoryEnv
from .memory_task import MemoryTask
from .memory_vec import AssociativeRecallVecEnv, CopyMemoryVecEnv
from .tape import AlgorithmicTapeEnv
from .tape_tasks import (
    TapeCopyEnv,
    TapeDuplicatedInputEnv,
    TapeRepeatCopyEnv,
    TapeReversedAdditionEnv,
    TapeReverseEnv,
)

GLIMPSE_IDS = {
    "hardattn/GlimpseMNIST-v0": "mnist28",
    "hardattn/GlimpseTranslated60-v0": "translated60",
    "hardattn/GlimpseCluttered60-v0": "cluttered60",
    "hardattn/GlimpseCluttered100-v0": "cluttered100",
}

for _id, _preset in GLIMPSE_IDS.items():
    if _id not in registry:
        # No max_episode_steps: the task itself terminates after n_glimpses steps.
        register(
            id=_id,
            entry_point="hardattn.envs.glimpse:GlimpseEnv",
            vector_entry_point="hardattn.envs.glimpse_vec:GlimpseVecEnv",
            kwargs={"preset": _preset},
        )


# id -> (single env, vector env, max_episode_steps): the episode length of the default
# arguments (the tasks terminate there themselves; see the env docstrings).
MEMORY_IDS = {
    "hardattn/CopyMemory-v0": ("CopyMemoryEnv", "CopyMemoryVecEnv", 120),
    "hardattn/AssociativeRecall-v0": ("AssociativeRecallEnv", "AssociativeRecallVecEnv", 10),
}

for _id, (_single, _vec, _steps) in MEMORY_IDS.items():
    if _id not in registry:
        register(
            id=_id,
            entry_point=f"hardattn.envs.memory:{_single}",
            vector_entry_point=f"hardattn.envs.memory_vec:{_vec}",
            max_episode_steps=_steps,
        )

# id -> (env class, reward_threshold of gym 0.x). max_episode_steps=200 as in gym; the
# in-task time limit (a truncation with reward -1) is in the envs. No vector_entry_point:
# gym.make_vec gives a SyncVectorEnv.
TAPE_IDS = {
    "hardattn/TapeCopy-v0": ("TapeCopyEnv", 25.0),
    "hardattn/TapeDuplicatedInput-v0": ("TapeDuplicatedInputEnv", 9.0),
    "hardattn/TapeReverse-v0": ("TapeReverseEnv", 25.0),
    "hardattn/TapeRepeatCopy-v0": ("TapeRepeatCopyEnv", 75.0),
    "hardattn/TapeReversedAddition-v0": ("TapeReversedAdditionEnv", 25.0),
}

for _id, (_cls, _threshold) in TAPE_IDS.items():
    if _id not in registry:
        register(
            id=_id,
            entry_point=f"hardattn.envs.tape_tasks:{_cls}",
            max_episode_steps=200,
            reward_threshold=_threshold,
        )

_FAMILIES = {"glimpse": GLIMPSE_IDS, "memory": MEMORY_IDS, "tape": TAPE_IDS}


def registered_ids(family: str | None = None) -> list[str]:
    """Every env id this package registers, or those of one ``family``: "glimpse", "memory"
    or "tape"."""
    if family is None:
        return sorted(id_ for ids in _FAMILIES.values() for id_ in ids)
    if family not in _FAMILIES:
        raise ValueError(f"family={family!r} is not one of {sorted(_FAMILIES)} (or None)")
    return sorted(_FAMILIES[family])


__all__ = ["GLIMPSE_IDS", "MEMORY_IDS", "TAPE_IDS", "AlgorithmicTapeEnv", "AssociativeRecallEnv",
           "AssociativeRecallVecEnv", "CopyMemoryEnv", "CopyMemoryVecEnv", "GlimpseConfig",
           "GlimpseEnv", "GlimpseTask", "GlimpseVecEnv", "MemoryTask", "TapeCopyEnv",
           "TapeDuplicatedInputEnv", "TapeRepeatCopyEnv", "TapeReverseEnv",
           "TapeReversedAdditionEnv", "registered_ids"]
