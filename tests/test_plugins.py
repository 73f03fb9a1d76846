"""Hydra imports every plugin of the environment in every app: the project's launchers and sweepers must load
neither torch nor Lightning (nor the training code) when Hydra discovers them, and the launchers' configs are in
Hydra's ConfigStore for every app."""
import subprocess
import sys

DISCOVER = """
import sys
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper

found = {p.__name__ for kind in (Launcher, Sweeper) for p in Plugins.instance().discover(kind)}
assert {"LocalLauncher", "SlurmLauncher", "ValidatingSweeper", "PointsSweeper"} <= found, found
from hydra.core.config_store import ConfigStore  # the launchers' configs, for any app: hydra/launcher=deepres_slurm
configs = set(ConfigStore.instance().list("hydra/launcher"))
assert {f"deepres_{n}.yaml" for n in ("local", "slurm", "packed", "packed_slurm")} <= configs, configs
print(sorted(m for m in ("torch", "lightning", "deepres.training", "deepres.models") if m in sys.modules))
"""


def test_plugin_discovery_loads_neither_torch_nor_lightning():
    out = subprocess.run([sys.executable, "-c", DISCOVER], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
