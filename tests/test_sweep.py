"""Multirun sweeps with Hydra's local launcher: one directory per job, a summary at the sweep root, W&B runs."""
import csv

import pytest
from helpers.train import FAST, run_train
from helpers.wandb_records import summarize

from deepres.runs.metrics_csv import read_rows

SWEEP_FAST = [o for o in FAST if not o.startswith("model.depth")]


@pytest.mark.slow
def test_2x2_multirun_writes_one_directory_per_job_and_a_summary(cifar10_root, tmp_path):
    run_train("-m", "model.depth=8,14", "model.residual=true,false", *SWEEP_FAST, "trainer.max_steps=10",
              f"data.root={cifar10_root}", f"hydra.sweep.dir={tmp_path}")
    jobs = [p.parent.name for p in tmp_path.glob("*/metrics.csv")]
    for depth in (8, 14):
        for residual in ("true", "false"):
            assert sum(f"model.depth={depth},model.residual={residual}" in job for job in jobs) == 1
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    assert {r["name"] for r in rows} == {"resnet-8", "plain-8", "resnet-14", "plain-14"}
    for r in rows:
        last_test = [m for m in read_rows(tmp_path / r["job"] / "metrics.csv") if "test/error" in m][-1]
        assert r["steps"] == "10" and float(r["test/error"]) == last_test["test/error"]
        assert float(r["wall_time_s"]) > 0
    assert "| resnet-8 |" in (tmp_path / "summary.md").read_text()


def test_wandb_offline_runs_are_named_grouped_and_equal_to_metrics_csv(cifar10_root, tmp_path):
    overrides = [o for o in FAST if o != "logger=none"]  # W&B is on by default
    run_train("-m", "model.residual=true,false", *overrides, "trainer.max_steps=10", f"data.root={cifar10_root}",
              f"hydra.sweep.dir={tmp_path / 'fig'}", cwd=tmp_path)
    files = sorted((tmp_path / "fig").rglob("run-*.wandb"))
    assert len(files) == 2
    runs = [summarize(f) for f in files]
    assert sorted(r["name"] for r in runs) == ["plain-8", "resnet-8"]
    assert {r["group"] for r in runs} == {"fig"}
    for f, r in zip(files, runs):
        csv_losses = [m["train/loss"] for m in read_rows(f.parents[2] / "metrics.csv") if "train/loss" in m]
        assert [h["train/loss"] for h in r["history"] if "train/loss" in h] == csv_losses
