"""The ImageNet reproduce targets end to end through make, on one generated folder: make smoke-table3 (its seven nets,
10-crop), make smoke-table4 (five of them, multi-scale) and make smoke-fig4 (Table 2, Fig. 4), as make smoke-fig6
does for CIFAR (conftest.py)."""
import json
import os
import subprocess
import sys

import pytest
from helpers.train import ROOT


def make(target: str, **variables) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARGS", "SEEDS")}
    args = [f"{k}={v}" for k, v in variables.items()]
    proc = subprocess.run(["make", "-o", ".venv/.installed", target, f"PY={sys.executable}", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"make {target}: {proc.stdout[-2000:]}{proc.stderr[-3000:]}"
    return proc


def evaluated(sweep) -> dict[str, dict]:
    """{run directory name: its 10-crop evaluation}"""
    return {run.name: json.loads((run / "eval_ten_crop.json").read_text()) for run in sweep.iterdir()
            if (run / "status.json").exists()}


@pytest.mark.slow
def test_the_imagenet_smoke_targets_share_one_folder_as_the_reproduce_targets_do(tmp_path):
    """Table 3's seven nets, then Table 4 (five of them, not trained again; the folder's runs evaluated multi-scale),
    then Fig. 4 and Table 2 (two more nets): the reproduce targets share multirun/imagenet the same way."""
    make("smoke-table3", SMOKE_TABLE3_DIR=tmp_path)
    assert len(evaluated(tmp_path)) == 7
    # two iterations and final.ckpt alone (conf/sweep/smoke_imagenet.yaml): ResNet-152's checkpoint is 0.5 GB
    assert {tuple(p.name for p in run.glob("checkpoints/*")) for run in tmp_path.glob("model.*")} == {("final.ckpt",)}
    table = (tmp_path / "table3.md").read_text()
    assert all(net in table for net in ("ResNet-50", "ResNet-101", "ResNet-152"))

    table4 = make("smoke-table4", SMOKE_TABLE4_DIR=tmp_path)
    assert (table4.stdout + table4.stderr).count("already finished") == 5
    runs = {run.name: json.loads((run / "eval_multi_scale.json").read_text()) for run in tmp_path.iterdir()
            if (run / "eval_multi_scale.json").exists()}
    # make reproduce-table4 evaluates every finished run of the folder multi-scale: Table 3's seven, of which it shows 5
    assert len(runs) == 7 and all(r["mode"] == "multi_scale" and r["step"] == 2 for r in runs.values())
    table = (tmp_path / "table4.md").read_text()
    assert table.startswith("### Table 4") and "Our errors are multi-scale, as the paper's" in table
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ResNet")}
    assert set(rows) == {"ResNet-34 B", "ResNet-34 C", "ResNet-50 B", "ResNet-101 B", "ResNet-152 B"}
    assert "| 19.38 |" in rows["ResNet-152 B"] and "| 4.49 |" in rows["ResNet-152 B"]  # the paper's, beside ours

    fig4 = make("smoke-fig4", SMOKE_FIG4_DIR=tmp_path)
    assert (fig4.stdout + fig4.stderr).count("already finished") == 2  # plain-34 and ResNet-34 A: Table 3's
    runs = evaluated(tmp_path)
    assert len(runs) == 9 and all(r["mode"] == "ten_crop" and r["step"] == 2 for r in runs.values())
    assert sum("depth=18" in name for name in runs) == 2
    assert {"fig4.png", "fig4.pdf", "table2.md"} <= {p.name for p in tmp_path.iterdir()}
    assert "ResNet-34" in (tmp_path / "table2.md").read_text()


@pytest.mark.slow
def test_the_detection_smoke_targets_train_evaluate_and_report(tmp_path):
    """make smoke-table7 (VGG-16 and ResNet-18 on generated VOC, 07+12 -> 07test and 07++12 -> 12test's server
    files) and make smoke-table8 (both on generated COCO): every run completed, its mAPs in status.json, the tables
    written beside the paper's numbers."""
    voc, coco = tmp_path / "voc", tmp_path / "coco"
    make("smoke-table7", SMOKE_TABLE7_DIR=voc)
    runs = {run.name: json.loads((run / "status.json").read_text()) for run in voc.glob("*/") if run.name != "data"}
    assert len(runs) == 4 and all(status["status"] == "completed" for status in runs.values())
    scored = [status for name, status in runs.items() if "12test" not in name]
    assert len(scored) == 2 and all(0 <= status["test/mAP50"] <= 100 for status in scored)
    served = [voc / name / "voc2012_test" for name in runs if "12test" in name]
    assert all(len(list(folder.glob("results/VOC2012/Main/comp4_det_test_*.txt"))) == 20 for folder in served)
    header = (voc / "summary.csv").read_text().splitlines()[0].split(",")
    assert header[header.index("test/error") + 1] == "test/mAP50"  # the summary's columns: a detector's results too
    table7 = (voc / "table7.md").read_text()
    assert "| 73.2 |" in table7 and "| 76.4 |" in table7 and "server: " in table7 and "VGG-16" in table7

    make("smoke-table8", SMOKE_TABLE8_DIR=coco)
    runs = [json.loads(p.read_text()) for p in coco.glob("*/status.json")]
    assert len(runs) == 2 and all(r["status"] == "completed" and "test/mAP" in r and "test/mAP50" in r for r in runs)
    assert "| 41.5 |" in (coco / "table8.md").read_text()

