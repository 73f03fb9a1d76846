"""src/train.py run for real in a process of its own, the way users run it, with small fast settings.

The processes are children of the suite's zygote (helpers/zygote.py): each a process with its own pid, argv, output
and exit status, without the ~10 s import of torch and Lightning a fresh interpreter pays."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers.zygote import ZYGOTE

ROOT = Path(__file__).resolve().parents[2]
# Small, fast runs: a 8-layer net, small batches, frequent rows, evaluation and checkpoints.
FAST = ["model.depth=8", "data.batch_size=32", "data.eval_batch_size=160", "trainer.log_every_n_steps=5",
        "trainer.val_check_interval=10", "checkpoint.every_n_steps=10", "trainer.enable_progress_bar=false",
        "logger=none"]


def train_cmd(*overrides: str) -> list[str]:
    return [sys.executable, str(ROOT / "src" / "train.py"), *overrides]


def run_train(*overrides: str, cwd: Path | None = None, check: bool = True, timeout: int = 300
              ) -> subprocess.CompletedProcess:
    """Run src/train.py in a subprocess; with check, fail the test unless it exits 0."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = ZYGOTE.run(train_cmd(*overrides), cwd=cwd or ROOT, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py {' '.join(overrides)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def run_entry(script: str, *args, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run another entry point of src/ (evaluate.py, report.py) as a user does, from the repository root."""
    return ZYGOTE.run([sys.executable, str(ROOT / "src" / script), *map(str, args)], cwd=ROOT, timeout=timeout)


def kill_at_first_checkpoint(*overrides: str, run: Path, cwd: Path | None = None,
                             files: tuple[str, ...] = ("last.ckpt",)) -> None:
    """Start src/train.py and kill -9 it as soon as `run` has its first last.ckpt (or all of `files` in its
    checkpoints/: with previous.ckpt, its second); fails if the run ended first."""
    proc = ZYGOTE.popen(train_cmd(*overrides), cwd=cwd or ROOT, env={**os.environ, "WANDB_MODE": "offline"})
    deadline = time.time() + 300
    while not all((run / "checkpoints" / name).exists() for name in files) and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "checkpoints" / "final.ckpt").exists(), "the run finished before it could be killed"
