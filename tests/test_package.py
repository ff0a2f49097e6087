"""The package installs with its mapped subpackages and registers its envs."""

import subprocess
import sys

import gymnasium as gym


def test_subpackages_import_from_the_installed_package():
    import hardattn
    import hardattn.agents
    import hardattn.envs

    assert hardattn.__version__
    assert hardattn.envs.__file__.replace("\\", "/").endswith("envs/__init__.py")


def test_every_glimpse_id_is_registered():
    import hardattn.envs

    for env_id in hardattn.envs.registered_ids():
        assert env_id in gym.registry


def test_core_modules_import_neither_envs_nor_agents():
    code = ("import sys, hardattn.data, hardattn.sensors, hardattn.cli, hardattn.benchmarking;"
            "bad=[m for m in sys.modules if m.startswith(('hardattn.envs','hardattn.agents'))];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_console_script_lists_commands():
    out = subprocess.run([sys.executable, "-m", "hardattn.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "data preview" in out
