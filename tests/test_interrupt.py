"""Issue 7.4: SIGINT, SIGTERM or kill -9 at any moment never leaves a torn checkpoint, log or status; the next run
resumes from the last good checkpoint and ends like an uninterrupted run."""
import json
import random
import signal
import time

import pytest
import torch
from helpers.train import FAST, ROOT, run_train, train_cmd
from helpers.zygote import ZYGOTE, ForkedProcess

from deepres.runs.metrics_csv import read_rows

# 50 iterations: the kill -9 test's four mid-training kills each let a run go on a few iterations past a checkpoint
ARGS = [*FAST, "trainer.max_steps=50", "checkpoint.every_n_steps=2"]


@pytest.fixture(scope="module")
def whole(tmp_path_factory, cifar10_root):
    """The uninterrupted run of ARGS, which both tests' interrupted runs must end like: trained once for both."""
    run = tmp_path_factory.mktemp("whole")
    run_train(*ARGS, f"data.root={cifar10_root}", f"hydra.run.dir={run}")
    return run


def start(run, cifar10_root) -> ForkedProcess:
    return ZYGOTE.start(train_cmd(*ARGS, f"data.root={cifar10_root}", f"hydra.run.dir={run}"), cwd=ROOT, capture=True)


def wait_for(path, proc, seconds=120) -> None:
    deadline = time.time() + seconds
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert path.exists(), f"{path} never appeared"


def assert_whole(run) -> None:
    """Every file the run left parses completely."""
    if (run / "status.json").exists():
        json.loads((run / "status.json").read_text())
    if (run / "metrics.csv").exists():
        read_rows(run / "metrics.csv")
    for ckpt in (run / "checkpoints").glob("*.ckpt") if (run / "checkpoints").exists() else []:
        torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


def same_run(a, b) -> None:
    assert (a / "metrics.csv").read_text() == (b / "metrics.csv").read_text()
    wa, wb = (torch.load(r / "checkpoints" / "final.ckpt", map_location="cpu", weights_only=False)["state_dict"]
              for r in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_sigterm_and_sigint_checkpoint_stop_and_resume_exactly(tmp_path, cifar10_root, whole):
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        run = tmp_path / sig.name
        proc = start(run, cifar10_root)
        wait_for(run / "checkpoints" / "last.ckpt", proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == code, err[-2000:]
        status = json.loads((run / "status.json").read_text())
        assert status["status"] == "interrupted" and sig.name in status["reason"]
        assert not (run / "checkpoints" / "final.ckpt").exists()
        assert_whole(run)
        run_train(*ARGS, f"data.root={cifar10_root}", f"hydra.run.dir={run}")
        same_run(whole, run)
        log = (run / "train.log").read_text()  # both sessions: the stop, its reason, the resume point
        assert log.count("training to iteration") == 2 and f"stopped by {sig.name}" in log
        assert f"resuming from {run / 'checkpoints' / 'last.ckpt'}" in log and "`Trainer.fit` stopped" in log


@pytest.mark.slow
def test_kill_9_at_random_moments_never_corrupts_and_resumes_exactly(tmp_path, cifar10_root, whole):
    run, rng = tmp_path / "killed", random.Random(7)
    last = run / "checkpoints" / "last.ckpt"
    for attempt in range(6):
        proc = start(run, cifar10_root)
        if attempt % 3 == 0:  # during start-up (imports, data loading, restoring)
            time.sleep(rng.uniform(0.5, 4.0))
        else:  # mid-training: just after a new checkpoint, so often during the next one's write
            before = last.stat().st_mtime_ns if last.exists() else 0
            deadline = time.time() + 120
            while (not last.exists() or last.stat().st_mtime_ns == before) and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.2))
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.kill()
        proc.wait()
        assert_whole(run)
    run_train(*ARGS, f"data.root={cifar10_root}", f"hydra.run.dir={run}")
    assert not list(run.rglob(".*.tmp"))  # the half-written temporaries of the killed runs are gone
    same_run(whole, run)
