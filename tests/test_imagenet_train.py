"""ImageNet end to end: the paper's recipe for a few iterations, each test protocol, the plateau schedule, and the
config checks, on a generated class-folder set of real image files."""
import json
import math

import pytest
import torch
from helpers.config import compose_config
from helpers.train import run_train
from hydra.utils import instantiate

from deepres.data.imagenet_fake import write_image_folder
from deepres.errors import UserError
from deepres.evaluate import evaluate
from deepres.runs.metrics_csv import read_rows
from deepres.training.module import view_scores
from deepres.training.schedule import PlateauSchedule, milestone_steps
from deepres.training.validate import validate

# 32x32 crops of shorter sides in [36, 60], evaluated at 36 (and scales 32, 40): the paper's pipeline, small
TINY = ["experiment=imagenet_paper", "model.depth=18", "data.batch_size=6", "data.eval_batch_size=4",
        "data.num_workers=0", "data.crop=32", "data.scale=[36,60]", "eval.resize=36", "eval.scales=[32,40]",
        "trainer.max_steps=6", "trainer.val_check_interval=3", "trainer.log_every_n_steps=3",
        "checkpoint.every_n_steps=3", "logger=none", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("imagenet"), classes=3, train=8, val=2)


@pytest.fixture(scope="module")
def trained_run(imagenet_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    run_train(*TINY, f"data.root={imagenet_root}", f"hydra.run.dir={run}")
    return run


def test_paper_recipe_trains_and_logs_top1_and_top5(trained_run):
    rows = read_rows(trained_run / "metrics.csv")
    evaluated = [r for r in rows if "test/error" in r]
    assert [r["step"] for r in evaluated] == [3, 6]
    assert all({"test/loss", "test/top5_error"} <= set(r) for r in evaluated)
    assert evaluated[-1]["test/top5_error"] == 0  # 3 classes: the true one is always among the top 5
    assert [r["lr"] for r in rows if "lr" in r] == pytest.approx([0.01, 0.0001])  # drops at 1, 3, 4 of 6 iterations
    assert json.loads((trained_run / "status.json").read_text())["status"] == "completed"
    config = (trained_run / ".hydra" / "config.yaml").read_text()
    assert "ImageNetResNet" in config and "IterationSchedule" in config and "momentum: 0.9" in config


@pytest.mark.parametrize("mode", ["center", "ten_crop", "multi_scale"])
def test_each_test_protocol_evaluates_the_checkpoint(trained_run, imagenet_root, mode):
    result = evaluate(trained_run, [f"eval.mode={mode}", f"data.root={imagenet_root}"])
    assert json.loads((trained_run / f"eval_{mode}.json").read_text()) == result
    assert result["mode"] == mode and result["images"] == 6 and result["step"] == 6
    wrong = result["test/error"] * 6 / 100  # of the 6 validation images (the error is rounded to 4 decimals)
    assert abs(wrong - round(wrong)) < 1e-4 and result["test/top5_error"] == 0 and result["test/loss"] > 0
    assert result["checkpoint"].endswith("final.ckpt")


def test_evaluate_refuses_what_it_cannot_evaluate(tmp_path, trained_run):
    with pytest.raises(UserError, match="no .hydra/config.yaml"):
        evaluate(tmp_path, ["eval.mode=center"])
    with pytest.raises(UserError, match="eval.mod"):
        evaluate(trained_run, ["eval.mod=center"])


def test_views_average_the_softmax():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
    one = torch.randn(3, 3, 2, 2)
    torch.testing.assert_close(view_scores(net, one), net(one))
    crops = torch.randn(3, 10, 3, 2, 2)
    expected = torch.stack([net(crops[:, v]).softmax(1) for v in range(10)]).mean(0).log()
    torch.testing.assert_close(view_scores(net, crops), expected)
    scales = [torch.randn(1, 2, 3, 2, 2), torch.randn(1, 2, 3, 2, 2)]
    probs = [net(s[:, v]).softmax(1) for s in scales for v in range(2)]
    torch.testing.assert_close(view_scores(net, scales), torch.stack(probs).mean(0).log())
    assert math.isclose(view_scores(net, crops).exp().sum(1)[0].item(), 1, rel_tol=1e-5)


def plateau(**kw) -> PlateauSchedule:
    return PlateauSchedule(lr=0.1, gamma=0.1, max_steps=600000, **{"patience": 2, "threshold": 0.5, **kw})


def test_plateau_divides_by_ten_after_patience_evaluations_without_improvement():
    s = plateau()
    for step, error in [(1000, 60.0), (2000, 50.0), (3000, 49.8), (4000, 49.9)]:
        s.observe(step, {"test/error": error, "test/top5_error": 20.0})
        s.observe(step, {"train/error": 10.0})  # training rows do not count
    assert s.milestones == [4000]  # 49.8 and 49.9 do not improve 50 by more than 0.5
    assert [s.lr(k) for k in (3999, 4000, 10**5)] == pytest.approx([0.1, 0.01, 0.01])
    for step in (5000, 6000, 7000, 8000):
        s.observe(step, {"test/error": 49.9})
    assert s.milestones == [4000, 6000, 8000]
    assert s.lr(8000) == pytest.approx(1e-4)


def test_plateau_stops_at_max_drops_and_resumes_from_its_state():
    s = plateau(max_drops=1)
    for step in range(1, 8):
        s.observe(step, {"test/error": 50.0})
    assert s.milestones == [3]  # 50 is the best at step 1; steps 2 and 3 do not improve it
    resumed = plateau(max_drops=1)
    resumed.load_state_dict(s.state_dict())
    assert resumed.milestones == [3] and resumed.best == 50 and resumed.lr(3) == pytest.approx(0.01)


def test_the_plateau_rule_reads_training_images_held_out_of_training(imagenet_root, tmp_path):
    with pytest.raises(UserError, match=r"schedule.monitor=val/error .* set data.val_size=N"):
        validate(compose_config("experiment=imagenet_paper", "schedule=imagenet_plateau"))
    dm = instantiate(compose_config("experiment=imagenet_paper", f"data.root={imagenet_root}", "data.val_size=5",
                                    "data.batch_size=6").data)
    dm.setup("fit")
    paths = lambda folder: {folder.path(i) for i in range(len(folder))}  # noqa: E731
    assert len(dm.held_out) == 5 and len(dm.train) == 19 and not paths(dm.held_out) & paths(dm.train)
    again = instantiate(compose_config("experiment=imagenet_paper", f"data.root={imagenet_root}", "data.val_size=5",
                                       "data.batch_size=6", "seed=7").data)
    again.setup("fit")
    assert paths(again.held_out) == paths(dm.held_out)  # the same images for every run: data.split_seed draws them
    run_train(*TINY, "schedule=imagenet_plateau", "data.val_size=5", "schedule.patience=1", "schedule.threshold=50",
              "trainer.max_steps=9", f"data.root={imagenet_root}", f"hydra.run.dir={tmp_path}")
    rows = [r for r in read_rows(tmp_path / "metrics.csv") if "val/error" in r]
    assert [r["step"] for r in rows] == [3, 6, 9] and all("test/error" in r for r in rows)
    lrs = [r["lr"] for r in read_rows(tmp_path / "metrics.csv") if "lr" in r]
    assert lrs == pytest.approx([0.1, 0.1, 0.01])  # val/error at 6 no better than at 3 by 50 points: a plateau


@pytest.mark.parametrize("overrides, message", [
    (["experiment=imagenet_paper", "model.depth=56"], r"model.depth=56.*18, 34, 50, 101, 152"),
    (["experiment=imagenet_paper", "model.stride_on=5x5"], r"stride_on='5x5'"),
    (["model=imagenet_resnet"], r"model=imagenet_resnet does not train on data=cifar10.*data=imagenet"),
    (["data=imagenet"], r"model=cifar_resnet does not train on data=imagenet"),
])
def test_config_checks(overrides, message):
    with pytest.raises(UserError, match=message):
        validate(compose_config(*overrides))


def test_imagenet_paper_is_the_papers_recipe():
    cfg = compose_config("experiment=imagenet_paper")
    assert (cfg.data.batch_size, cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (
        256, 0.1, 0.9, 0.0001)
    assert cfg.trainer.max_steps == 600000 and cfg.schedule._target_.endswith("IterationSchedule")
    assert milestone_steps(cfg.schedule.milestones, cfg.trainer.max_steps) == [150000, 300000, 450000]  # 30 epochs
    assert cfg.schedule.warmup_from_depth is None and cfg.data.val_size == 0
    assert (cfg.data.crop, list(cfg.data.scale), cfg.eval.mode) == (224, [256, 480], "center")
    assert list(cfg.eval.scales) == [224, 256, 384, 480, 640]
    validate(cfg)


def test_bad_depth_on_the_command_line_is_one_message_and_exit_2(imagenet_root, tmp_path):
    proc = run_train("experiment=imagenet_paper", "model.depth=20", f"data.root={imagenet_root}",
                     f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode == 2 and "18, 34, 50, 101, 152" in proc.stderr and "Traceback" not in proc.stderr
