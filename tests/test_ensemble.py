"""Ensembles of ImageNet runs (Table 5): src/evaluate.py RUN RUN eval.ensemble=true averages the nets' softmax over
the same views of each val image, and src/report.py DIR table5 sets its top-5 error beside the paper's. The runs are
two 32 px depth-18 nets (plain and residual) with random weights, on a generated 7-class folder (top-5 can miss)."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers.config import compose_config
from helpers.imagenet import run_hooks
from hydra.utils import instantiate
from omegaconf import OmegaConf

from deepres import report
from deepres.data.imagenet_fake import write_image_folder
from deepres.ensemble import SoftmaxMean
from deepres.errors import UserError
from deepres.evaluate import evaluate, evaluate_ensemble, main
from deepres.models import construct
from deepres.report import table5
from deepres.training.module import view_scores

CLASSES = 7
TINY = ["experiment=imagenet_paper", "model.depth=18", "data.num_workers=0", "data.crop=32", "data.scale=[36,60]",
        "eval.resize=36", "eval.scales=[32,40]", "data.eval_batch_size=4", "logger=none"]


def write_run(path: Path, *overrides: str, seed: int = 0, classes: int = CLASSES) -> Path:
    """A run directory as train.py leaves it (its composed config, checkpoints/final.ckpt at iteration 5), of a net
    with random weights and BN statistics (so that each net's scores differ)."""
    cfg = compose_config(*overrides)
    (path / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, path / ".hydra" / "config.yaml")
    torch.manual_seed(seed)
    net = construct(cfg.model, classes)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2), module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 1.5), module.bias.uniform_(-0.2, 0.2)
    (path / "checkpoints").mkdir()
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "global_step": 5},
               path / "checkpoints" / "final.ckpt")
    return path


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("imagenet"), classes=CLASSES, train=1, val=1, sizes=(36, 48))


@pytest.fixture(scope="module")
def runs(imagenet_root, tmp_path_factory) -> list[Path]:
    sweep = tmp_path_factory.mktemp("sweep")
    return [write_run(sweep / "model.residual=false", *TINY, "model.residual=false", f"data.root={imagenet_root}",
                      seed=1),
            write_run(sweep / "model.residual=true", *TINY, f"data.root={imagenet_root}", seed=2)]


def nets(runs: list[Path]) -> list[torch.nn.Module]:
    out = []
    for run in runs:
        net = construct(OmegaConf.load(run / ".hydra" / "config.yaml").model, CLASSES)
        state = torch.load(run / "checkpoints" / "final.ckpt")["state_dict"]
        net.load_state_dict({k.removeprefix("net."): v for k, v in state.items()})
        out.append(net.eval())
    return out


@pytest.mark.parametrize("mode", ["ten_crop", "multi_scale"])
def test_an_ensemble_of_one_run_is_that_run(runs, tmp_path, mode):
    alone = evaluate(runs[1], [f"eval.mode={mode}"])
    ensemble = evaluate_ensemble(runs[1:], [f"eval.mode={mode}"], tmp_path)
    assert json.loads((tmp_path / f"ensemble_{mode}.json").read_text()) == ensemble
    assert ensemble["test/error"] == alone["test/error"] and ensemble["test/top5_error"] == alone["test/top5_error"]
    assert ensemble["test/loss"] == pytest.approx(alone["test/loss"], abs=2e-4)
    assert ensemble["images"] == alone["images"] == CLASSES
    assert ensemble["members"] == [{"run": str(runs[1]), "depth": 18, "residual": True, "shortcut": "B",
                                    "checkpoint": alone["checkpoint"], "step": 5}]


def test_the_ensemble_averages_each_net_s_view_averaged_softmax(runs, capsys):
    """By hand, per batch: each net's softmax averaged over the 10 crops, then over the nets; the command's error,
    top-5 error and loss are those probabilities' over the 7 val images. Its file goes beside the runs."""
    dm = instantiate(OmegaConf.merge(OmegaConf.load(runs[0] / ".hydra" / "config.yaml"),
                                     {"eval": {"mode": "ten_crop"}}).data)
    dm.setup("validate")
    probs, labels, members = [], [], nets(runs)
    with torch.no_grad():
        for batch in dm.val_dataloader()[0]:
            x, y = run_hooks(dm, batch)
            per_net = [torch.stack([net(x[:, v]).softmax(-1) for v in range(10)]).mean(0) for net in members]
            mean = torch.stack(per_net).mean(0)
            torch.testing.assert_close(view_scores(SoftmaxMean(members), x).exp(), mean)
            assert not torch.allclose(mean, per_net[0], atol=1e-3)  # the second net counts
            probs.append(mean)
            labels.append(y)
    probs, labels = torch.cat(probs), torch.cat(labels)
    assert len(labels) == CLASSES
    main([*map(str, runs), "eval.ensemble=true", "eval.mode=ten_crop"])  # src/evaluate.py's, in this process
    result = json.loads((runs[0].parent / "ensemble_ten_crop.json").read_text())
    error = 100 * (probs.argmax(1) != labels).double().mean().item()
    top5_error = 100 * (probs.topk(5).indices != labels[:, None]).all(1).double().mean().item()
    assert result["test/error"] == pytest.approx(error, abs=1e-3)
    assert result["test/top5_error"] == pytest.approx(top5_error, abs=1e-3)
    assert result["test/loss"] == pytest.approx(-probs[range(CLASSES), labels].log().mean().item(), abs=2e-4)
    assert [m["residual"] for m in result["members"]] == [False, True]
    assert capsys.readouterr().out.strip() == (f"{runs[0].parent / 'ensemble_ten_crop.json'}: ensemble of 2 runs, "
                                               f"ten_crop top-1 error {error:.2f}%, top-5 error {top5_error:.2f}% "
                                               "(7 images)")


