"""Issue 7.3: a NaN or infinite loss stops the run at once, names the iteration and the last finite loss, keeps
the last good checkpoint, and marks the job failed in the sweep summary."""
import csv
import json
import math
import re

import torch
from helpers.train import FAST, run_train

DIVERGES = ["optimizer.lr=1e6", "checkpoint.every_n_steps=2", "trainer.max_steps=200"]


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, cifar10_root):
    proc = run_train(*FAST, *DIVERGES, f"data.root={cifar10_root}", f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    message = next(line for line in proc.stderr.splitlines() if line.startswith("error: "))
    assert "diverged" in message and "last finite loss" in message
    step = int(re.search(r"iteration (\d+)", message).group(1))
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "failed" and "diverged" in status["reason"]
    assert f"stopped: Diverged: {message.removeprefix('error: ')}" in (tmp_path / "train.log").read_text()
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] < step
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "checkpoints" / "final.ckpt").exists()
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert all(math.isfinite(float(r["train/loss"])) for r in rows if r["train/loss"])


def test_a_diverging_job_fails_alone_in_its_sweep(tmp_path, cifar10_root):
    proc = run_train("-m", "optimizer.lr=0.1,1e6", *FAST, "trainer.max_steps=10", f"data.root={cifar10_root}",
                     f"hydra.sweep.dir={tmp_path}", check=False)
    assert proc.returncode == 1
    rows = sorted(csv.DictReader(open(tmp_path / "summary.csv")), key=lambda r: r["status"])
    assert [r["status"] for r in rows] == ["completed", "failed"]
    assert "optimizer.lr=0.1" in rows[0]["overrides"] and "diverged" in rows[1]["reason"]
