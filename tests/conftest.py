"""Fixtures shared by the tests: generated CIFAR-10, and the smoke sweep of make smoke-fig6."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.train import ROOT

from deepres.data.fake_cifar import write_cifar10


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked requires_cuda are skipped, saying why, where no CUDA GPU is."""
    if torch.cuda.is_available():
        return
    no_gpu = pytest.mark.skip(reason="requires_cuda: no CUDA GPU here (make gpu-check runs these on one)")
    for item in items:
        if "requires_cuda" in item.keywords:
            item.add_marker(no_gpu)


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
