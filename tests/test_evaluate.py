"""src/evaluate.py on the project's own run directories: sweep directories named after overrides ('=' and all),
and CIFAR runs (their test set, whole), whose evaluation of final.ckpt is the run's own last test row."""
import json
import shutil
import subprocess

import pytest
from helpers.train import FAST, run_entry, run_train

from deepres.evaluate import evaluate
from deepres.runs.metrics_csv import read_rows


@pytest.fixture(scope="module")
def cifar_run(cifar10_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("sweep") / "model.depth=8,seed=3"  # named as a sweep names its runs
    # the directory quoted for Hydra's override grammar ('=' and ',')
    run_train(*FAST, "trainer.max_steps=12", "seed=3", f"data.root={cifar10_root}", f"hydra.run.dir='{run}'")
    return run


def evaluate_cli(*args: str) -> subprocess.CompletedProcess:
    return run_entry("evaluate.py", *args)


def test_a_cifar_run_evaluates_to_its_own_last_test_row(cifar_run, cifar10_root):
    result = evaluate(cifar_run, ["eval.mode=center", f"data.root={cifar10_root}"])
    last = [row for row in read_rows(cifar_run / "metrics.csv") if "test/error" in row][-1]
    assert result["step"] == last["step"] == 12 and result["checkpoint"].endswith("final.ckpt")
    assert result["test/error"] == pytest.approx(last["test/error"], abs=1e-3)
    assert result["test/loss"] == pytest.approx(last["test/loss"], rel=1e-3)
    assert result["images"] == 320 and result["skipped"] == []  # the generated test set
    assert json.loads((cifar_run / "eval_center.json").read_text()) == result


def test_run_directories_named_after_overrides_are_runs_not_overrides(cifar_run, cifar10_root, tmp_path):
    second = tmp_path / "model.depth=8,seed=4"
    shutil.copytree(cifar_run, second)
    proc = evaluate_cli(cifar_run, second, f"data.root={cifar10_root}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("center top-1 error") == 2 and str(second) in proc.stdout
    assert (second / "eval_center.json").exists()


def test_what_evaluate_cannot_evaluate_is_named(cifar_run, tmp_path):
    proc = evaluate_cli(tmp_path / "model.depth=8,seed=9", "eval.mode=center")
    assert proc.returncode == 2 and "no such run directory" in proc.stderr and "seed=9" in proc.stderr
    proc = evaluate_cli(cifar_run, "eval.mode=ten_crop")
    assert proc.returncode == 2 and "eval.mode=center" in proc.stderr and "Traceback" not in proc.stderr
