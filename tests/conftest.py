"""Fixtures shared by the tests (generated CIFAR-10, the smoke sweep of make smoke-fig6), and how pytest-xdist's
workers share the machine: the cores split between them, and tests that share costly state on one worker."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.train import ROOT

from deepres.data.fake_cifar import write_cifar10

if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    # each worker, and each run it starts, gets its share of the cores (a run that asks for its own keeps it):
    # two workers of two threads each on two cores spend their time waiting for each other
    share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(share))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def worker_group(item) -> str | None:
    """The tests that must run on one xdist worker (make test: --dist loadgroup): the SLURM tests (one small cluster,
    whose jobs queue behind each other's), the readers of the smoke sweep, and each module whose module-scoped
    fixture trains a run (trained once, not once per worker)."""
    if "slurm" in item.keywords:
        return "slurm"
    if "smoke_sweep" in item.fixturenames:
        return "smoke-fig6"
    if any(defs[-1].scope == "module" for defs in item._fixtureinfo.name2fixturedefs.values()):
        return item.module.__name__
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked requires_cuda are skipped, saying why, where no CUDA GPU is; groups for xdist's workers."""
    no_gpu = pytest.mark.skip(reason="requires_cuda: no CUDA GPU here (make gpu-check runs these on one)")
    for item in items:
        if "requires_cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_gpu)
        if group := worker_group(item):
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory) -> Path:
    return write_cifar10(tmp_path_factory.mktemp("cifar10"))


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory) -> Path:
    """`make smoke-fig6` for real: the Fig. 6 sweep (9 nets, 4 iterations each) on generated data, then the Fig. 1,
    Fig. 6, Table 6 and Fig. 7 reports; shared by the report and notebook tests."""
    sweep = tmp_path_factory.mktemp("smoke-fig6")
    # -o: never (re)install from inside the tests; PY: the interpreter running them; not a sub-make of `make test`,
    # whose command-line variables (`make test ARGS=...`) reach the environment
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARGS", "SEEDS")}
    proc = subprocess.run(["make", "-o", ".venv/.installed", "smoke-fig6", f"SMOKE_DIR={sweep}",
                           f"PY={sys.executable}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"make smoke-fig6 exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    return sweep
