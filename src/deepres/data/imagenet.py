"""The ImageNet DataModule: the training stream of section 3.4 and the val images under one of the paper's
test protocols (`eval.mode`: center, ten_crop, multi_scale).

`data.decode=cpu`: DataLoader workers read and decode JPEGs (torchvision's libjpeg-turbo path) and resize or crop
them as uint8. `data.decode=gpu`: workers only read the files, and the training process decodes and crops them on
the GPU (jpeg.py). Either way batches travel in pinned memory and the float conversion, colour noise and mean
subtraction run on the training device (imagenet_augment.py). `batch_size` is the global batch: each of N
processes (DDP) loads batch_size / N."""
import itertools
import logging
import random
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, default_collate, get_worker_info

from deepres.data.imagenet_augment import (
    ColourNormalize,
    center_view,
    crop_windows,
    multi_scale_views,
    scale_augment,
    ten_crop_views,
)
from deepres.data.imagenet_folder import LAYOUT, ClassFolder, class_names, held_out, read_rgb, scan
from deepres.data.jpeg import DeviceDecoder, Encoded, collate, eval_item, load, train_item
from deepres.data.streams import COLOUR_NOISE, EpochOrder, StreamDataModule, generator
from deepres.errors import UserError

log = logging.getLogger("deepres")
EVAL_MODES = ("center", "ten_crop", "multi_scale")
BAD_IMAGES = ("fail", "skip")
DECODERS = ("cpu", "gpu")
SUBSTITUTES = 10  # unreadable training images in a row before giving up


def _read(folder: ClassFolder, i: int, read: Callable[[str], object]) -> tuple[object | None, str]:
    """read(path) and "" or None and "path: why it could not be read"."""
    path = folder.path(i)
    try:
        return read(path), ""
    except (OSError, RuntimeError) as err:
        return None, f"{path}: {str(err).strip().splitlines()[-1]}"


class TrainSamples(IterableDataset):
    """One process's share of the endless training stream.

    Global batch k holds positions k*B .. (k+1)*B of the epoch-wise shuffled order (the last partial batch of an
    epoch is dropped); rank r of R decodes its slice r*B/R .. (r+1)*B/R. Worker w of W decodes batches w, w+W, ...,
    which the DataLoader returns in turn. Each image's augmentation is drawn from (seed, k, position), so the global
    batches are the same for any number of GPUs and workers, and a resumed run continues the stream exactly.
    An unreadable image is replaced by the next readable file; its reason travels with the batch."""

    def __init__(self, folder: ClassFolder, batch_size: int, rank: int, world_size: int, seed: int,
                 augment: Callable[[torch.Tensor, random.Random], object], read: Callable[[str], object] = read_rgb):
        self.folder, self.batch_size, self.seed, self.augment, self.read = folder, batch_size, seed, augment, read
        self.share = batch_size // world_size
        self.first = rank * self.share
        self.batches_per_epoch = len(folder) // batch_size
        self.start_step = 0  # set by StreamLoader each time iteration starts
        self.order = EpochOrder(len(folder), seed, torch.Tensor.numpy)

    def sample(self, step: int, position: int) -> tuple[torch.Tensor, int, str, int]:
        epoch, k = divmod(step, self.batches_per_epoch)
        i = int(self.order(epoch)[k * self.batch_size + position])
        image, bad = _read(self.folder, i, self.read)
        for _ in range(SUBSTITUTES):
            if image is not None:
                break
            i = (i + 1) % len(self.folder)
            image = _read(self.folder, i, self.read)[0]
        if image is None:
            raise RuntimeError(f"{bad}, and the {SUBSTITUTES} files after it cannot be read either")
        rng = random.Random(f"{self.seed}/{step}/{position}")
        return self.augment(image, rng), int(self.folder.labels[i]), bad, step

    def __iter__(self):
        worker = get_worker_info()
        first, every = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        for step in itertools.count(self.start_step + first, every):
            for position in range(self.first, self.first + self.share):
                yield self.sample(step, position)


class StreamLoader(DataLoader):
    """A DataLoader that starts the training stream at the Trainer's iteration each time it is iterated (before
    its workers take their copy of the stream)."""

    def __init__(self, stream: TrainSamples, start_step: Callable[[], int], **kwargs):
        super().__init__(stream, **kwargs)
        self.start_step = start_step

    def __iter__(self):
        self.dataset.start_step = self.start_step()
        return super().__iter__()


