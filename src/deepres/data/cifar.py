"""The CIFAR-10/100 DataModule: the whole data set as one uint8 tensor on the training device."""
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch

from deepres.data.cifar_files import download, layout, read_split
from deepres.data.gpu_augment import EvalStream, PackedStream, TrainStream, generator
from deepres.errors import UserError

NORMALIZATIONS = ("per_pixel", "per_channel")
VAL_SPLIT = 2


class Normalize:
    """uint8 images to float in [0, 1], minus the training set's mean image (per_pixel, the paper's) or
    standardised per channel."""

    def __init__(self, train_images: torch.Tensor, kind: str):
        if kind not in NORMALIZATIONS:
            raise UserError(f"data.normalization={kind!r} is unknown; valid: {', '.join(NORMALIZATIONS)}.")
        x = train_images.double() / 255
        if kind == "per_pixel":
            self.mean, self.std = x.mean(0).float(), None
        else:
            self.mean = x.mean((0, 2, 3)).float()[:, None, None]
            self.std = x.std((0, 2, 3)).float()[:, None, None]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255).sub_(self.mean)
        return x.div_(self.std) if self.std is not None else x


class CifarDataModule(L.LightningDataModule):
    """Train on the 50k training images (or 50k - val_size), evaluate on the 10k test images (and the held-out
    val_size images when val_size > 0, the paper's 45k/5k protocol)."""

    def __init__(self, name: str = "cifar10", root: str = "data", download: bool = False, val_size: int = 0,
                 normalization: str = "per_pixel", batch_size: int = 128, eval_batch_size: int = 1000,
                 padding: int = 4, flip: bool = True, seed: int = 0, split_seed: int = 0):
        super().__init__()
        self.spec = layout(name)
        self.name, self.root, self.download = name, Path(root).expanduser(), download
        self.val_size, self.normalization = val_size, normalization
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.padding, self.flip, self.seed, self.split_seed = padding, flip, seed, split_seed
        self.eval_names = ["val", "test"] if val_size > 0 else ["test"]

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def prepare_data(self) -> None:
        if self.download:
            download(self.name, self.root)

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_images"):
            return
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        train_x, train_y = (torch.from_numpy(a) for a in read_split(self.name, self.root, train=True))
        test_x, test_y = (torch.from_numpy(a) for a in read_split(self.name, self.root, train=False))
        if not 0 <= self.val_size < len(train_x):
            raise UserError(f"data.val_size={self.val_size} must be in [0, {len(train_x) - 1}] for {self.name}.")
        if self.batch_size > len(train_x) - self.val_size:
            raise UserError(f"data.batch_size={self.batch_size} is larger than the {len(train_x) - self.val_size} "
                            "training images.")
        if self.batch_size % self._shard()[1]:
            raise UserError(f"data.batch_size={self.batch_size} is the global batch; it must split evenly over the "
                            f"{self._shard()[1]} processes (trainer.devices x trainer.num_nodes).")
        order = torch.randperm(len(train_x), generator=generator(torch.device("cpu"), self.split_seed, VAL_SPLIT))
        val_idx, train_idx = order[:self.val_size].sort().values, order[self.val_size:].sort().values
        self.train_images, self.train_labels = train_x[train_idx].to(device), train_y[train_idx].to(device)
        self.normalize = Normalize(self.train_images, self.normalization)
        self.eval_sets = [(test_x.to(device), test_y.to(device))]
        if self.val_size:
            self.eval_sets.insert(0, (train_x[val_idx].to(device), train_y[val_idx].to(device)))

    def _global_step(self) -> int:
        return self.trainer.global_step if self.trainer is not None else 0

    def _shard(self) -> tuple[int, int]:
        """(rank, world size): each process trains on its slice of the global batch and evaluates everything."""
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)

    def train_stream(self, seed: int) -> TrainStream:
        """The training batches that data.seed=`seed` draws (order and augmentation)."""
        return TrainStream(self.train_images, self.train_labels, self.normalize, self.batch_size, self.padding,
                           self.flip, seed, self._global_step, self._shard())

    def train_dataloader(self) -> TrainStream:
        return self.train_stream(self.seed)

    def val_dataloader(self) -> list[EvalStream]:
        return [EvalStream(x, y, self.normalize, self.eval_batch_size) for x, y in self.eval_sets]


class PackedCifarDataModule(CifarDataModule):
    """The data of a pack (models/packed.py): member k trains on the batches of its own seed, seeds[k], in channels
    3k..3k+2; labels (B, K). Evaluation batches are the single run's: every member sees the same images."""

    def __init__(self, seeds: Sequence[int] = (0,), **data):
        super().__init__(**data)
        self.seeds = list(seeds)

    def train_dataloader(self) -> PackedStream:
        streams = {seed: self.train_stream(seed) for seed in self.seeds}
        return PackedStream([streams[seed] for seed in self.seeds])
