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
"""

from gymnasium.envs.registration import register, registry

from .glimpse import GlimpseEnv
from .glimpse_task import GlimpseConfig, GlimpseTask
from .glimpse_vec import GlimpseVecEnv

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


def registered_ids() -> list[str]:
    """Every env id this package registers."""
    return sorted(GLIMPSE_IDS)


__all__ = ["GLIMPSE_IDS", "GlimpseConfig", "GlimpseEnv", "GlimpseTask", "GlimpseVecEnv",
           "registered_ids"]
