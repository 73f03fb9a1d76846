"""Hydra's own launcher conformance suites (hydra.test_utils.launcher_common_tests), run on the project's launchers
as hydra-submitit-launcher runs them on its own: Hydra's test apps, not this project's. The packed launchers run
apps that cannot be packed exactly as their plain counterparts.

Not collected by `make test` itself: tests/test_launcher_suites.py runs this file in a pytest process of its own
(SUITE_LAUNCHERS=deepres_local,deepres_packed: the launchers to test, comma-separated), because the suites make
Hydra scan its plugins afresh, which re-executes the plugin modules (Hydra's BasicSweeper among them) under the other
tests' feet."""
import os

import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import BatchedSweeperTestSuite, IntegrationTestSuite, LauncherTestSuite

LOCAL = ["hydra.launcher.timeout_min=2"]
SLURM = ["hydra.launcher.timeout_min=5", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
         "hydra.launcher.status_poll_s=2"]
OVERRIDES = {"deepres_local": LOCAL, "deepres_packed": LOCAL, "deepres_slurm": SLURM, "deepres_packed_slurm": SLURM}
NAMES = os.environ.get("SUITE_LAUNCHERS", "deepres_local").split(",")
LAUNCHERS = [pytest.param(name, OVERRIDES[name], id=name.removeprefix("deepres_")) for name in NAMES]


def test_discovery():
    names = {plugin.__name__ for plugin in Plugins.instance().discover(Launcher)}
    assert {"LocalLauncher", "SlurmLauncher"} <= names


@pytest.mark.parametrize("launcher_name, overrides", LAUNCHERS)
class TestLauncher(LauncherTestSuite):
    pass


@pytest.mark.parametrize("launcher_name, overrides", [
    pytest.param(p.values[0], ["hydra.sweeper.max_batch_size=2", *p.values[1]], id=p.id) for p in LAUNCHERS])
class TestBatchedSweeper(BatchedSweeperTestSuite):
    pass


@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [
    pytest.param({}, ["-m", "hydra/hydra_logging=disabled", "hydra/job_logging=disabled", f"hydra/launcher={name}",
                      *flags], id=id_)
    for name, flags, id_ in [(p.values[0], p.values[1], p.id) for p in LAUNCHERS]])
class TestIntegration(IntegrationTestSuite):
    pass
