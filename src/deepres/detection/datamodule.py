"""The detection DataModule: PASCAL VOC in the devkit's layout (voc.py) or COCO in its own (coco.py).

Training is an iteration-counted stream, as for ImageNet (data/streams.py): global batch k holds positions
k*B .. (k+1)*B of the epoch-wise shuffled order, rank r of R loads its slice, and each image's horizontal flip (its
boxes flipped with it) is drawn from (seed, k), so batch k is the same for any number of processes and workers and
after a resume. Images keep their sizes (the detector's transform resizes and normalises them): a batch is
(list of uint8 [3, H, W] images, list of targets). Evaluation reads the test set once, in its order."""
import itertools
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from deepres.data.imagenet import Shard, StreamLoader
from deepres.data.imagenet_folder import read_rgb
from deepres.data.streams import TRAIN_AUGMENT, EpochOrder, StreamDataModule, generator
from deepres.detection import coco, voc
from deepres.errors import UserError

FORMATS = ("voc", "coco")
_FIELDS = (("boxes", np.float32, (0, 4)), ("labels", np.int64, (0,)), ("difficult", bool, (0,)),
           ("iscrowd", bool, (0,)))


def read_image(path: str) -> torch.Tensor:
    """uint8 RGB [3, H, W] (torchvision.io's decoders); a UserError naming a file that cannot be read."""
    try:
        return read_rgb(path)
    except (OSError, RuntimeError) as err:
        raise UserError(f"cannot read the image {path} ({str(err).strip().splitlines()[-1]}); replace it with the "
                        "data set's original file.") from None


class DetectionImages(Dataset):
    """Images and their targets, packed in numpy arrays (no Python object per image, so forked DataLoader workers
    share them instead of copying them); item i is (uint8 image, target)."""

    def __init__(self, paths: Sequence[str], targets: Sequence[dict]):
        self.paths = np.array([os.fsencode(p) for p in paths])
        self.image_ids = np.array([t["image_id"] for t in targets], dtype=str)
        self.offsets = np.cumsum([0] + [len(t["labels"]) for t in targets])
        self.fields = {key: np.concatenate([np.zeros(shape, dtype)] + [t[key].numpy() for t in targets])
                       for key, dtype, shape in _FIELDS}

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, i: int) -> str:
        return os.fsdecode(self.paths[i])

    def target(self, i: int) -> dict:
        rows = slice(self.offsets[i], self.offsets[i + 1])
        return {**{key: torch.from_numpy(values[rows].copy()) for key, values in self.fields.items()},
                "image_id": str(self.image_ids[i])}

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        return read_image(self.path(i)), self.target(i)


