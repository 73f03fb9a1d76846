"""Detection is a task beside classification on the same run machinery: a detection run is a run (its directory,
status.json, metrics.csv, refusals before anything exists, exact resume after kill -9), and no module of the
training core imports the detection task (training/task.py: the core takes tasks from the config)."""
import ast
import json
from pathlib import Path

import pytest
from helpers.config import compose_config
from helpers.detection import TINY, map50
from helpers.train import ROOT, run_entry, run_train
from test_resume import assert_kill_9_and_resume_is_exact

from deepres.detection import voc
from deepres.detection.generated import write_voc
from deepres.detection.task import Detection
from deepres.runs.metrics_csv import read_rows

CORE = ["src/train.py", "src/deepres/*.py", "src/deepres/training/*.py", "src/deepres/runs/*.py",
        "src/deepres/packing/*.py", "src/deepres/models/*.py", "src/deepres/data/*.py", "src/hydra_plugins/**/*.py"]


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_module_of_the_training_core_imports_the_detection_task():
    files = [path for pattern in CORE for path in ROOT.glob(pattern)]
    assert len(files) > 40 and ROOT / "src/deepres/training/fit.py" in files
    offenders = {str(p.relative_to(ROOT)): sorted(n for n in imports(p) if n.startswith("deepres.detection"))
                 for p in files}
    assert {path: names for path, names in offenders.items() if names} == {}
    # the test can see an import: the detection task itself imports the core
    assert "deepres.training.bookkeeping" in imports(ROOT / "src/deepres/detection/task.py")


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("voc")
    write_voc(root, images=10)
    return root


def test_the_checked_annotations_are_the_runs_read_once(voc_root, monkeypatch):
    """The check before a run reads every annotation (naming a bad file before anything exists); the run's
    DataModule is the one checked, so COCO's large train JSON is not parsed twice. Another config gets its own."""
    reads = []
    monkeypatch.setattr(voc, "read_sets", lambda *args, read=voc.read_sets: reads.append(args[1]) or read(*args))
    cfg, task = compose_config(*TINY, f"data.root={voc_root}"), Detection()
    task.check([cfg])
    datamodule = task.datamodule([cfg])
    datamodule.setup("fit")
    assert reads == [["07+12"], ["07test"]] and len(datamodule.train_dataloader().dataset.images) > 0
    other = compose_config(*TINY, f"data.root={voc_root}", "data.test_set=12test")
    assert task.datamodule([other]) is not datamodule


