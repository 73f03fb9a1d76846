"""ImageNet's class-folder layout, root/train/<class>/*.JPEG and root/val/<class>/*.JPEG, and reading one image.

Layout problems stop a run before training: a missing split, a class folder without images, val/ classes that are
not train/'s. An unreadable image is only found when it is read (ImageNetDataModule, `data.bad_images`)."""
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image, read_file

from deepres.errors import UserError

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
LAYOUT = ("ImageNet is read in the class-folder layout root/train/<class>/*.JPEG and root/val/<class>/*.JPEG "
          "(val/ sorted into the same class folders as train/)")


def _names(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")


def class_names(root: str | Path) -> list[str]:
    """The sorted class folders of root/train: class index i is the i-th name, in both splits."""
    train = Path(root).expanduser() / "train"
    if not train.is_dir():
        raise UserError(f"data.root={root} has no train/ folder. {LAYOUT}.")
    classes = sorted(entry.name for entry in os.scandir(train) if entry.is_dir())
    if not classes:
        raise UserError(f"{train} holds no class folders. {LAYOUT}.")
    return classes


@dataclass
class ClassFolder:
    """The images of one split: file names as a numpy bytes array (no per-file Python objects, so forked
    DataLoader workers share it instead of copying it) and their class indices."""

    root: Path
    classes: list[str]
    names: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, i: int) -> str:
        return os.path.join(self.root, self.classes[self.labels[i]], os.fsdecode(self.names[i]))


def held_out(folder: ClassFolder, size: int, seed: int) -> tuple[ClassFolder, ClassFolder]:
    """`size` images of the folder drawn by `seed` (the same for every run), and the others."""
    order = np.random.default_rng(seed).permutation(len(folder))
    parts = np.sort(order[:size]), np.sort(order[size:])
    return tuple(ClassFolder(folder.root, folder.classes, folder.names[i], folder.labels[i]) for i in parts)


def scan(root: str | Path, split: str, classes: list[str]) -> ClassFolder:
    """Every image of root/split, checking that its class folders are exactly `classes` and none is empty."""
    folder = Path(root).expanduser() / split
    if not folder.is_dir():
        raise UserError(f"data.root={root} has no {split}/ folder. {LAYOUT}.")
    found = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    if found != classes:
        missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
        parts = [f"missing from {split}/: {_names(missing)}"] if missing else []
        parts += [f"in {split}/ but not in train/: {_names(extra)}"] if extra else []
        raise UserError(f"the class folders of {folder} do not match train/'s ({'; '.join(parts)}). {LAYOUT}.")
    names, labels, empty = [], [], []
    for label, name in enumerate(classes):
        files = sorted(e.name for e in os.scandir(folder / name) if e.name.lower().endswith(IMAGE_SUFFIXES))
        if not files:
            empty.append(name)
        names += files
        labels += [label] * len(files)
    if empty:
        raise UserError(f"{len(empty)} class folder(s) of {folder} hold no images: {_names(empty)} (images end in "
                        f"{', '.join(IMAGE_SUFFIXES)}, any case); every class needs images in both splits. {LAYOUT}.")
    return ClassFolder(folder, classes, np.array([os.fsencode(n) for n in names]), np.array(labels, dtype=np.int64))


def read_rgb(path: str) -> torch.Tensor:
    """uint8 (3, H, W) through torchvision's libjpeg-turbo path (decode_rgb).
    Raises OSError or RuntimeError for a file that cannot be read or decoded."""
    return decode_rgb(read_file(path))


def decode_rgb(data: torch.Tensor) -> torch.Tensor:
    """A file's bytes to uint8 (3, H, W) on the CPU. decode_image picks the decoder by content, so greyscale and CMYK
    JPEGs and PNGs named .JPEG (ImageNet has a few of each) all come out RGB."""
    return decode_image(data, mode=ImageReadMode.RGB)