class EvalImages(Dataset):
    """The val images under one test protocol: views(read(path)); an unreadable one yields the views of a black
    placeholder and its reason."""

    def __init__(self, folder: ClassFolder, views: Callable[[torch.Tensor], object], placeholder: int,
                 read: Callable[[str], object] = read_rgb, prepare: Callable[[object], object] | None = None):
        self.folder, self.views, self.placeholder, self.read = folder, views, placeholder, read
        self.prepare = prepare or views

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, i: int) -> tuple[object, int, str]:
        image, bad = _read(self.folder, i, self.read)
        label = int(self.folder.labels[i])
        if image is None:
            return self.views(torch.zeros(3, self.placeholder, self.placeholder, dtype=torch.uint8)), label, bad
        return self.prepare(image), label, bad


class Shard(DistributedSampler):
    """Rank r of R evaluates images r, r+R, ...: every image exactly once over all ranks (DistributedSampler pads
    with repeats). Being a DistributedSampler, Lightning leaves it in place."""

    def __init__(self, dataset: Dataset, rank: int, world_size: int):
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=False)

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))


class ImageNetDataModule(StreamDataModule):
    """Train on root/train with the paper's augmentation; evaluate root/val (logged as `test/`, with top-5), and,
    with val_size > 0, that many training images held out of training (logged as `val/`, evaluated as root/val is):
    the split the plateau schedule reads, so that the reported one decides nothing."""

    top5 = True

    def __init__(self, name: str = "imagenet", root: str = "data/imagenet", batch_size: int = 256,
                 eval_batch_size: int = 200, num_workers: int = 8, crop: int = 224, scale: tuple[int, int] = (256, 480),
                 flip: bool = True, lighting: float = 0.1, mean: tuple[float, ...] = (0.485, 0.456, 0.406),
                 std: tuple[float, ...] | None = None, bad_images: str = "fail", eval_mode: str = "center",
                 eval_resize: int = 256, eval_scales: tuple[int, ...] = (224, 256, 384, 480, 640), seed: int = 0,
                 decode: str = "cpu", val_size: int = 0, split_seed: int = 0):
        super().__init__()
        self.name, self.root, self.seed, self.decode = name, root, seed, decode
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.crop, self.scale, self.flip = crop, tuple(scale), flip
        self.eval_mode, self.eval_resize, self.eval_scales = eval_mode, eval_resize, tuple(eval_scales)
        self.bad_images = bad_images
        self.normalize = ColourNormalize(mean, std, lighting)
        self.val_size, self.split_seed = val_size, split_seed
        self.eval_names = ["val", "test"] if val_size > 0 else ["test"]
        self.skipped: dict[str, str] = {}  # unreadable files seen with bad_images=skip: path -> reason
        self.decoder: DeviceDecoder | None = None  # data.decode=gpu: made for the training device at setup
        self._check()

    def _check(self) -> None:
        for key, value, valid in (("data.bad_images", self.bad_images, BAD_IMAGES),
                                  ("eval.mode", self.eval_mode, EVAL_MODES), ("data.decode", self.decode, DECODERS)):
            if value not in valid:
                raise UserError(f"{key}={value!r} is unknown; valid: {', '.join(valid)}.")
        if not (len(self.scale) == 2 and self.crop <= self.scale[0] <= self.scale[1]):
            raise UserError(f"data.scale={list(self.scale)} must be [low, high] with data.crop={self.crop} <= low "
                            "<= high (the paper: [256, 480] with crop 224).")
        if self.eval_resize < self.crop:
            raise UserError(f"eval.resize={self.eval_resize} must be at least data.crop={self.crop} (the paper: 256).")

    @property
    def num_classes(self) -> int:
        return len(class_names(self.root))

    def check_files(self) -> None:
        """root/train and root/val hold the same class folders (a UserError saying what is wrong otherwise)."""
        class_names(self.root)  # raises for a missing or empty train/
        if not (Path(self.root).expanduser() / "val").is_dir():
            raise UserError(f"data.root={self.root} has no val/ folder. {LAYOUT}.")

    @property
    def test_images(self) -> int:
        """The val images evaluated: all but the unreadable ones skipped."""
        return len(self.val) - len(self.skipped)

    def _shard(self) -> tuple[int, int]:
        return self.shard(batch_size=self.batch_size, eval_batch_size=self.eval_batch_size)

    def setup(self, stage: str | None = None) -> None:
        if self.decode == "gpu" and self.decoder is None:
            device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
            if self.trainer is not None and device.type != "cuda":
                raise UserError(f"data.decode=gpu decodes JPEGs on the training GPU, but this run trains on "
                                f"{device.type}; use data.decode=cpu (the default off CUDA).")
            self.decoder = DeviceDecoder(device, self._finish)
        classes = class_names(self.root)
        self.val = scan(self.root, "val", classes)
        if (stage in (None, "fit") or self.val_size) and not hasattr(self, "train"):
            train = scan(self.root, "train", classes)
            if not 0 <= self.val_size < len(train):
                raise UserError(f"data.val_size={self.val_size} must be in [0, {len(train) - 1}]: the training "
                                f"images of {self.root} held out to evaluate.")
            self.held_out, self.train = held_out(train, self.val_size, self.split_seed)
            if len(self.train) < self.batch_size:
                raise UserError(f"data.batch_size={self.batch_size} is larger than the {len(self.train)} training "
                                f"images of {self.root}" + (f" left after data.val_size={self.val_size}." if
                                                            self.val_size else "."))

    def train_dataloader(self) -> StreamLoader:
        rank, world = self._shard()
        augment = partial(train_item if self.decoder else scale_augment, crop=self.crop, scale=self.scale,
                          flip=self.flip)
        stream = TrainSamples(self.train, self.batch_size, rank, world, self.seed, augment, self._reader())
        return StreamLoader(stream, self.global_step, batch_size=self.batch_size // world, **self._loader_args())

    def _reader(self) -> Callable[[str], object]:
        return load if self.decoder else read_rgb

    def _loader_args(self) -> dict:
        on_gpu = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        # pinned batches for the host-to-device copy of decoded pixels; nvJPEG reads the files from any host memory
        args = {"num_workers": self.num_workers, "pin_memory": on_gpu and self.decoder is None}
        return {**args, "collate_fn": collate} if self.decoder is not None else args

    def _finish(self, images: list[torch.Tensor], items: list[Encoded]) -> list:
        """What the workers would have made of decoded images: their training crops (as one batch), or their test
        views."""
        out = [None if item.window is not None else self.views(image) for image, item in zip(images, items)]
        train = [i for i, item in enumerate(items) if item.window is not None]
        crops = crop_windows([images[i] for i in train], [items[i].window for i in train], self.crop)
        for i, cropped in zip(train, crops):
            out[i] = cropped
        return out

    def val_dataloader(self) -> list[DataLoader]:
        rank, world = self._shard()
        views, batch = {
            "center": (partial(center_view, resize=self.eval_resize, crop=self.crop), self.eval_batch_size // world),
            "ten_crop": (partial(ten_crop_views, resize=self.eval_resize, crop=self.crop),
                         self.eval_batch_size // world),
            # whole images of different shapes: one per batch
            "multi_scale": (partial(multi_scale_views, scales=self.eval_scales), 1),
        }[self.eval_mode]
        self.views = views
        loaders = []
        for folder in ([self.held_out] if self.val_size else []) + [self.val]:
            images = EvalImages(folder, views, self.crop, self._reader(),
                                partial(eval_item, views=views) if self.decoder else None)
            loaders.append(DataLoader(images, batch_size=batch, sampler=Shard(images, rank, world),
                                      persistent_workers=self.num_workers > 0, **self._loader_args()))
        return loaders

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Take the unreadable-file reasons (and a training batch's iteration) off the batch, on the host; with
        data.decode=gpu, decode the batch's files on the device."""
        x, y, bad, *step = batch
        if self.decoder is not None:
            x = default_collate(self.decoder(x))
        return x, y, {"bad": self._bad(bad), "step": int(step[0][0]) if step else None}

    def teardown(self, stage: str) -> None:
        if self.decoder is not None and self.decoder.cpu_decoded:
            log.info(f"{self.decoder.cpu_decoded} image(s) were decoded on the CPU instead of the GPU")

    def _bad(self, reasons: list[str]) -> list[int]:
        """Rows read from unreadable files: a user error with bad_images=fail; counted and logged with skip."""
        rows = [i for i, reason in enumerate(reasons) if reason]
        for i in rows:
            if self.bad_images == "fail":
                raise UserError(f"cannot read the image {reasons[i]}. Replace or delete the file, or set "
                                "data.bad_images=skip to go on without such files (each is logged and counted).")
            path, reason = reasons[i].split(": ", 1)
            if path not in self.skipped:
                self.skipped[path] = reason
                log.warning(f"skipping unreadable image {path} ({reason}); {len(self.skipped)} skipped so far")
        return rows

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Normalise on the device; a training batch also gets its colour noise (drawn for the global batch from
        (seed, iteration)); evaluation drops the rows of unreadable files (training replaced them already)."""
        x, y, info = batch
        if info["step"] is not None:
            rank, world = self._shard()
            gen = generator(x.device, self.seed, COLOUR_NOISE, info["step"])
            normal = torch.randn(self.batch_size, 3, generator=gen, device=x.device)
            share = self.batch_size // world
            return self.normalize(x, normal[rank * share:(rank + 1) * share]), y
        views = [self.normalize(v) for v in (x if isinstance(x, list) else [x])]
        if info["bad"]:
            keep = torch.ones(len(y), dtype=torch.bool)
            keep[info["bad"]] = False
            views, y = [v[keep.to(v.device)] for v in views], y[keep.to(y.device)]
        return (views if isinstance(x, list) else views[0]), y
