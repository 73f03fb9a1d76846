"""W&B after a resume: the history step is the iteration, monotonic across the offline folders a killed and resumed
run leaves, so that syncing them all gives one run whose history is metrics.csv: no step twice, none missing."""

import pytest
from helpers.train import FAST, kill_at_first_checkpoint, run_train
from helpers.wandb_records import summarize

from deepres.runs.metrics_csv import read_rows

ARGS = [o for o in FAST if o != "logger=none"] + ["trainer.max_steps=60", "checkpoint.every_n_steps=20"]


def by_step(rows) -> dict[int, dict]:
    merged: dict[int, dict] = {}
    for row in rows:
        merged.setdefault(row["step"], {}).update(row)
    return merged


@pytest.mark.slow
def test_a_killed_and_resumed_run_has_one_history_equal_to_metrics_csv(tmp_path, cifar10_root):
    run = tmp_path / "run"
    args = [*ARGS, f"data.root={cifar10_root}", f"hydra.run.dir={run}"]
    kill_at_first_checkpoint(*args, run=run)
    run_train(*args)
    files = sorted(run.rglob("run-*.wandb"), key=lambda f: f.stat().st_mtime)
    assert len(files) == 2, files
    seen: dict[int, dict] = {}
    for f in files:
        history = summarize(f)["history"]
        steps = [h["_step"] for h in history]
        assert steps == sorted(set(steps)) and all(h["_step"] == h["trainer/global_step"] for h in history)
        for h in history:
            seen.setdefault(h["_step"], h)  # what a server that drops steps it has seen keeps
    expected = by_step(read_rows(run / "metrics.csv"))
    assert sorted(seen) == sorted(expected)
    for step, row in expected.items():
        for key, value in row.items():
            if key != "step":
                assert seen[step][key] == pytest.approx(value, rel=1e-6), (step, key)
