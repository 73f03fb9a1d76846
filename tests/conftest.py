import os
import subprocess
import sys
from pathlib import Path

import pytest

from deepres.data.fake_cifar import write_cifar10

ROOT = Path(__file__).resolve().parents[1]
# Small, fast runs: a 8-layer net, small batches, frequent rows, evaluation and checkpoints.
FAST = ["model.depth=8", "data.batch_size=32", "data.eval_batch_size=160", "trainer.log_every_n_steps=5",
        "trainer.val_check_interval=10", "checkpoint.every_n_steps=10", "trainer.enable_progress_bar=false",
        "logger=none"]


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory) -> Path:
    return write_cifar10(tmp_path_factory.mktemp("cifar10"))


def train_cmd(*overrides: str) -> list[str]:
    return [sys.executable, str(ROOT / "src" / "train.py"), *overrides]


def run_train(*overrides: str, cwd: Path | None = None, check: bool = True, timeout: int = 300
              ) -> subprocess.CompletedProcess:
    """Run src/train.py for real in a subprocess (the way users run it)."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.run(train_cmd(*overrides), cwd=cwd or ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py {' '.join(overrides)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


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