@pytest.mark.parametrize("bad, says", [
    (["model.backbone=alexnet"], "model.backbone='alexnet' is not a detection backbone; valid: resnet"),
    (["model.depth=19"], "model.depth=19 is not an ImageNet depth of Table 1"),
    (["+model.foo=1"], "model.foo is not a key of the detector"),
    (["data.test_set=08test"], "08test"),
    (["data.root=NOWHERE"], "NOWHERE"),
], ids=["backbone", "depth", "key", "test-set", "no-data"])
def test_a_refused_detection_run_says_why_in_one_paragraph_and_creates_nothing(voc_root, tmp_path, bad, says):
    bad = [o.replace("NOWHERE", str(tmp_path / "nowhere")) for o in bad]
    proc = run_train(*TINY, f"data.root={voc_root}", *bad, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
                     check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert says.replace("NOWHERE", str(tmp_path / "nowhere")) in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_a_run_shorter_than_its_log_interval_checks_the_losses_it_made(voc_root, tmp_path):
    """Three iterations, rows every five: the end's row checks iterations 1-3 (each in its slot of the ring; a slot
    one off read an unwritten NaN as iteration 1's loss and failed the run)."""
    run_train(*TINY, f"data.root={voc_root}", "trainer.max_steps=3", "trainer.val_check_interval=3",
              "trainer.log_every_n_steps=5", f"hydra.run.dir={tmp_path}")
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "completed"
    assert [r["step"] for r in read_rows(tmp_path / "metrics.csv") if "train/loss" in r] == [3]


@pytest.mark.slow
def test_a_detection_run_is_a_run_and_resumes_exactly_after_kill_9(voc_root, tmp_path):
    """Its status.json and metrics.csv (the four losses, the lr, VOC 2007's mAP and per-class APs), and a run killed
    at its first checkpoint ends with the uninterrupted run's rows and weights (bitwise on CPU)."""
    args = [*TINY, f"data.root={voc_root}", "trainer.max_steps=8", "trainer.val_check_interval=4",
            "checkpoint.every_n_steps=4"]
    run_train(*args, f"hydra.run.dir={tmp_path / 'whole'}")
    status = json.loads((tmp_path / "whole" / "status.json").read_text())
    assert status["status"] == "completed" and status["steps"] == 8 and status["name"] == "resnet-18"
    rows = read_rows(tmp_path / "whole" / "metrics.csv")
    assert [r["step"] for r in rows if "train/loss" in r] == [2, 4, 6, 8]
    assert [r["step"] for r in rows if "test/mAP50" in r] == [4, 8]
    last = rows[-1]
    assert status["test/mAP50"] == last["test/mAP50"] and 0 <= last["test/mAP50"] <= 100
    assert sum(key.startswith("test/AP50/") for key in last) == 20
    parts = [last[f"train/{name}"] for name in ("loss_classifier", "loss_box_reg", "loss_objectness",
                                                "loss_rpn_box_reg")]
    assert last["train/loss"] == pytest.approx(sum(parts)) and last["lr"] == pytest.approx(0.0001)  # from 6 of 8
    assert_kill_9_and_resume_is_exact(args, tmp_path / "whole", tmp_path / "killed")



def test_src_evaluate_scores_a_detection_run_as_its_training_did_and_writes_server_files(tmp_path):
    """src/evaluate.py RUN_DIR on a detection run: the task's own evaluation of final.ckpt, its last test row again
    (a one-class set at 192-256 px, where even four iterations score above 0); with data.test_set=12test, the
    detections for VOC's server under the run; a net that does not fit the checkpoint refused in one paragraph."""
    voc = write_voc(tmp_path / "voc", images=10, classes=1)
    run = tmp_path / "run"
    run_train(*TINY, "model.min_size=192", "model.max_size=256", "trainer.max_steps=4",
              "trainer.val_check_interval=4", f"data.root={voc}", f"hydra.run.dir={run}")
    last = read_rows(run / "metrics.csv")[-1]
    proc = run_entry("evaluate.py", run)
    assert proc.returncode == 0 and f"{run}: 07test mAP50 " in proc.stdout, proc.stderr
    result = json.loads((run / "eval_07test.json").read_text())
    assert result["step"] == 4 and result["checkpoint"].endswith("final.ckpt") and last["test/mAP50"] > 0
    assert {k: v for k, v in result.items() if k.startswith("test/")} == pytest.approx(
        {k: v for k, v in last.items() if k.startswith("test/")}, abs=1e-4, nan_ok=True)  # NaN: a class not in the set

    assert run_entry("evaluate.py", run, "data.test_set=12test").returncode == 0
    files = sorted((run / "voc2012_test" / "results" / "VOC2012" / "Main").iterdir())
    assert len(files) == 20 and sum(len(f.read_text().splitlines()) for f in files) > 0
    assert json.loads((run / "eval_12test.json").read_text())["test/detections"] > 0

    proc = run_entry("evaluate.py", run, "model.depth=34")
    assert proc.returncode == 2 and "final.ckpt does not fit the net" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# A short run from random weights, tuned on this set (mAP50 at 160 iterations, seeds 0-5: 35.4, 46.0, 25.4, 25.7,
# 40.5, 37.0; at 120: 9.1-27): one class; images at 192-256 pixels, so an object spans several cells of the
# stride-16 features; every stage trained, at a higher lr than fine-tuning's 0.001 until the last 8 iterations;
# 4 RoIs an image (conv5_x per RoI is most of an iteration's cost).
LEARN = ["model.min_size=192", "model.max_size=256", "model.frozen_stages=0", "model.box_batch_size_per_image=4",
         "optimizer.lr=0.01", "schedule.milestones=[0.95]", "trainer.max_steps=160", "trainer.val_check_interval=160",
         "trainer.log_every_n_steps=40", "checkpoint.every_n_steps=1000"]


@pytest.mark.slow
def test_a_short_run_of_a_small_backbone_learns_the_generated_objects(tmp_path):
    """ResNet-18 from random weights on generated VOC (one class): VOC 2007's mAP50 far above the same net's
    untrained (chance: a few boxes of random proposals overlap objects), and above 9.1, what one right detection per
    class at the top of its list scores."""
    root = write_voc(tmp_path / "voc", images=30, classes=1)
    args = [*TINY, *LEARN, f"data.root={root}"]
    untrained = map50(*args)
    run_train(*args, f"hydra.run.dir={tmp_path / 'run'}", timeout=600)
    trained = json.loads((tmp_path / "run" / "status.json").read_text())["test/mAP50"]
    assert untrained < 5 and trained > 15, (untrained, trained)  # here: 1.8 and 41.2
