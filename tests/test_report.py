"""Reports: the files `make smoke-fig6` writes from real (short) runs, checked against the runs' CSVs and weights;
tables and figures on synthetic runs (seeds, unfinished runs, mixed settings, ImageNet); the CLI's user errors."""
import csv
import json
import subprocess
from pathlib import Path
from statistics import mean, stdev

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.train import run_entry
from matplotlib import colormaps
from matplotlib.image import imread
from omegaconf import OmegaConf

from deepres.data.cifar import CifarDataModule
from deepres.data.imagenet_fake import write_image_folder
from deepres.errors import UserError
from deepres.models import CifarResNet, ImageNetResNet
from deepres.report import figures, tables
from deepres.report.fig7 import response_stds
from deepres.report.runs import Run, Sweep
from deepres.runs.metrics_csv import read_rows

SMOKE_NETS = {"plain-20": 20, "plain-32": 32, "plain-44": 44, "plain-56": 56, "ResNet-20": 20, "ResNet-32": 32,
              "ResNet-44": 44, "ResNet-56": 56, "ResNet-110": 110}


def job_dir(sweep: Path, residual: bool, depth: int, seed: int = 0) -> Path:
    return sweep / f"model.depth={depth},model.residual={str(residual).lower()},seed={seed}"


def params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def markdown_rows(text: str) -> dict[str, dict[str, str]]:
    """A Markdown table as {first cell: {column: cell}} (columns named like the header; repeated names numbered)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    header = [f"{h}{header[:i].count(h) or ''}" for i, h in enumerate(header)]
    return {cells[0]: dict(zip(header, cells)) for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}


# ---- make smoke-fig6: real runs ---------------------------------------------------------------------------------

def test_smoke_writes_every_cifar_figure_and_table(smoke_sweep):
    # at 150 dpi: Fig. 1 and 6 have 4.2 x 3.6-inch panels side by side (2 and 3), Fig. 7 two 6.5-inch-wide rows
    for name, size in (("fig1", (540, 2 * 630)), ("fig6", (540, 3 * 630)), ("fig7", (975, 975))):
        image = imread(smoke_sweep / f"{name}.png")
        assert image.shape[:2] == size
        assert len(np.unique(image.reshape(-1, image.shape[2]), axis=0)) > 50  # drawn on, not blank
        assert (smoke_sweep / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    assert (smoke_sweep / "table6.md").read_text().startswith("### Table 6")


def test_fig6_png_draws_one_colour_per_depth(smoke_sweep):
    pixels = {tuple(p) for p in (imread(smoke_sweep / "fig6.png")[..., :3] * 255).round().astype(int).reshape(-1, 3)}
    for i in range(5):  # depths 20, 32, 44, 56, 110
        assert tuple(round(255 * c) for c in colormaps["tab10"](i)[:3]) in pixels


def test_fig6_panels_hold_each_net_with_the_curves_of_its_csv(smoke_sweep):
    fig = figures.fig6(Sweep(smoke_sweep))
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["plain", "ResNet", "ResNet-110 vs 1202"]
    assert [[t.get_text() for t in ax.get_legend().get_texts()] for ax in axes] == [
        ["plain-20", "plain-32", "plain-44", "plain-56"],
        ["ResNet-20", "ResNet-32", "ResNet-44", "ResNet-56", "ResNet-110"], ["ResNet-110"]]
    for ax in axes:
        test_lines = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
        train_lines = [line for line in ax.get_lines() if line.get_label().startswith("_")]
        assert len(train_lines) == len(test_lines) and {line.get_linestyle() for line in train_lines} == {"--"}
        assert all(line.get_linewidth() > train.get_linewidth() for line in test_lines for train in train_lines)
        for line in test_lines:
            residual, depth = line.get_label().startswith("ResNet"), SMOKE_NETS[line.get_label()]
            rows = [r for r in read_rows(job_dir(smoke_sweep, residual, depth) / "metrics.csv") if "test/error" in r]
            assert list(line.get_xdata()) == [r["step"] / 1e4 for r in rows]
            assert list(line.get_ydata()) == [r["test/error"] for r in rows]


def test_fig1_shows_training_and_test_error_of_plain_20_and_56(smoke_sweep):
    fig = figures.fig1(Sweep(smoke_sweep))
    assert [ax.get_title() for ax in fig.axes] == ["training error", "test error"]
    train_ax, test_ax = fig.axes
    assert [line.get_label() for line in train_ax.get_lines()] == ["plain-20", "plain-56"]
    rows = read_rows(job_dir(smoke_sweep, False, 56) / "metrics.csv")
    assert list(train_ax.get_lines()[1].get_ydata()) == [r["train/error"] for r in rows if "train/error" in r]
    assert list(test_ax.get_lines()[1].get_ydata()) == [r["test/error"] for r in rows if "test/error" in r]


def test_table6_matches_the_final_rows_of_the_csvs_and_the_paper(smoke_sweep):
    rows = markdown_rows((smoke_sweep / "table6.md").read_text())
    paper = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.61}
    printed = {110: "6.43 (6.61±0.16)"}  # the paper's best (mean ± std) of 5 runs
    for label, depth in SMOKE_NETS.items():
        residual = label.startswith("ResNet")
        final = read_rows(job_dir(smoke_sweep, residual, depth) / "metrics.csv")[-1]["test/error"]
        row = rows[label]
        assert row["top-1 error % (ours)"] == f"{final:.2f}" and row["seeds"] == "1" and row["iterations"] == "4"
        assert row["params (ours)"].startswith(f"{params(CifarResNet(depth, residual)):,} ")
        if residual:
            assert row["paper"] == printed.get(depth, f"{paper[depth]:.2f}")
            assert row["ours − paper"] == f"{final - paper[depth]:+.2f}"
        else:
            assert row["paper"] == row["ours − paper"] == "—"
    assert rows["ResNet-1202"]["top-1 error % (ours)"] == "not run" and rows["ResNet-1202"]["paper"] == "7.93"
    assert rows["ResNet-20"]["params (ours)"] == "269,722 (0.27M)"  # the paper's 0.27M, exactly counted
    assert f"Runs: {smoke_sweep}: trainer.max_steps=4, data.batch_size=8;" in (smoke_sweep / "table6.md").read_text()


def test_fig7_csv_holds_the_std_of_each_3x3_layer_of_the_five_nets(smoke_sweep):
    with open(smoke_sweep / "fig7.csv") as f:
        rows = list(csv.DictReader(f))
    layers = {net: [int(r["layer"]) for r in rows if r["net"] == net] for net in {r["net"] for r in rows}}
    assert layers == {net: list(range(1, depth)) for net, depth in
                      (("plain-20", 20), ("plain-56", 56), ("ResNet-20", 20), ("ResNet-56", 56), ("ResNet-110", 110))}
    # recomputed by hand for ResNet-20's first layer: the stem's BN output over the whole test set
    run = job_dir(smoke_sweep, True, 20)
    net = CifarResNet(20)
    state = torch.load(run / "checkpoints" / "final.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    datamodule = CifarDataModule(root=smoke_sweep / "data")
    datamodule.setup()
    images = datamodule.normalize(datamodule.eval_sets[0][0])
    with torch.no_grad():
        expected = net.eval().stem[1](net.stem[0](images)).std(unbiased=False).item()
    stem = next(r for r in rows if r["net"] == "ResNet-20" and r["layer"] == "1")
    assert float(stem["std"]) == pytest.approx(expected, rel=1e-5)


def test_a_run_reads_its_data_where_it_trained_or_where_it_moved(smoke_sweep, tmp_path):
    run = Run(job_dir(smoke_sweep, True, 20))
    assert run.datamodule().root == smoke_sweep / "data" and run.datamodule().seed == 0
    assert run.datamodule(str(tmp_path)).root == tmp_path


# ---- Fig. 7's hooks ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shortcut", ["A", "B", "C"])
def test_response_layers_are_the_bns_after_3x3_convs(shortcut):
    net = CifarResNet(20, shortcut=shortcut)
    layers = net.response_layers()
    blocks = [b for stage in net.stages for b in stage]
    assert layers == [net.stem[1]] + [bn for b in blocks for bn in (b.bn1, b.bn2)]  # no projection-shortcut BN


def test_responses_are_taken_after_bn_before_relu_and_addition():
    torch.manual_seed(0)
    net = CifarResNet(8).eval()
    with torch.no_grad():  # BN statistics that are not the identity, so "after BN" is visible
        for bn in net.response_layers():
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.bias.uniform_(-1, 1)
    x = torch.randn(16, 3, 32, 32)
    stds = response_stds(net, [(x[:10], None), (x[10:], None)], torch.device("cpu"))
    block = net.stages[0][0]
    with torch.no_grad():
        stem = net.stem[1](net.stem[0](x))
        bn1 = block.bn1(block.conv1(F.relu(stem)))
        bn2 = block.bn2(block.conv2(F.relu(bn1)))
    assert len(stds) == 7
    assert stds[:3] == pytest.approx([t.std(unbiased=False).item() for t in (stem, bn1, bn2)], rel=1e-6)


# ---- synthetic runs ---------------------------------------------------------------------------------------------

def write_run(sweep: Path, residual: bool, depth: int, test: list[float], seed: int = 0, shortcut: str = "A",
              status: str = "completed", overrides: tuple[str, ...] = (), data: dict | None = None) -> Path:
    """A run directory as train.py leaves it: config, overrides, status and metrics.csv (evaluations every 100
    iterations with the given test errors; CIFAR-10 unless `data` says otherwise)."""
    net = [f"model.depth={depth}", f"model.residual={str(residual).lower()}", f"seed={seed}"]
    net += [f"model.shortcut={shortcut}"] if data else []
    run = sweep / ",".join(sorted(net + list(overrides)))
    (run / ".hydra").mkdir(parents=True)
    model = "deepres.models.ImageNetResNet" if data else "deepres.models.CifarResNet"
    cifar = {"_target_": "deepres.data.cifar.CifarDataModule", "name": "cifar10", "batch_size": 128}
    OmegaConf.save({"model": {"_target_": model, "depth": depth, "residual": residual, "shortcut": shortcut},
                    "data": data or cifar, "trainer": {"max_steps": 100 * len(test)}, "seed": seed},
                   run / ".hydra" / "config.yaml")
    OmegaConf.save(net + list(overrides) + ["+sweep=x", "data.root=elsewhere"], run / ".hydra" / "overrides.yaml")
    exclude = {"hydra": {"job": {"config": {"override_dirname": {"exclude_keys": ["data.root", "sweep"]}}}}}
    OmegaConf.save(exclude, run / ".hydra" / "hydra.yaml")
    (run / "status.json").write_text(json.dumps({"status": status}))
    with open(run / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["step", "train/error", "test/error", "test/top5_error"])
        writer.writeheader()
        writer.writerows({"step": 100 * (i + 1), "train/error": e - 5, "test/error": e,
                          "test/top5_error": e / 3 if data else ""} for i, e in enumerate(test))
    return run


def test_tables_report_the_final_iterate_as_best_mean_and_std_over_seeds_as_the_paper_prints_them(tmp_path):
    write_run(tmp_path, True, 20, [30.0, 8.0, 9.0], seed=1)  # best evaluation 8.0, final 9.0
    write_run(tmp_path, True, 20, [30.0, 9.5, 9.5], seed=2)
    write_run(tmp_path, True, 20, [30.0, 7.0], seed=3, status="running")
    write_run(tmp_path, True, 110, [7.0], seed=1)
    (tmp_path / "table6.md").write_text(tables.table6(Sweep(tmp_path)))
    rows = markdown_rows((tmp_path / "table6.md").read_text())
    row = rows["ResNet-20"]
    assert row["top-1 error % (ours)"] == f"9.00 ({mean([9.0, 9.5]):.2f}±{stdev([9.0, 9.5]):.2f})"  # best (mean±std)
    assert rows["ResNet-110"]["paper"] == "6.43 (6.61±0.16)" and rows["ResNet-110"]["ours − paper"] == "+0.39"
    assert row["seeds"] == "2" and row["ours − paper"] == f"{9.25 - 8.75:+.2f}" and row["iterations"] == "300"
    assert "Not counted, not completed: model.depth=20,model.residual=true,seed=3 (running, step 200)" in \
        (tmp_path / "table6.md").read_text()


def test_a_net_with_no_completed_run_is_marked(tmp_path):
    write_run(tmp_path, True, 32, [50.0], status="failed")
    assert "| ResNet-32 | — | 0.46M | — | 0 | not completed | 7.51 | — |" in tables.table6(Sweep(tmp_path))


def test_runs_of_different_settings_are_not_compared(tmp_path):
    write_run(tmp_path, False, 20, [50.0])
    write_run(tmp_path, False, 56, [50.0], overrides=("trainer.max_steps=400",))
    with pytest.raises(UserError, match=r"different settings.*: \[no overrides\]: .*; \[trainer.max_steps=400\]"):
        figures.fig1(Sweep(tmp_path))


def test_fig6_keeps_its_three_panels_when_the_sweep_lacks_a_panel_s_nets(tmp_path):
    write_run(tmp_path, False, 20, [50.0, 40.0])
    write_run(tmp_path, True, 20, [45.0, 35.0])
    axes = figures.fig6(Sweep(tmp_path)).axes
    assert [len(ax.get_lines()) for ax in axes] == [2, 2, 0]
    assert [t.get_text() for t in axes[2].texts] == ["no such run in this sweep"]


def test_seeds_are_averaged_in_the_curves(tmp_path):
    write_run(tmp_path, False, 20, [50.0, 40.0], seed=1)
    write_run(tmp_path, False, 20, [60.0, 30.0], seed=2)
    test_line = figures.fig1(Sweep(tmp_path)).axes[1].get_lines()[0]
    assert list(test_line.get_ydata()) == [55.0, 35.0] and list(test_line.get_xdata()) == [0.01, 0.02]


@pytest.fixture
def imagenet_sweep(tmp_path) -> Path:
    """Runs of Tables 2 and 3 on a 3-class ImageNet folder, the ResNet-34 B run evaluated 10-crop."""
    root = write_image_folder(tmp_path / "imagenet", classes=3, train=1, val=1)
    data = {"_target_": "deepres.data.imagenet.ImageNetDataModule", "name": "imagenet", "root": str(root),
            "batch_size": 256}
    sweep = tmp_path / "sweep"
    write_run(sweep, False, 18, [70.0, 40.0], data=data)
    write_run(sweep, False, 34, [70.0, 42.0], data=data)
    write_run(sweep, True, 18, [70.0, 38.0], data=data)
    write_run(sweep, True, 34, [70.0, 36.0], data=data)
    run = write_run(sweep, True, 34, [70.0, 35.0], shortcut="B", data=data)
    (run / "eval_ten_crop.json").write_text(json.dumps({"test/error": 33.5, "test/top5_error": 12.25}))
    return sweep


def test_table3_compares_centre_crop_errors_until_every_run_has_its_ten_crop(imagenet_sweep):
    text = tables.table3(Sweep(imagenet_sweep))
    rows = {k: list(v.values()) for k, v in markdown_rows(text).items()}
    count = params(ImageNetResNet(34, True, "B", num_classes=3))
    assert rows["ResNet-34 B"][1:] == [f"{count:,} ({count / 1e6:.2f}M)", "200", "1", "35.00", "24.52", "+10.48",
                                       f"{35 / 3:.2f}", "7.46", f"{35 / 3 - 7.46:+.2f}"]
    assert rows["ResNet-152 B"][1:6] == ["—", "—", "0", "not run", "21.43"]
    assert "centre-crop val errors from training" in text
    for run in imagenet_sweep.iterdir():
        (run / "eval_ten_crop.json").write_text(json.dumps({"test/error": 30.0, "test/top5_error": 10.0}))
    text = tables.table3(Sweep(imagenet_sweep))
    assert markdown_rows(text)["plain-34"]["top-1 error % (ours)"] == "30.00" and "10-crop, as the paper" in text


def test_table2_and_fig4_show_plain_and_resnet_18_34_with_shortcut_a(imagenet_sweep):
    rows = markdown_rows(tables.table2(Sweep(imagenet_sweep)))
    assert list(rows) == ["plain-18", "plain-34", "ResNet-18 A", "ResNet-34 A"]
    assert rows["ResNet-34 A"]["top-1 error % (ours)"] == "36.00" and rows["ResNet-34 A"]["paper"] == "25.03"
    fig = figures.fig4(Sweep(imagenet_sweep))
    assert [[t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes] == [
        ["plain-18", "plain-34"], ["ResNet-18", "ResNet-34"]]
    assert {line.get_linewidth() for line in fig.axes[0].get_lines()} == {0.8, 2.2}  # thin training, bold val


# ---- the command line -------------------------------------------------------------------------------------------

def report(*args: str) -> subprocess.CompletedProcess:
    return run_entry("report.py", *args, timeout=120)


def test_cli_writes_the_named_reports_into_the_sweep_directory(tmp_path):
    write_run(tmp_path, False, 20, [50.0, 40.0])
    write_run(tmp_path, False, 56, [60.0, 45.0])
    proc = report(str(tmp_path), "fig1", "table6")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(tmp_path / name) for name in ("fig1.png", "fig1.pdf", "table6.md")]


@pytest.mark.parametrize(("args", "message"), [
    (["missing", "fig6"], "missing is not a directory"),
    (["{sweep}", "fig7"], "holds no runs of plain-20/56 or ResNet-20/56/110; it holds plain-32"),
    (["{sweep}", "fig5"], "invalid choice: 'fig5'"),
])
def test_cli_user_errors_exit_2_with_one_message(tmp_path, args, message):
    write_run(tmp_path, False, 32, [50.0])
    proc = report(*(a.format(sweep=tmp_path) for a in args))
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_a_net_with_several_seeds_is_drawn_as_its_mean_in_a_band_of_one_std(tmp_path):
    write_run(tmp_path, True, 20, [30.0, 10.0], seed=1)
    write_run(tmp_path, True, 20, [40.0, 14.0], seed=2)
    write_run(tmp_path, False, 20, [35.0, 20.0], seed=1)  # one seed: a line, no band
    fig = figures.fig6(Sweep(tmp_path))
    resnets = fig.axes[1]
    (test_line,) = [line for line in resnets.get_lines() if line.get_label() == "ResNet-20"]
    assert list(test_line.get_ydata()) == [35.0, 12.0]
    bands = [band.get_paths()[0].vertices[:, 1] for band in resnets.collections]
    assert len(bands) == 2  # training and test error of ResNet-20
    test_band = next(b for b in bands if max(b) > 38)
    assert min(test_band) == pytest.approx(12.0 - stdev([10.0, 14.0])) and max(test_band) == pytest.approx(
        35.0 + stdev([30.0, 40.0]))
    assert not fig.axes[0].collections and "mean (band: ± std) of 1/2 seeds per net" in fig._suptitle.get_text()
