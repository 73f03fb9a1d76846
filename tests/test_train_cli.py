"""src/train.py run for real, as users run it: one run, re-runs, kill -9 and resume, seeds."""

import subprocess
import sys

import pytest
from helpers.train import FAST, ROOT, run_train, train_cmd

from deepres.runs.metrics_csv import read_rows


def test_single_run_writes_metrics_checkpoints_and_status(cifar10_root, tmp_path):
    run = tmp_path / "run"
    proc = run_train(*FAST, "trainer.max_steps=30", f"data.root={cifar10_root}", f"hydra.run.dir={run}")
    assert f"{run}: resnet-8, model.depth=8" in proc.stdout  # its overrides are printed at start
    rows = read_rows(run / "metrics.csv")
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "step" and {"train/loss", "train/error", "test/loss", "test/error", "lr"} <= set(header)
    assert [r["step"] for r in rows if "train/loss" in r] == [5, 10, 15, 20, 25, 30]
    assert [r["step"] for r in rows if "test/error" in r] == [10, 20, 30]
    wrong = [r["train/error"] * 160 / 100 for r in rows if "train/error" in r]  # of a row's 5 x 32 images
    assert all(0 <= n <= 160 and abs(n - round(n)) < 1e-6 for n in wrong), wrong
    assert rows[0]["lr"] == 0.1 and rows[-1]["lr"] == 0.1 * 0.1 ** 2  # /10 at 15 and 22 of 30 iterations
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"last.ckpt", "final.ckpt"}
    status = __import__("json").loads((run / "status.json").read_text())
    assert status["status"] == "completed" and status["steps"] == 30 and status["test/error"] == rows[-1]["test/error"]


def test_val_split_logs_val_and_test(cifar10_root, tmp_path):
    run_train(*FAST, "trainer.max_steps=10", "data.val_size=256", f"data.root={cifar10_root}",
              f"hydra.run.dir={tmp_path}")
    last = read_rows(tmp_path / "metrics.csv")[-1]
    assert {"val/loss", "val/error", "test/loss", "test/error"} <= set(last)


def test_rerunning_a_finished_run_changes_nothing(cifar10_root, tmp_path):
    args = (*FAST, "trainer.max_steps=10", f"data.root={cifar10_root}", f"hydra.run.dir={tmp_path}")
    run_train(*args)
    def snapshot():
        return (tmp_path / "metrics.csv").read_bytes(), (tmp_path / "checkpoints" / "final.ckpt").stat().st_mtime

    before = snapshot()
    proc = run_train(*args, "hydra/launcher=slurm")  # without -m Hydra uses no launcher: the run says so
    assert "already finished" in proc.stderr + proc.stdout
    assert snapshot() == before
    assert "hydra/launcher=slurm does nothing without -m: Hydra launches only multiruns" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_seed_makes_a_cpu_run_repeatable(cifar10_root, tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        run_train(*FAST, "trainer.max_steps=10", f"seed={seed}", f"data.root={cifar10_root}",
                  f"hydra.run.dir={tmp_path / name}")
    csv = {name: (tmp_path / name / "metrics.csv").read_text() for name in "abc"}
    assert csv["a"] == csv["b"] != csv["c"]


def test_busy_run_directory_is_refused(cifar10_root, tmp_path):
    from deepres.runs.run_dir import RunDir

    holder = RunDir(tmp_path)
    holder.lock()
    proc = run_train(*FAST, "trainer.max_steps=5", f"data.root={cifar10_root}", f"hydra.run.dir={tmp_path}",
                     check=False)
    holder.unlock()
    assert proc.returncode == 2 and "in use by pid" in proc.stderr


def test_bad_depth_is_one_clear_line_and_exit_2(cifar10_root, tmp_path):
    proc = run_train("model.depth=21", f"data.root={cifar10_root}", f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode == 2
    assert "model.depth=21" in proc.stderr and "20, 32, 44, 56, 110, 1202" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 3


def test_missing_data_is_a_clear_error(tmp_path):
    proc = run_train(*FAST, f"data.root={tmp_path / 'none'}", "data.download=false",
                     f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode == 2 and "cifar-10-batches-py" in proc.stderr and "Traceback" not in proc.stderr


def test_help_and_config_printing_load_neither_torch_nor_lightning():
    """`--help` took 19 s on a busy 2-core machine, nearly all of it importing torch and Lightning for nothing."""
    for flag in ("--help", "--cfg=job"):
        proc = subprocess.run([sys.executable, "-X", "importtime", *train_cmd(flag)[1:]], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        loaded = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
        assert "hydra" in loaded and not loaded & {"torch", "lightning", "wandb", "matplotlib"}, flag


def test_evaluate_help_says_how_to_call_it_without_loading_torch():
    """`src/evaluate.py --help` answered "no such run directory: --help"."""
    for flag in ("--help", "-h"):
        proc = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "src" / "evaluate.py"), flag],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and proc.stdout.startswith("Evaluate trained runs"), proc.stderr[-2000:]
        assert "eval.mode=center|ten_crop|multi_scale" in proc.stdout and "model.weights=PATH" in proc.stdout
        loaded = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
        assert not loaded & {"torch", "lightning", "deepres"}, flag
