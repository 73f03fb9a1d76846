"""Hydra's own launcher conformance suites (hydra.test_utils.launcher_common_tests), run on the project's four
launchers as hydra-submitit-launcher runs them on its own: Hydra's test apps, not this project's. The packed
launchers run apps that cannot be packed exactly as their plain counterparts. The SLURM launchers run the suites'
jobs on the real cluster (CI starts one; `make slurm-up` here)."""
import os

import pytest
from helpers.slurm_cluster import cluster_answers
from hydra.core.plugins import Plugins
from hydra.core.singleton import Singleton
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import BatchedSweeperTestSuite, IntegrationTestSuite, LauncherTestSuite
from hydra.version import VersionBase

LOCAL = ["hydra.launcher.timeout_min=2"]
SLURM = ["hydra.launcher.timeout_min=5", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]
needs_cluster = [pytest.mark.slurm, pytest.mark.skipif(not os.environ.get("CI") and not cluster_answers(),
                                                      reason="no SLURM cluster answers (make slurm-up starts one)")]
LAUNCHERS = [pytest.param("deepres_local", LOCAL, id="local"),
             pytest.param("deepres_packed", LOCAL, id="packed"),
             pytest.param("deepres_slurm", SLURM, id="slurm", marks=needs_cluster),
             pytest.param("deepres_packed_slurm", SLURM, id="packed_slurm", marks=needs_cluster)]


@pytest.fixture(autouse=True)
def no_version_base():
    """The suites expect a process in which no app has set Hydra's version_base (its job then changes directory);
    the project's tests compose with version_base 1.3 before them, in the same process."""
    saved = Singleton._instances.pop(VersionBase, None)
    yield
    if saved is not None:
        Singleton._instances[VersionBase] = saved


def test_discovery():
    names = {plugin.__name__ for plugin in Plugins.instance().discover(Launcher)}
    assert {"LocalLauncher", "SlurmLauncher"} <= names


@pytest.mark.parametrize("launcher_name, overrides", LAUNCHERS)
class TestLauncher(LauncherTestSuite):
    pass


@pytest.mark.parametrize("launcher_name, overrides", [
    pytest.param(p.values[0], ["hydra.sweeper.max_batch_size=2", *p.values[1]], id=p.id, marks=p.marks)
    for p in LAUNCHERS])
class TestBatchedSweeper(BatchedSweeperTestSuite):
    pass


@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [
    pytest.param({}, ["-m", "hydra/hydra_logging=disabled", "hydra/job_logging=disabled", f"hydra/launcher={name}",
                      *flags], id=id_, marks=marks)
    for name, flags, id_, marks in [(p.values[0], p.values[1], p.id, p.marks) for p in LAUNCHERS]])
class TestIntegration(IntegrationTestSuite):
    pass
