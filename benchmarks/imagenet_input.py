"""ImageNet training images/s through the project's Lightning path, fed by each input path, beside the same net on
one synthetic batch resident on the device (the ceiling the input path can reach):

    python benchmarks/imagenet_input.py --folder DIR [--nets 18 50] [--inputs synthetic cpu gpu] [--steps 30]
                                        [--workers 16] [--out FILE.md]

DIR is a folder in ImageNet's layout (imagenet_decode.py writes ImageNet-like JPEGs when given none). Each
(net, input) trains `steps` iterations after `warmup`, with the paper's recipe (experiment=imagenet_paper:
batch 256, bf16 and channels_last on CUDA) and no evaluation; images/s counts the timed iterations only."""
import argparse
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from common import NEVER, commit, machine
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from timing import sync

from deepres.config import register_resolvers
from deepres.data.imagenet import ImageNetDataModule
from deepres.training.classification import build

CONF = Path(__file__).resolve().parents[1] / "conf"


class SyntheticImageNet(ImageNetDataModule):
    """The same uint8 224x224 batch at every iteration, made on the training device: no reading or decoding."""

    def setup(self, stage: str | None = None) -> None:
        pass

    @property
    def num_classes(self) -> int:
        return 1000

    def train_dataloader(self):
        device = self.trainer.strategy.root_device
        gen = torch.Generator(device).manual_seed(0)
        x = torch.randint(0, 256, (self.batch_size, 3, self.crop, self.crop), generator=gen, device=device,
                          dtype=torch.uint8)
        y = torch.randint(0, self.num_classes, (self.batch_size,), generator=gen, device=device)
        return _repeat(x, y)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        return batch

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        return self.normalize(x), y


def _repeat(x, y):
    while True:
        yield x, y


class Timer(L.Callback):
    """Wall time of iterations warmup .. warmup + steps (synchronising the device at both ends)."""

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps, self.seconds = warmup, steps, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx: int) -> None:
        if trainer.global_step == self.warmup:
            sync()
            self.began = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step == self.warmup + self.steps:
            sync()
            self.seconds = time.perf_counter() - self.began


def images_per_second(depth: int, inputs: str, folder: str, steps: int, warmup: int, workers: int,
                      batch: int | None = None) -> float:
    overrides = ["experiment=imagenet_paper", f"model.depth={depth}", f"data.root={folder}",
                 f"data.num_workers={workers}", f"trainer.max_steps={warmup + steps}", "logger=none"]
    overrides += [f"data.decode={inputs}"] if inputs != "synthetic" else []
    overrides += [f"data.batch_size={batch}"] if batch else []
    register_resolvers()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    if inputs == "synthetic":
        cfg.data._target_ = f"{__name__}.SyntheticImageNet"
    datamodule, module = build(cfg)
    timer = Timer(warmup, steps)
    trainer = instantiate(cfg.trainer, callbacks=[timer], logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                          val_check_interval=NEVER, check_val_every_n_epoch=None,
                          default_root_dir=tempfile.mkdtemp())
    trainer.fit(module, datamodule)
    return steps * datamodule.batch_size / timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", help="ImageNet's layout; default: ImageNet-like JPEGs written here")
    parser.add_argument("--nets", type=int, nargs="+", default=[18, 50])
    parser.add_argument("--inputs", nargs="+", default=["synthetic", "cpu", "gpu"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--batch", type=int, help="default: the paper's 256")
    parser.add_argument("--images", type=int, default=512, help="JPEGs to write when no --folder is given")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.folder is None:
        from imagenet_decode import write_photo_folder
        args.folder = str(write_photo_folder(Path(tempfile.mkdtemp()), args.images))
    rows = ["| net | input | images/s | share of the synthetic ceiling |", "|---|---|---|---|"]
    for depth in args.nets:
        rates = {i: images_per_second(depth, i, args.folder, args.steps, args.warmup, args.workers, args.batch)
                 for i in args.inputs}
        ceiling = rates.get("synthetic")
        rows += [f"| ResNet-{depth} | {i} | {r:.0f} | {f'{r / ceiling:.0%}' if ceiling else '-'} |"
                 for i, r in rates.items()]
    report = (f"ImageNet training throughput by input path: {machine()}, commit {commit()}\n\n"
              f"{args.steps} timed iterations after {args.warmup}, {args.workers} workers, folder {args.folder}\n\n"
              + "\n".join(rows) + "\n")
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
