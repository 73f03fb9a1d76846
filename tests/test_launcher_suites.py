"""Hydra's launcher conformance suites (tests/hydra_suites.py) on each of the project's launchers, in two pytest
processes of their own (the local launchers, the SLURM ones): LauncherTestSuite, BatchedSweeperTestSuite and
IntegrationTestSuite, 21 tests per launcher plus discovery. The SLURM launchers run the suites' jobs on the real
cluster (CI starts one; `make slurm-up` here)."""
import os
import re
import subprocess
import sys

import pytest
from helpers.slurm_cluster import cluster_answers
from helpers.train import ROOT

needs_cluster = [pytest.mark.slurm, pytest.mark.skipif(not os.environ.get("CI") and not cluster_answers(),
                                                      reason="no SLURM cluster answers (make slurm-up starts one)")]


@pytest.mark.slow
@pytest.mark.parametrize("launchers", ["deepres_local,deepres_packed",
                                       pytest.param("deepres_slurm,deepres_packed_slurm", marks=needs_cluster)])
def test_hydras_launcher_suites_pass(launchers):
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/hydra_suites.py"],
                          cwd=ROOT, env={**os.environ, "SUITE_LAUNCHERS": launchers}, capture_output=True, text=True,
                          timeout=900)
    counts = dict((kind, int(n)) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", proc.stdout))
    assert proc.returncode == 0 and counts == {"passed": 1 + 21 * 2}, proc.stdout[-4000:]  # discovery, 21 each