def hflip(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    """The image mirrored left to right, and its boxes with it: x -> W - x, so (x1, x2) -> (W - x2, W - x1)."""
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = image.shape[-1] - target["boxes"][:, [2, 0]]
    return image.flip(-1), {**target, "boxes": boxes}


def collate(samples: Sequence[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Images of any size, as lists: (images, targets)."""
    return [image for image, _ in samples], [target for _, target in samples]


class TrainStream(IterableDataset):
    """One process's share of the endless training stream (see the module's docstring). Worker w of W loads
    batches w, w+W, ..., which the DataLoader returns in turn."""

    def __init__(self, images: DetectionImages, batch_size: int, rank: int, world_size: int, seed: int, flip: bool):
        self.images, self.batch_size, self.seed, self.flip = images, batch_size, seed, flip
        self.share = batch_size // world_size
        self.first = rank * self.share
        self.batches_per_epoch = len(images) // batch_size
        self.start_step = 0  # set by StreamLoader each time iteration starts
        self.order = EpochOrder(len(images), seed, torch.Tensor.numpy)

    def flips(self, step: int) -> torch.Tensor:
        """Which images of global batch `step` are mirrored."""
        if not self.flip:
            return torch.zeros(self.batch_size, dtype=torch.bool)
        draws = generator(torch.device("cpu"), self.seed, TRAIN_AUGMENT, step)
        return torch.rand(self.batch_size, generator=draws) < 0.5

    def sample(self, step: int, position: int, flips: torch.Tensor) -> tuple[torch.Tensor, dict]:
        epoch, k = divmod(step, self.batches_per_epoch)
        image, target = self.images[int(self.order(epoch)[k * self.batch_size + position])]
        return hflip(image, target) if flips[position] else (image, target)

    def __iter__(self):
        worker = get_worker_info()
        first, every = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        for step in itertools.count(self.start_step + first, every):
            flips = self.flips(step)
            for position in range(self.first, self.first + self.share):
                yield self.sample(step, position, flips)


def _without_difficult(target: dict) -> dict:
    keep = ~target["difficult"]
    return {key: value[keep] if isinstance(value, torch.Tensor) else value for key, value in target.items()}


class DetectionDataModule(StreamDataModule):
    """Train on `train_sets`, evaluate `test_set` (logged as `test/`). VOC: a set is one of the paper's ("07+12",
    "07++12" to train; "07test", "12test" to test) or a list of parts like VOC2007/trainval; difficult objects are
    left out of training unless train_difficult. COCO: sets are names like train2017, whose images are
    root/<image_folder> and annotations root/<annotation_file>, both formatted with {set}.
    `batch_size` and `eval_batch_size` are global: each of N processes loads 1/N of them."""

    def __init__(self, name: str = "voc", root: str = "data/voc", train_sets: str | Sequence[str] = "07+12",
                 test_set: str = "07test", batch_size: int = 1, eval_batch_size: int = 1, num_workers: int = 4,
                 flip: bool = True, seed: int = 0, train_difficult: bool = False,
                 image_folder: str = coco.IMAGE_FOLDER, annotation_file: str = coco.ANNOTATION_FILE):
        super().__init__()
        if name not in FORMATS:
            raise UserError(f"data.name={name!r} is not a detection data set; valid: voc (PASCAL VOC in the devkit's "
                            "layout), coco (COCO's layout).")
        self.name, self.root, self.seed, self.flip, self.train_difficult = name, root, seed, flip, train_difficult
        self.train_sets = [train_sets] if isinstance(train_sets, str) else list(train_sets)
        self.test_set, self.image_folder, self.annotation_file = test_set, image_folder, annotation_file
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.eval_names = ["test"]
        if name == "voc":  # the names only: the constructor reads no file
            voc.parts(self.train_sets, "data.train_sets")
            voc.parts(test_set, "data.test_set")
        self._categories: coco.Categories | None = None
        self._sets: dict[str, DetectionImages] = {}

    @property
    def class_names(self) -> list[str]:
        """Label i + 1's name (0 is background); COCO's come from the test set's annotation file."""
        if self.name == "voc":
            return list(voc.VOC_CLASSES)
        self._set("test")
        return list(self._categories.names)

    @property
    def num_classes(self) -> int:
        """K, without the background."""
        return len(self.class_names)

    @property
    def test_labelled(self) -> bool:
        """False for VOC 2012 test, whose labels only the evaluation server has: its targets have no boxes."""
        return self.name == "coco" or not any(p in voc.UNLABELLED for p in voc.parts(self.test_set, "data.test_set"))

    def check_files(self) -> None:
        """Read the training and test sets: a UserError naming the first missing or bad file."""
        self._set("train")
        self._set("test")

    def _set(self, which: str) -> DetectionImages:
        if which not in self._sets:
            train = which == "train"
            sets = self.train_sets if train else [self.test_set]
            paths, targets = self._read_voc(sets, train) if self.name == "voc" else self._read_coco(sets, train)
            self._sets[which] = DetectionImages(paths, targets)
        return self._sets[which]

    def _read_voc(self, sets: list[str], train: bool) -> tuple[list[str], list[dict]]:
        paths, targets = voc.read_sets(self.root, sets, "data.train_sets" if train else "data.test_set")
        if not train or self.train_difficult:
            return paths, targets
        kept = [(path, _without_difficult(t)) for path, t in zip(paths, targets) if not t["difficult"].all()]
        return [path for path, _ in kept], [t for _, t in kept]

    def _read_coco(self, sets: list[str], train: bool) -> tuple[list[str], list[dict]]:
        paths, targets = [], []
        for name in sets:
            more_paths, more_targets, categories = coco.read_set(self.root, name, train, self.image_folder,
                                                                 self.annotation_file)
            if self._categories is None:
                self._categories = categories
            elif categories.ids != self._categories.ids:
                raise UserError(f"the categories of {self.annotation_file.format(set=name)} (ids "
                                f"{categories.ids}) are not those of the other sets (ids {self._categories.ids}): "
                                "the training and test sets must share one list of categories.")
            paths += more_paths
            targets += more_targets
        return paths, targets

    def _shard(self) -> tuple[int, int]:
        return self.shard(batch_size=self.batch_size, eval_batch_size=self.eval_batch_size)

    def setup(self, stage: str | None = None) -> None:
        self._set("test")
        if stage in (None, "fit") and len(self._set("train")) < self.batch_size:
            raise UserError(f"data.batch_size={self.batch_size} is more than the {len(self._set('train'))} training "
                            f"images of data.train_sets={self.train_sets}.")

    def _loader_args(self) -> dict:
        on_gpu = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return {"num_workers": self.num_workers, "pin_memory": on_gpu, "collate_fn": collate}

    def train_dataloader(self) -> StreamLoader:
        rank, world = self._shard()
        stream = TrainStream(self._set("train"), self.batch_size, rank, world, self.seed, self.flip)
        return StreamLoader(stream, self.global_step, batch_size=self.batch_size // world, **self._loader_args())

    def val_dataloader(self) -> list[DataLoader]:
        """The test set in its order, each image once over all processes (rank r of R: images r, r+R, ...)."""
        rank, world = self._shard()
        test = self._set("test")
        return [DataLoader(test, batch_size=self.eval_batch_size // world, sampler=Shard(test, rank, world),
                           persistent_workers=self.num_workers > 0, **self._loader_args())]
