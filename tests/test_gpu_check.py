"""The prepared GPU commands cannot rot: the GPU check's every part and make gpu-fidelity DRY=1 run here, with tiny
settings on the CPU, into the folders a GPU run writes; a part that hangs or fails costs its slot only.

The check's parts run as children of the suite's zygote (their own processes, without the start-up of torch and
Lightning that each part would pay); make gpu-check runs one part through make as a user runs it."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.train import ROOT
from helpers.zygote import ZYGOTE

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402


def make(target: str, out, *variables: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARGS", "OUT")}
    return subprocess.run(["make", target, "DRY=1", f"GPU_OUT={out}", f"PYTHON={sys.executable}", *variables],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)


def forked(argv: list[str], env: dict, timeout: float | None) -> subprocess.CompletedProcess:
    return ZYGOTE.run(argv, cwd=ROOT, env=env, timeout=timeout)


@pytest.mark.slow
def test_the_gpu_check_runs_every_part_and_writes_one_folder(tmp_path):
    folder = tmp_path / "check"
    outcomes = gpu_check.check(folder, dry=True, budget=gpu_check.DRY_BUDGET, parts=gpu_check.PARTS, run=forked)
    assert all(o.status == "ok" for o in outcomes), [(o.name, o.status, o.output[-2000:]) for o in outcomes]
    assert sorted(p.name for p in folder.iterdir()) == ["report.md", "results.json", "steps.csv"]
    results = json.loads((folder / "results.json").read_text())
    assert [p["name"] for p in results["parts"]] == [p.name for p in gpu_check.PARTS]
    assert all(p["status"] == "ok" for p in results["parts"]) and results["dry"]
    report = (folder / "report.md").read_text()
    assert "Machine:" in report and "commit" in report and "Command: `" in report
    for part in gpu_check.PARTS:
        assert f"## {part.name}: ok" in report
    steps = list(csv.DictReader(open(folder / "steps.csv")))
    assert {(r["net"], r["loop"]) for r in steps} >= {("ResNet-8", "lightning graph"), ("ResNet-20", "plain graph")}
    assert "| ResNet-8 | fp32 | lightning eager |" in report and "pack of 2" in report and "ResNet-18" in report
    assert "| ResNet-18 Faster R-CNN | train |" in report and "| VGG-16 Faster R-CNN | inference |" in report


@pytest.mark.slow
def test_make_gpu_check_runs_the_parts_it_is_given(tmp_path):
    proc = make("gpu-check", tmp_path, "GPU_PARTS=requires-cuda-tests")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "check" / "results.json").read_text())
    assert [(p["name"], p["status"]) for p in results["parts"]] == [("requires-cuda-tests", "ok")] and results["dry"]
    assert "7 skipped" in results["parts"][0]["output"]  # no GPU here: the requires_cuda tests were collected


@pytest.mark.slow
def test_a_part_that_hangs_or_fails_costs_its_slot_only(tmp_path):
    parts = [gpu_check.Part("hangs", 3, ["-c", "import time; time.sleep(60)"], []),
             gpu_check.Part("fails", 10, ["-c", "raise SystemExit('no GPU today')"], []),
             gpu_check.Part("works", 10, ["-c", "print('fine')"], [])]
    outcomes = gpu_check.check(tmp_path, dry=False, budget=60, parts=parts, run=forked)
    assert [(o.name, o.status) for o in outcomes] == [("hangs", "over 3 s"), ("fails", "failed (exit 1)"),
                                                      ("works", "ok")]
    assert outcomes[0].seconds < 10
    report = (tmp_path / "report.md").read_text()
    assert "| hangs | over 3 s |" in report and "no GPU today" in report
    outcomes = gpu_check.check(tmp_path, dry=False, budget=6, parts=parts, run=forked)  # the overall budget spent
    assert [o.status for o in outcomes] == ["over 3 s"] + ["skipped (overall budget spent)"] * 2


@pytest.mark.slow
def test_the_fidelity_run_trains_the_five_runs_and_reports_them(tmp_path):
    proc = make("gpu-fidelity", tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    folder = tmp_path / "fidelity"
    names = ["plain-20", "plain-56", "resnet-20", "resnet-20-fp32", "resnet-56"]  # ResNet-20 in fp32 beside bf16
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["report.md", "results.json", "sweep.log", *(f"{n}.metrics.csv" for n in names)])
    runs = json.loads((folder / "results.json").read_text())["runs"]
    assert sorted(r["label"] for r in runs) == names
    assert all(r["status"] == "completed" and r["steps"] == 4 for r in runs)
    for r in runs:  # each figure is its run's last test row, and that row is in the copied metrics.csv
        last = [row for row in csv.DictReader(open(folder / f"{r['label']}.metrics.csv")) if row["test/error"]][-1]
        assert float(last["test/error"]) == r["test/error"] and int(last["step"]) == 4
    assert "| resnet-20 | completed | 4 |" in (folder / "report.md").read_text()


@pytest.mark.slow
def test_fidelity_runs_that_outlast_the_budget_stop_resumable_and_report_how_far_they_got(tmp_path):
    # runs far too long for the budget, and a budget far longer than their start: each is mid-training at the stop
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_fidelity.py"), "--out", str(tmp_path), "--dry",
               "--budget", "90", "--grace", "300", "trainer.max_steps=100000"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert len(runs) == 5 and all(r["status"] == "interrupted" and r["reason"] == "stopped by SIGTERM" for r in runs)
    assert all((Path(r["dir"]) / "checkpoints" / "last.ckpt").exists() for r in runs)
    assert "| resnet-20 | interrupted |" in (tmp_path / "report.md").read_text()


def test_the_requires_cuda_tests_are_all_in_the_file_the_gpu_check_runs():
    marker = "pytest.mark." + "requires_cuda"  # spelled apart: this file does not carry the marker
    marked = [p.name for p in (ROOT / "tests").glob("test_*.py") if marker in p.read_text()]
    assert marked == ["test_gpu.py"]
    assert "tests/test_gpu.py" in next(p for p in gpu_check.PARTS if p.name == "requires-cuda-tests").args
