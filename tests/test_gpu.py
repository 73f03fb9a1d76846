"""The CUDA paths, where a GPU is (marker requires_cuda; skipped elsewhere, run by make gpu-check): the CUDA defaults
(bf16 autocast, channels_last), CUDA graphs through the Lightning path, the whole-step graph alone and in packs,
and nvJPEG decoding against the CPU path."""
import json
import random

import lightning as L
import pytest
import torch
from helpers.imagenet import datamodule, run_hooks
from helpers.train import FAST, run_train

from deepres.data.imagenet_augment import crop_window, crop_windows, draw_window
from deepres.data.imagenet_fake import write_image_folder
from deepres.data.jpeg import DeviceDecoder
from deepres.runs.metrics_csv import read_rows

pytestmark = pytest.mark.requires_cuda
ARGS = [*FAST, "trainer.max_steps=40"]
FP32 = ["trainer.precision=32-true", "model.channels_last=false", "trainer.benchmark=false"]
STEP_GRAPH = "model.compile=step_graph"


def final_state(run) -> dict:
    return torch.load(run / "checkpoints" / "final.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def assert_rows_close(a, b, rel: float = 2e-2) -> None:
    """The same rows, numbers equal up to the GPU's nondeterministic reductions over a few dozen steps."""
    rows_a, rows_b = read_rows(a / "metrics.csv"), read_rows(b / "metrics.csv")
    assert [sorted(r) for r in rows_a] == [sorted(r) for r in rows_b] and rows_a
    for ra, rb in zip(rows_a, rows_b):
        assert ra == pytest.approx(rb, rel=rel, abs=1e-3)


def test_the_cuda_defaults_train_in_bf16_with_channels_last_weights(cifar10_root, tmp_path):
    proc = run_train(*ARGS, f"data.root={cifar10_root}", f"hydra.run.dir={tmp_path}")
    assert "bf16" in proc.stdout + proc.stderr  # Lightning names the precision it uses
    convs = [v for k, v in final_state(tmp_path).items() if v.dim() == 4]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert all(torch.isfinite(torch.tensor(list(r.values()))).all() for r in read_rows(tmp_path / "metrics.csv"))


def test_compiled_cuda_graphs_record_once_and_are_never_overwritten(cifar10_root, tmp_path):
    proc = run_train(*ARGS, "model.compile=reduce-overhead", f"data.root={cifar10_root}", f"hydra.run.dir={tmp_path}",
                     timeout=600)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["compile_graphs"] == 2  # training and evaluation, however many steps and evaluations
    log = (proc.stdout + proc.stderr).lower()
    assert "overwritten by a subsequent" not in log and "skipping cudagraphs" not in log


def test_the_step_graph_trains_what_the_eager_step_trains(cifar10_root, tmp_path):
    common = [*ARGS, *FP32, "optimizer.fused=true", f"data.root={cifar10_root}"]
    run_train(*common, f"hydra.run.dir={tmp_path / 'eager'}")
    run_train(*common, STEP_GRAPH, f"hydra.run.dir={tmp_path / 'graph'}")
    assert_rows_close(tmp_path / "eager", tmp_path / "graph")


def test_the_step_graph_runs_in_bf16_and_in_packs(cifar10_root, tmp_path):
    run_train(*ARGS, STEP_GRAPH, f"data.root={cifar10_root}", f"hydra.run.dir={tmp_path / 'bf16'}")
    assert read_rows(tmp_path / "bf16" / "metrics.csv")
    pack = ["-m", *ARGS, *FP32, f"data.root={cifar10_root}", "model.residual=true,false", "seed=1",
            "hydra/launcher=packed"]
    run_train(*pack, f"hydra.sweep.dir={tmp_path / 'pack'}", cwd=tmp_path)
    run_train(*pack, STEP_GRAPH, f"hydra.sweep.dir={tmp_path / 'pack_graph'}", cwd=tmp_path)
    for residual in ("true", "false"):
        assert_rows_close(next((tmp_path / "pack").glob(f"*residual={residual}*")),
                          next((tmp_path / "pack_graph").glob(f"*residual={residual}*")))


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("imagenet"), classes=3, train=8, val=3)


def test_nvjpeg_batches_match_the_cpu_paths(jpegs):
    cpu, gpu = (datamodule(jpegs, decode=d, bad_images="skip") for d in ("cpu", "gpu"))
    gpu.decoder = DeviceDecoder(torch.device("cuda"), gpu._finish)
    for dm in (cpu, gpu):
        dm.setup("fit")
    loaders = (cpu.train_dataloader(), gpu.train_dataloader())
    for _, (batch, batch_gpu) in zip(range(12), zip(*loaders)):
        (x, y), (x_gpu, y_gpu) = run_hooks(cpu, batch), run_hooks(gpu, batch_gpu)
        assert x_gpu.is_cuda and torch.equal(y, y_gpu.cpu())
        # nvJPEG's IDCT rounds differently from libjpeg-turbo's: a level here and there, never a different crop
        assert (x_gpu.cpu() - x).abs().mean() < 0.05


def test_the_batched_gpu_crops_are_torchvisions_crops(jpegs):
    """On CUDA torchvision resizes uint8 in float and rounds: the batched crops must give its pixels to the bit."""
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen).cuda() for h, w in
              ((300, 400), (500, 260), (224, 224), (256, 256))]
    windows = [draw_window(*image.shape[-2:], rng, 224, (256, 480), True) for image in images]
    crops = crop_windows(images, windows, 224)
    assert all(torch.equal(c, crop_window(i, w, 224)) for c, i, w in zip(crops, images, windows))


def test_nvjpeg_batches_are_not_pinned(jpegs):
    """nvJPEG reads the files from pageable memory; the CPU path's decoded pixels travel pinned."""
    trainer = L.Trainer(accelerator="gpu", devices=1, logger=False)
    pinned = {}
    for decode in ("cpu", "gpu"):
        dm = datamodule(jpegs, decode=decode)
        dm.trainer = trainer
        dm.setup("fit")
        pinned[decode] = dm.train_dataloader().pin_memory
    assert pinned == {"cpu": True, "gpu": False}
