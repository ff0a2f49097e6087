"""hardattn: reinforcement learning for hard attention.

Core modules live here (data, sensors, networks, estimators, losses, logging, CLI). The
Gymnasium environments install as ``hardattn.envs`` and the agents as ``hardattn.agents``;
core modules import neither.
"""

__version__ = "0.1.0"
