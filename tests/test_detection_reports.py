"""Tables 7 and 8 on hand-made Faster R-CNN run directories (VOC 07 test, VOC 12 test for the server, COCO); the
detection and Table 5 sweeps as Hydra composes them and their points; the make targets that run them."""
import csv
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path
from statistics import mean, stdev

import pytest
from helpers.config import compose_config
from helpers.train import ROOT
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class
from omegaconf import OmegaConf

from deepres.detection.voc import VOC_CLASSES
from deepres.detection.voc_submission import comp4_results_path
from deepres.errors import UserError
from deepres.report import write
from deepres.report.detection import table7, table8
from deepres.report.runs import VGG_16, Net, Run, Sweep

VGG = ["model.backbone=vgg16", "model.weights_format=torchvision"]  # the sweeps' points
RESNET_101 = ["model.backbone=resnet"]  # the sweeps' model.depth is 101
PLAIN_101 = RESNET_101 + ["model.residual=false"]
TEST_12 = ["data.train_sets=07++12", "data.test_set=12test"]


def write_run(sweep: Path, point: list[str], maps: list[float], data: str = "voc", seed: int = 0,
              status: str = "completed", coco_map: list[float] | None = None) -> Path:
    """A detection run directory as train.py leaves it for the point's overrides: config, overrides, status and
    metrics.csv (training rows every 50 iterations, an evaluation every 100 with the given mAP50s; for VOC each
    class's AP50, for COCO `coco_map` as test/mAP; a 12test run has no mAP: give maps=[] and write comp4 files)."""
    overrides = point + [f"seed={seed}"]
    run = sweep / ",".join(sorted(overrides))
    (run / ".hydra").mkdir(parents=True)
    keys = dict(o.split("=", 1) for o in overrides)
    model = {"_target_": "deepres.detection.model.faster_rcnn", "backbone": keys["model.backbone"],
             "depth": int(keys.get("model.depth", 101)), "residual": keys.get("model.residual", "true") == "true",
             "shortcut": "B", "weights": None, "weights_format": keys.get("model.weights_format", "deepres")}
    sets = {"train_sets": keys.get("data.train_sets", "07+12"), "test_set": keys.get("data.test_set", "07test")} \
        if data == "voc" else {"train_sets": ["train2014"], "test_set": "val2014"}
    steps = 100 * max(1, len(maps))
    OmegaConf.save({"model": model, "data": {"name": data, "batch_size": 1 if data == "voc" else 8, **sets},
                    "trainer": {"max_steps": steps}, "seed": seed, "name": "x"}, run / ".hydra" / "config.yaml")
    OmegaConf.save(overrides + ["+sweep=x", "data.root=elsewhere"], run / ".hydra" / "overrides.yaml")
    exclude = {"hydra": {"job": {"config": {"override_dirname": {"exclude_keys": ["data.root", "sweep"]}}}}}
    OmegaConf.save(exclude, run / ".hydra" / "hydra.yaml")
    (run / "status.json").write_text(json.dumps({"status": status}))
    rows = [{"step": step, "train/loss": 1.0 / step, "lr": 0.001} for step in range(50, steps + 1, 50)]
    for i, value in enumerate(maps):
        row = rows[2 * i + 1]
        row["test/mAP50"] = value
        if data == "coco":
            row["test/mAP"] = coco_map[i]
        else:
            row.update({f"test/AP50/{name}": value for name in VOC_CLASSES})
    with open(run / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows(rows)
    return run


def write_comp4(run: Path) -> Path:
    """The server's files as the detector writes them into <run>/voc2012_test; their folder."""
    for name in VOC_CLASSES:
        path = comp4_results_path(run / "voc2012_test", name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("2008_000001 0.900000 1.0 1.0 50.0 60.0\n")
    return path.parent


def markdown_rows(text: str) -> dict[str, list[str]]:
    """A Markdown table as {first cell: the other cells}."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}


@pytest.fixture
def voc_sweep(tmp_path) -> Path:
    """VGG-16 and ResNet-101 on VOC 07 test (ResNet-101 with two seeds), ResNet-101 on 12 test with its comp4 files,
    VGG-16's 12 test run failed, and a plain-101 run on 07 test."""
    sweep = tmp_path / "table7"
    write_run(sweep, VGG, [40.0, 70.1, 71.5])
    write_run(sweep, RESNET_101, [50.0, 77.0], seed=0)
    write_run(sweep, RESNET_101, [50.0, 75.0], seed=1)
    write_comp4(write_run(sweep, RESNET_101 + TEST_12, []))
    write_run(sweep, VGG + TEST_12, [], status="failed")
    write_run(sweep, PLAIN_101, [30.0, 60.25])
    return sweep


# ---- runs ------------------------------------------------------------------------------------------------------

def test_a_detector_run_reads_as_its_backbone_and_the_backbone_is_not_its_setting(voc_sweep):
    runs = {run.net.label(shortcut=True): run for run in Sweep(voc_sweep).runs if run.config.data.test_set == "07test"}
    assert set(runs) == {"VGG-16", "ResNet-101 B", "plain-101"}
    assert runs["VGG-16"].net == VGG_16 and runs["ResNet-101 B"].net == Net(True, 101, "B")
    # a VGG-16 detector's config keeps the model's depth 101 and residual true: they name no VGG
    assert runs["VGG-16"].config.model.depth == 101 and runs["VGG-16"].config.model.residual
    assert {run.setting for run in runs.values()} == {()}  # backbone, depth, weights format: the net, not a setting
    assert Run(next(voc_sweep.glob("*test_set=12test*vgg16*"))).setting == tuple(sorted(TEST_12))


def test_classification_nets_keep_their_labels_and_order():
    assert [n.label(shortcut=True) for n in sorted([Net(True, 34, "B"), Net(False, 34), VGG_16, Net(True, 18, "A")])] \
        == ["VGG-16", "plain-34", "ResNet-18 A", "ResNet-34 B"]
    assert Net(True, 56, "A") == Net(True, 56, "A", "resnet") and Net(False, 16).label() == "plain-16"


# ---- Table 7 -----------------------------------------------------------------------------------------------------

def test_table7_compares_the_final_voc07_map_with_the_paper_and_names_the_server_files(voc_sweep):
    text = table7(Sweep(voc_sweep))
    rows = markdown_rows(text)
    assert list(rows) == ["VGG-16", "ResNet-101", "plain-101"]  # the paper's rows, then the sweep's others
    # VGG-16: the final iterate 71.5, not the best; its 12 test run failed
    assert rows["VGG-16"] == ["300", "1", "71.5", "73.2", "-1.7", "—", "0", "not completed", "70.4"]
    resnet = rows["ResNet-101"]
    assert resnet[:6] == ["200", "2", f"77.0 ({mean([77.0, 75.0]):.1f}±{stdev([77.0, 75.0]):.1f})", "76.4", "-0.4",
                          "100"]
    folder = voc_sweep / "data.test_set=12test,data.train_sets=07++12,model.backbone=resnet,seed=0" / "voc2012_test" \
        / "results" / "VOC2012" / "Main"
    assert resnet[6:] == ["1", f"server: {folder}", "73.8"]
    assert rows["plain-101"] == ["200", "1", "60.2", "—", "—", "—", "0", "not run", "—"]  # 60.25 rounds to even
    assert f"VOC 07 test runs ({voc_sweep}): trainer.max_steps=300, data.batch_size=1; overrides besides the nets " \
           "and seeds: none." in text
    assert "VOC 12 test runs" in text and "data.test_set=12test data.train_sets=07++12." in text
    assert "Not counted, not completed: data.test_set=12test,data.train_sets=07++12,model.backbone=vgg16," \
           "model.weights_format=torchvision,seed=0 (failed, step 100)." in text


def test_table7_says_when_a_server_run_wrote_no_files_and_when_a_net_is_not_run(tmp_path):
    write_run(tmp_path, VGG + TEST_12, [])
    run = tmp_path / ",".join(sorted(VGG + TEST_12 + ["seed=0"]))
    rows = markdown_rows(table7(Sweep(tmp_path)))
    assert rows["VGG-16"][1:] == ["0", "not run", "73.2", "—", "100", "1", f"server: no comp4 files in {run}", "70.4"]
    assert rows["ResNet-101"][2] == rows["ResNet-101"][7] == "not run"


def test_table7_refuses_a_sweep_without_voc_runs_or_with_mixed_settings(tmp_path):
    write_run(tmp_path / "coco", VGG, [30.0], data="coco", coco_map=[15.0])
    with pytest.raises(UserError, match=r"holds no runs of Table 7 \(Faster R-CNN on PASCAL VOC: experiment="
                                        r"voc_faster_rcnn\); it holds VGG-16 on coco\."):
        table7(Sweep(tmp_path / "coco"))
    write_run(tmp_path / "mixed", VGG, [30.0])
    write_run(tmp_path / "mixed", RESNET_101 + ["trainer.max_steps=400"], [30.0])
    with pytest.raises(UserError, match=r"runs of VOC 2007 test with different settings"):
        table7(Sweep(tmp_path / "mixed"))


# ---- Table 8 -----------------------------------------------------------------------------------------------------

def test_table8_compares_both_maps_and_the_relative_gain(tmp_path):
    write_run(tmp_path, VGG, [30.0, 40.0], data="coco", coco_map=[15.0, 20.0])
    write_run(tmp_path, RESNET_101, [30.0, 50.0], data="coco", coco_map=[15.0, 26.0])
    text = table8(Sweep(tmp_path))
    rows = markdown_rows(text)
    assert rows == {"VGG-16": ["200", "1", "40.0", "41.5", "-1.5", "20.0", "21.2", "-1.2"],
                    "ResNet-101": ["200", "1", "50.0", "48.4", "+1.6", "26.0", "27.2", "-1.2"]}
    assert "Relative gain of ResNet-101 over VGG-16 in mAP@[.5, .95]: ours 1.30 (26.0 / 20.0, +30%); the paper's " \
           "1.28 (27.2 / 21.2), its \"28% relative improvement\"." in text
    assert f"Runs ({tmp_path}): trainer.max_steps=200, data.batch_size=8;" in text
    assert "COCO's evaluator; ours: scored so on val2014." in text


@pytest.mark.parametrize(("vgg_map", "gain"), [(None, "ours needs completed VGG-16 and ResNet-101 runs"),
                                               (0.0, "ours undefined (VGG-16's is 0.0)")])
def test_table8_gain_needs_both_nets_and_a_positive_vgg_map(tmp_path, vgg_map, gain):
    write_run(tmp_path, RESNET_101, [50.0], data="coco", coco_map=[26.0])
    if vgg_map is not None:
        write_run(tmp_path, VGG, [1.0], data="coco", coco_map=[vgg_map])
    text = table8(Sweep(tmp_path))
    assert f"Relative gain of ResNet-101 over VGG-16 in mAP@[.5, .95]: {gain};" in text
    assert markdown_rows(text)["VGG-16"][5] == ("0.0" if vgg_map is not None else "not run")  # its mAP@[.5, .95]


# ---- the command line --------------------------------------------------------------------------------------------

def test_report_cli_writes_table7_and_table8(voc_sweep, monkeypatch, capsys):
    write_run(voc_sweep, RESNET_101 + ["data=coco"], [45.0], data="coco", coco_map=[25.0])
    monkeypatch.setattr(sys, "argv", ["report.py", str(voc_sweep), "table7", "table8"])
    runpy.run_path(str(ROOT / "src" / "report.py"), run_name="__main__")
    assert capsys.readouterr().out.split() == [str(voc_sweep / "table7.md"), str(voc_sweep / "table8.md")]
    assert (voc_sweep / "table7.md").read_text() == table7(Sweep(voc_sweep))
    assert markdown_rows((voc_sweep / "table8.md").read_text())["ResNet-101"][2] == "45.0"
    assert write(voc_sweep, ["table7"]) == [voc_sweep / "table7.md"]


# ---- the sweeps --------------------------------------------------------------------------------------------------

def jobs(*sweeps: str) -> list[list[str]]:
    """The overrides of each job of `python src/train.py -m '+sweep=[SWEEPS]'`, as its points sweeper makes them."""
    spec = compose_config(f"+sweep=[{','.join(sweeps)}]", hydra=True).hydra.sweeper
    sweeper = get_class(spec._target_)(spec.max_batch_size, dict(spec.params or {}), [list(p) for p in spec.points])
    overrides = OverridesParser.create().parse_overrides(sweeper._parse_config())
    return [job for batch in sweeper.split_arguments(overrides, spec.max_batch_size) for job in batch]


def test_table7_sweep_trains_both_backbones_for_each_voc_column():
    assert jobs("table7") == [VGG + ["seed=0"], RESNET_101 + ["seed=0"], VGG + TEST_12 + ["seed=0"],
                              RESNET_101 + TEST_12 + ["seed=0"]]
    cfg = compose_config("+sweep=table7", hydra=True)
    assert cfg.hydra.sweep.dir == "multirun/table7" and cfg.data.name == "voc" and cfg.trainer.max_steps == 80000
    vgg = compose_config("+sweep=table7", *VGG, "backbone_weights.vgg16=vgg16.pth", "backbone_weights.resnet=r.ckpt")
    assert (vgg.name, vgg.model.weights, vgg.model.weights_format, vgg.data.test_set) == \
        ("vgg-16", "vgg16.pth", "torchvision", "07test")
    resnet = compose_config("+sweep=table7", *RESNET_101, *TEST_12, "backbone_weights.resnet=r.ckpt")
    assert (resnet.name, resnet.model.weights, resnet.model.weights_format, resnet.model.shortcut,
            resnet.data.train_sets, resnet.data.test_set) == \
        ("resnet-101", "r.ckpt", "deepres", "B", "07++12", "12test")


def test_table8_sweep_trains_both_backbones_on_coco():
    assert jobs("table8") == [VGG + ["seed=0"], RESNET_101 + ["seed=0"]]
    cfg = compose_config("+sweep=table8", *RESNET_101, hydra=True)
    assert (cfg.hydra.sweep.dir, cfg.data.name, cfg.data.batch_size, cfg.trainer.max_steps, cfg.model.weights) == \
        ("multirun/table8", "coco", 8, 320000, None)


@pytest.mark.parametrize("table", ["table7", "table8"])
def test_smoke_detection_shrinks_the_runs_and_the_resnet_but_keeps_vgg_16(table):
    assert jobs(table, "smoke_detection") == jobs(table)
    cfg = compose_config(f"+sweep=[{table},smoke_detection]", *RESNET_101)
    assert (cfg.name, cfg.model.min_size, cfg.model.max_size, cfg.data.batch_size, cfg.data.num_workers) == \
        ("resnet-18", 96, 128, 2, 0)
    assert cfg.trainer.val_check_interval == cfg.trainer.max_steps < 20 and cfg.model.weights is None
    vgg = compose_config(f"+sweep=[{table},smoke_detection]", *VGG)
    assert (vgg.name, vgg.model.backbone, vgg.model.weights_format) == ("vgg-16", "vgg16", "torchvision")


def test_table5_sweep_trains_six_nets_of_which_two_resnet_152_differ_by_seed():
    nets = [dict(o.split("=", 1) for o in job) for job in jobs("table5")]
    assert [(n["model.depth"], n["model.shortcut"], n["seed"]) for n in nets] == [
        ("34", "B", "0"), ("34", "C", "0"), ("50", "B", "0"), ("101", "B", "0"), ("152", "B", "0"), ("152", "B", "1")]
    assert {n["model.residual"] for n in nets} == {"true"}
    cfg = compose_config("+sweep=table5", "model.depth=152", "seed=1", hydra=True)
    assert (cfg.hydra.sweep.dir, cfg.data.name, cfg.seed, cfg.trainer.max_steps) == \
        ("multirun/table5", "imagenet", 1, 600000)
    smoke = compose_config("+sweep=[table5,smoke_imagenet]", "model.depth=152", "seed=1")
    assert (smoke.seed, smoke.trainer.max_steps, smoke.data.crop) == (1, 2, 32)


# ---- the make targets ------------------------------------------------------------------------------------------

def make(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARGS", "SEEDS")}
    proc = subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_make_smoke_table7_and_table8_generate_data_train_the_sweep_and_report(tmp_path):
    commands = make("-n", "smoke-table7", "smoke-table8", "PY=py", f"SMOKE_TABLE7_DIR={tmp_path}/7",
                    f"SMOKE_TABLE8_DIR={tmp_path}/8").split()
    line = " ".join(commands)
    assert line == (f"py -m deepres.detection.generated voc {tmp_path}/7/data && py src/train.py -m "
                    f"'+sweep=[table7,smoke_detection]' data.root={tmp_path}/7/data hydra.sweep.dir={tmp_path}/7 "
                    f"&& py src/report.py {tmp_path}/7 table7 "
                    f"py -m deepres.detection.generated coco {tmp_path}/8/data && py src/train.py -m "
                    f"'+sweep=[table8,smoke_detection]' data.root={tmp_path}/8/data hydra.sweep.dir={tmp_path}/8 "
                    f"'data.train_sets=[train2017]' data.test_set=val2017 && py src/report.py {tmp_path}/8 table8")


def test_make_reproduce_table5_ensembles_the_runs_of_its_folder_once(tmp_path):
    """With PY=echo the shell runs for real: the ensemble is of the directories holding a run's config (not the
    smoke's data/), and is not evaluated again while it is newer than every final.ckpt."""
    for name in ("b", "a"):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "config.yaml").write_text("seed: 0\n")
        (tmp_path / name / "checkpoints").mkdir()
        (tmp_path / name / "checkpoints" / "final.ckpt").write_text("")
    (tmp_path / "data" / "train").mkdir(parents=True)
    out = make("reproduce-table5", "PY=echo", f"TABLE5_DIR={tmp_path}", "ARGS=data.root=d").splitlines()
    evaluate = f"src/evaluate.py {tmp_path}/a {tmp_path}/b eval.ensemble=true eval.mode=multi_scale " \
               f"eval.ensemble_dir={tmp_path}"
    assert [line for line in out if not line.startswith(("echo", "if "))] == [
        f"src/train.py -m +sweep=table5 hydra.sweep.dir={tmp_path} data.root=d", evaluate,
        f"src/report.py {tmp_path} table5"]
    ensemble = tmp_path / "ensemble_multi_scale.json"
    ensemble.write_text("{}")
    os.utime(ensemble, (2e9, 2e9))  # newer than the checkpoints
    assert evaluate not in make("reproduce-table5", "PY=echo", f"TABLE5_DIR={tmp_path}").splitlines()
    assert "'+sweep=[table5,smoke_imagenet]'" in make("-n", "smoke-table5", f"SMOKE_TABLE5_DIR={tmp_path}")
