"""Issue 7.1: a bad configuration is refused before any training, in one paragraph naming the bad value and the
valid ones, with exit status 2; a sweep validates every job before launching any."""
import pytest
from helpers.train import FAST, run_train


def refused(tmp_path, cifar10_root, *overrides: str) -> str:
    proc = run_train(*overrides, f"data.root={cifar10_root}", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert not (tmp_path / "run").exists()  # nothing of the run is created
    return errors[0]


@pytest.mark.parametrize("overrides, expected", [
    (["model=resnet9"], ["model/resnet9", "cifar_resnet"]),
    (["model.dept=20"], ["model.dept", "depth, residual, shortcut"]),
    (["+model.foo=1"], ["model.foo is not a key", "Valid keys under model: depth, residual, shortcut"]),
    (["model.depth=21"], ["model.depth=21", "6n+2", "20, 32, 44, 56, 110, 1202"]),
    (["model.shortcut=D"], ["'D'", "A (identity", "B (1x1", "C (projection"]),
    (["data.batch_size=0"], ["data.batch_size=0", "positive"]),
    (["optimizer.lr=-0.1"], ["optimizer.lr=-0.1", "positive"]),
    (["trainer.max_steps=0"], ["trainer.max_steps=0", "positive"]),
    (["trainer.max_steps=1000", "schedule.milestones=[500,2000]"], ["[500, 2000]", "[1, 999]"]),
    (["data=cifar11"], ["data/cifar11", "cifar10 cifar100"]),
    (["model.bn_batch=12"], ["model.bn_batch=12", "a divisor of 32"]),
])
def test_bad_config_is_one_clear_message(tmp_path, cifar10_root, overrides, expected):
    message = refused(tmp_path, cifar10_root, *FAST, *overrides)
    for text in expected:
        assert text in message


def test_a_sweep_with_one_bad_job_launches_none(tmp_path, cifar10_root):
    proc = run_train("-m", "model.depth=8,9", *[o for o in FAST if not o.startswith("model.depth")],
                     f"data.root={cifar10_root}", f"hydra.sweep.dir={tmp_path}", check=False)
    assert proc.returncode == 2
    assert "model.depth=9" in proc.stderr and "No job was launched" in proc.stderr
    assert not list(tmp_path.rglob("metrics.csv")) and not list(tmp_path.rglob("status.json"))