def edited(run: Path, copy: Path, key: str, value) -> Path:
    """A copy of the run whose recorded config has key=value."""
    shutil.copytree(run, copy)
    cfg = OmegaConf.load(copy / ".hydra" / "config.yaml")
    OmegaConf.update(cfg, key, value)
    OmegaConf.save(cfg, copy / ".hydra" / "config.yaml")
    return copy


def test_runs_that_see_other_images_or_classes_are_refused(runs, imagenet_root, tmp_path):
    elsewhere = edited(runs[1], tmp_path / "elsewhere", "data.root", str(tmp_path / "other"))
    with pytest.raises(UserError, match=r"differ in data.root \(.*model.residual=false: .*; .*elsewhere: .*other\)"):
        evaluate_ensemble([runs[0], elsewhere], [], tmp_path)
    result = evaluate_ensemble([runs[0], elsewhere], [f"data.root={imagenet_root}"], tmp_path)  # one root for all
    assert result["images"] == CLASSES
    larger = edited(runs[1], tmp_path / "larger", "eval.resize", 40)
    with pytest.raises(UserError, match=r"differ in eval.resize \(.*: 36; .*larger: 40\)"):
        evaluate_ensemble([runs[0], larger], [], tmp_path)
    five = write_run(tmp_path / "five", *TINY, f"data.root={imagenet_root}", classes=5)
    with pytest.raises(UserError, match=rf"five was trained on 5 classes, but data.root={imagenet_root} holds 7"):
        evaluate_ensemble([runs[0], five], [], tmp_path)
    with pytest.raises(UserError, match="given more than once"):
        evaluate_ensemble([runs[0], runs[0].parent / ".." / runs[0].parent.name / runs[0].name], [], tmp_path)


@pytest.mark.parametrize("which, message", [
    ("one", "eval.ensemble=true averages two or more runs (got 1)"),
    ("cifar", "is a cifar10 run: eval.ensemble averages ImageNet nets"),
    ("bad", "eval.ensemble=maybe must be true or false"),
])
def test_what_cannot_be_an_ensemble_is_one_paragraph_and_exit_2(runs, tmp_path, capsys, which, message):
    cifar = tmp_path / "cifar"
    (cifar / ".hydra").mkdir(parents=True)
    OmegaConf.save(compose_config("logger=none"), cifar / ".hydra" / "config.yaml")
    args = {"one": [runs[0]], "cifar": [runs[0], cifar], "bad": runs}[which]
    with pytest.raises(SystemExit) as exit_:  # src/evaluate.py's main, in this process
        main([*map(str, args), f"eval.ensemble={'maybe' if which == 'bad' else 'true'}",
              f"eval.ensemble_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and err.count("\n") == 1 and not (tmp_path / "out").exists()


def markdown_rows(text: str) -> dict[str, dict[str, str]]:
    """A Markdown table as {first cell: {column: cell}}."""
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]
    return {cells[0]: dict(zip(lines[0], cells)) for cells in lines[2:]}


def ensemble_file(directory: Path, mode: str, top1: float, top5: float) -> None:
    members = [{"run": f"sweep/model.depth={d},seed=0", "depth": d, "residual": True, "shortcut": "B",
                "checkpoint": "x", "step": 600000} for d in (50, 152)]
    result = {"mode": mode, "test/error": top1, "test/top5_error": top5, "test/loss": 0.9, "images": 50000,
              "skipped": [], "members": members}
    (directory / f"ensemble_{mode}.json").write_text(json.dumps(result))


def test_table5_sets_our_ensembles_top5_on_val_beside_the_papers_on_test(tmp_path):
    ensemble_file(tmp_path, "multi_scale", 19.25, 4.5)
    ensemble_file(tmp_path, "ten_crop", 20.5, 5.25)
    text = table5.table5(tmp_path)
    rows = markdown_rows(text)
    assert [(r["top-5 error %"], r["evaluated on"]) for r in rows.values()] == [
        ("7.32", "ImageNet test"), ("6.66", "ImageNet test"), ("6.8", "ImageNet test"), ("4.94", "ImageNet test"),
        ("4.82", "ImageNet test"), ("3.57", "ImageNet test"),
        ("5.25", "ImageNet val (50000 images)"), ("4.50", "ImageNet val (50000 images)")]
    ours = rows["ours: 2 nets, multi-scale"]
    assert ours["ours − ResNet (ILSVRC'15)"] == "+0.93" and ours["top-1 error %"] == "19.25"
    assert "ResNet-50 B (model.depth=50,seed=0, iteration 600000); ResNet-152 B" in text
    assert "ours on the val set, which stands in for it" in text


def test_report_table5_reads_a_directory_of_ensembles_without_runs(tmp_path):
    ensemble_file(tmp_path, "ten_crop", 20.5, 5.25)
    assert report.write(tmp_path, ["table5"]) == [tmp_path / "table5.md"]  # src/report.py DIR table5
    assert "| ours: 2 nets, 10-crop | ImageNet val (50000 images) | 5.25 | +1.68 | 20.50 |" in \
        (tmp_path / "table5.md").read_text()
    (tmp_path / "ensemble_ten_crop.json").unlink()
    with pytest.raises(UserError, match=r"holds no ensemble_<mode>.json .* eval.ensemble=true"):
        table5.table5(tmp_path)
