"""Hydra imports every plugin of the environment in every app: the project's launchers and sweepers must load
neither torch nor Lightning (nor the training code) when Hydra discovers them."""
import subprocess
import sys

DISCOVER = """
import sys
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper

found = {p.__name__ for kind in (Launcher, Sweeper) for p in Plugins.instance().discover(kind)}
assert {"LocalLauncher", "SlurmLauncher", "ValidatingSweeper", "PointsSweeper"} <= found, found
print(sorted(m for m in ("torch", "lightning", "deepres.training", "deepres.models") if m in sys.modules))
"""


def test_plugin_discovery_loads_neither_torch_nor_lightning():
    out = subprocess.run([sys.executable, "-c", DISCOVER], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
