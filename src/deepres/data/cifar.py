"""The CIFAR-10/100 DataModule: the whole data set on the training device, normalised (and padded) once."""
from collections.abc import Sequence
from pathlib import Path

import torch

from deepres.data.cifar_files import check_files, download, layout, read_split
from deepres.data.gpu_augment import EvalBatches, MemberBatches, TrainBatches, resident
from deepres.data.streams import VAL_SPLIT, StreamDataModule, generator
from deepres.errors import UserError

NORMALIZATIONS = ("per_pixel", "per_channel", "fixed")


class Normalize:
    """uint8 images to float in [0, 1], minus the training set's mean image (per_pixel, the paper's), standardised
    per channel with the training set's statistics (per_channel) or with given ones (fixed: data.mean, data.std, as
    public CIFAR checkpoints were trained, e.g. ImageNet's [0.485, 0.456, 0.406] and [0.229, 0.224, 0.225])."""

    def __init__(self, train_images: torch.Tensor, kind: str, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None):
        if kind not in NORMALIZATIONS:
            raise UserError(f"data.normalization={kind!r} is unknown; valid: {', '.join(NORMALIZATIONS)}.")
        if kind == "fixed":
            if mean is None or std is None or len(mean) != 3 or len(std) != 3:
                raise UserError(f"data.normalization=fixed needs data.mean and data.std, three values each (got "
                                f"mean={mean}, std={std}), e.g. data.mean=[0.485,0.456,0.406] "
                                "data.std=[0.229,0.224,0.225].")
            self.mean = torch.tensor(list(mean), dtype=torch.float32)[:, None, None]
            self.std = torch.tensor(list(std), dtype=torch.float32)[:, None, None]
            return
        x = train_images.double() / 255
        if kind == "per_pixel":
            self.mean, self.std = x.mean(0).float(), None
        else:
            self.mean = x.mean((0, 2, 3)).float()[:, None, None]
            self.std = x.std((0, 2, 3)).float()[:, None, None]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255).sub_(self.mean)
        return x.div_(self.std) if self.std is not None else x


class CifarDataModule(StreamDataModule):
    """Train on the 50k training images (or 50k - val_size), evaluate on the 10k test images (and the held-out
    val_size images when val_size > 0, the paper's 45k/5k protocol).

    For a pack (packing/members.py), `member_seeds` are its members' data.seed: member k trains on the batches of
    its own seed in channels 3k..3k+2, labels (B, K); evaluation batches are a run's: every member sees the same."""

    top5 = False  # ten classes: top-1 only

    def __init__(self, name: str = "cifar10", root: str = "data", download: bool = False, val_size: int = 0,
                 normalization: str = "per_pixel", mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, batch_size: int = 128, eval_batch_size: int = 1000,
                 padding: int = 4, flip: bool = True, seed: int = 0, split_seed: int = 0,
                 channels_last: bool = False, member_seeds: Sequence[int] | None = None):
        super().__init__()
        self.channels_last = channels_last  # the net's memory layout, which the batches come in
        self.member_seeds = list(member_seeds) if member_seeds is not None else None
        self.spec = layout(name)
        self.name, self.root, self.download = name, Path(root).expanduser(), download
        self.val_size, self.normalization, self.mean, self.std = val_size, normalization, mean, std
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.padding, self.flip, self.seed, self.split_seed = padding, flip, seed, split_seed
        self.eval_names = ["val", "test"] if val_size > 0 else ["test"]
        self.skipped: dict[str, str] = {}  # the ImageNet DataModule's unreadable files: CIFAR's batches have none

    @property
    def test_images(self) -> int:
        return len(self.eval_sets[-1][1])

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def check_files(self) -> None:
        """The batch files are there, downloaded first with data.download=true when they are not (before a run
        creates anything); a UserError naming what is missing otherwise."""
        if self.download:
            self.prepare_data()
        check_files(self.name, self.root, downloaded=self.download)

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
        self.shard(batch_size=self.batch_size)
        order = torch.randperm(len(train_x), generator=generator(torch.device("cpu"), self.split_seed, VAL_SPLIT))
        val_idx, train_idx = order[:self.val_size].sort().values, order[self.val_size:].sort().values
        self.train_images, self.train_labels = train_x[train_idx], train_y[train_idx]
        self.normalize = Normalize(self.train_images, self.normalization, self.mean, self.std)
        self.eval_sets = [(test_x, test_y)]
        if self.val_size:
            self.eval_sets.insert(0, (train_x[val_idx], train_y[val_idx]))
        self.make_resident(device)

    def make_resident(self, device: torch.device) -> None:
        """The uint8 splits on the host (train_images, eval_sets) to their resident form on `device`: normalised,
        the training images padded for their crops, in the net's memory layout."""
        self.resident_train = (resident(self.train_images, self.normalize, self.padding, device, self.channels_last),
                               self.train_labels.to(device))
        self.resident_eval = [(resident(x, self.normalize, 0, device, self.channels_last), y.to(device))
                              for x, y in self.eval_sets]

    def train_stream(self, seed: int) -> TrainBatches:
        """The training batches that data.seed=`seed` draws (order and augmentation); each process trains on its
        slice of the global batch (and evaluates everything)."""
        return TrainBatches(*self.resident_train, self.batch_size, self.padding, self.flip, seed, self.global_step,
                            self.shard())

    def train_dataloader(self) -> TrainBatches | MemberBatches:
        if self.member_seeds is None:
            return self.train_stream(self.seed)
        streams = {seed: self.train_stream(seed) for seed in self.member_seeds}
        return MemberBatches([streams[seed] for seed in self.member_seeds])

    def val_dataloader(self) -> list[EvalBatches]:
        return [EvalBatches(x, y, self.eval_batch_size) for x, y in self.resident_eval]
