"""What a user reads: a run prints its overrides (the whole config is in .hydra/), none of Lightning's and W&B's
lines that do not concern them, one line on where an offline W&B run is; a sweep ends with its summary table; the
progress bar's rate is right for slow runs too."""
import os
import subprocess

import pytest
from helpers.train import FAST, run_train, train_cmd

from deepres.training.progress import StepProgressBar

WANDB = [o for o in FAST if o != "logger=none"]


@pytest.mark.slow
def test_a_run_prints_its_overrides_and_no_noise(tmp_path, cifar10_root):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")} | {"WANDB_MODE": "offline"}
    proc = subprocess.run(train_cmd(*WANDB, "trainer.max_steps=10", f"data.root={cifar10_root}",
                                    f"hydra.run.dir={tmp_path}"), cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert f"{tmp_path}: resnet-8, model.depth=8" in out and "_target_" not in out  # no 70-line config dump
    assert (tmp_path / ".hydra" / "config.yaml").exists()
    for noise in ("weights_only", "`srun` command", "wandb: Tracking run", "wandb version", "anonymous", "Tip:"):
        assert noise not in out, noise
    assert f"`wandb sync {tmp_path / 'wandb'}/offline-run-" in out


def test_a_sweep_ends_with_its_summary_table(tmp_path, cifar10_root):
    proc = run_train("-m", *FAST, "trainer.max_steps=5", "model.residual=true,false", f"data.root={cifar10_root}",
                     f"hydra.sweep.dir={tmp_path}", cwd=tmp_path)
    assert "| name | overrides | train/error | test/error | steps | wall_time_s | status |" in proc.stdout
    assert proc.stdout.count("| completed |") == 2 and "| plain-8 |" in proc.stdout


def test_the_bar_updates_every_iteration_once_updates_are_seconds_apart():
    bar = StepProgressBar(every_n_steps=10, max_wait_s=2.0)
    assert bar.due(step=1, max_steps=100, now=0.0)  # the first iteration
    bar._updated = 0.0
    assert not bar.due(2, 100, now=0.5) and bar.due(10, 100, now=0.6) and bar.due(100, 100, now=0.7)
    assert bar.due(3, 100, now=2.5)  # a slow run: each of its iterations, so rich can measure its rate
