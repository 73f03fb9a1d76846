"""Issue 7.5: a run stopped and resumed at any step ends with the same weights (bitwise on CPU) and the same metric
rows as an uninterrupted run. No RNG state needs saving for this: the model's init, the data order and every
augmentation draw are functions of (seed, iteration), see data/gpu_augment.py; SIGTERM/SIGINT/kill -9 at random
moments are in test_interrupt.py."""

import pytest
import torch
from helpers.train import FAST, kill_at_first_checkpoint, run_train

from deepres.runs.metrics_csv import read_rows


def final_weights(run) -> dict:
    return torch.load(run / "checkpoints" / "final.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def assert_kill_9_and_resume_is_exact(args: list[str], whole, killed) -> None:
    """The run of `args` killed at its first checkpoint and resumed (in `killed`) ends with the metrics.csv and the
    weights of the uninterrupted run already in `whole`."""
    kill_at_first_checkpoint(*args, f"hydra.run.dir={killed}", run=killed)
    run_train(*args, f"hydra.run.dir={killed}")
    assert (killed / "metrics.csv").read_text() == (whole / "metrics.csv").read_text()
    complete, resumed = final_weights(whole), final_weights(killed)
    assert all(torch.equal(complete[k], resumed[k]) for k in complete)


@pytest.mark.slow
@pytest.mark.parametrize("every, evaluate", [(10, 10), (4, 10)], ids=["saved-after-evaluation", "saved-after-step"])
def test_kill_9_and_resume_ends_like_an_uninterrupted_run(cifar10_root, tmp_path, every, evaluate):
    """Checkpoints are taken after an evaluation (when one is due) or after the iteration: both resume exactly."""
    args = [*FAST, "trainer.max_steps=40", f"checkpoint.every_n_steps={every}",
            f"trainer.val_check_interval={evaluate}", f"data.root={cifar10_root}"]
    run_train(*args, f"hydra.run.dir={tmp_path / 'whole'}")
    assert_kill_9_and_resume_is_exact(args, tmp_path / "whole", tmp_path / "killed")


@pytest.mark.slow
@pytest.mark.parametrize("warmup, switch", [
    (["schedule.warmup_until_error=0", "schedule.warmup_max_steps=30"], 30),  # killed at 10: before the switch
    (["schedule.warmup_until_error=100", "schedule.warmup_max_steps=2000"], 5),  # the error ends it at 5: after
], ids=["killed-before-the-switch", "killed-after-the-switch"])
def test_resume_through_the_warm_up_is_exact(cifar10_root, tmp_path, warmup, switch):
    """ResNet-110's warm-up (lr 0.01 until the training error is below 80%, at most 2000 iterations), on a small
    net: the switch back to the base lr is part of the checkpointed schedule state."""
    args = [*FAST, "trainer.max_steps=40", "checkpoint.every_n_steps=10", "schedule.warmup_from_depth=8", *warmup,
            "schedule.milestones=[0.95]", f"data.root={cifar10_root}"]
    run_train(*args, f"hydra.run.dir={tmp_path / 'whole'}")
    rows = [r for r in read_rows(tmp_path / "whole" / "metrics.csv") if "lr" in r and r["step"] <= 35]
    assert [r["lr"] for r in rows] == [0.01 if r["step"] <= switch else 0.1 for r in rows]  # a row's lr: its last
    assert_kill_9_and_resume_is_exact(args, tmp_path / "whole", tmp_path / "killed")
