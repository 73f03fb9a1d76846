"""A run directory's recorded config is never overwritten by another config: a run continued under a config that
changes its results is refused (exit 2, the keys named) and every file of the directory is left as it was."""
import hashlib

import pytest
from helpers.train import FAST, run_train


def files(run) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.rglob("*"))
            if p.is_file()}


@pytest.mark.slow
def test_another_config_in_a_runs_directory_is_refused_and_changes_nothing(tmp_path, cifar10_root):
    run = tmp_path / "run"
    args = [*FAST, "trainer.max_steps=4", f"data.root={cifar10_root}", f"hydra.run.dir={run}"]
    run_train(*args)
    before = files(run)
    assert ".hydra/config.yaml" in before and not (run / ".hydra-next").exists()
    for change, shown in (("model.depth=14", "model.depth: 8 -> 14"),
                          ("trainer.max_steps=8", "trainer.max_steps: 4 -> 8")):
        proc = run_train(*args, change, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert shown in proc.stderr and "another directory" in proc.stderr and str(run) in proc.stderr
        assert files(run) == before and not (run / ".hydra-next").exists()
    # what changes no result may differ: the run is found finished
    proc = run_train(*args, "trainer.enable_progress_bar=true", f"data.root={cifar10_root}/")
    assert "already finished" in proc.stdout + proc.stderr and files(run)[".hydra/config.yaml"] == before[
        ".hydra/config.yaml"]


def test_an_unfinished_run_resumed_with_another_config_is_refused(tmp_path, cifar10_root):
    run = tmp_path / "run"
    args = [*FAST, "optimizer.lr=1e6", "checkpoint.every_n_steps=2", "trainer.max_steps=200",
            f"data.root={cifar10_root}", f"hydra.run.dir={run}"]
    assert run_train(*args, check=False).returncode == 2  # diverges: a failed run with a checkpoint to resume
    before = files(run)
    proc = run_train(*args, "optimizer.lr=0.1", check=False)
    assert proc.returncode == 2 and "optimizer.lr: 1000000.0 -> 0.1" in proc.stderr, proc.stderr[-2000:]
    assert files(run) == before
