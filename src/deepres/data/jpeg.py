"""ImageNet's GPU input path (data.decode=gpu): DataLoader workers only read each file's bytes and parse its JPEG
header; the training process decodes the whole batch on the GPU (nvJPEG through torchvision.io.decode_jpeg) and
crops, resizes and mirrors each image there.

nvJPEG takes plain colour JPEGs. Anything else (greyscale or CMYK JPEGs, PNGs named .JPEG, files cut short, a
decode the GPU refuses) is decoded by libjpeg-turbo on the CPU instead, counted, and trained on all the same."""
import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils._pytree import tree_leaves, tree_map
from torch.utils.data import default_collate
from torchvision.io import ImageReadMode, decode_jpeg, read_file

from deepres.data.imagenet_augment import Window, draw_window, scale_augment
from deepres.data.imagenet_folder import decode_rgb

log = logging.getLogger("deepres")

# start-of-frame markers nvJPEG decodes: baseline, extended and progressive Huffman-coded JPEG
DEVICE_FRAMES = {0xC0, 0xC1, 0xC2}
# markers without a length field (restart markers, start and end of image, TEM)
BARE_MARKERS = {*range(0xD0, 0xDA), 0x01}


class Jpeg(NamedTuple):
    """A plain colour JPEG's bytes and size, as read in a worker for the device to decode."""

    data: torch.Tensor  # uint8, the whole file
    height: int
    width: int


class Encoded(NamedTuple):
    """A JPEG file's bytes, to be decoded on the training device, and, for a training image, its window."""

    data: torch.Tensor  # uint8, the whole file
    window: Window | None  # None for an evaluation image: the test views are taken after decoding


class CpuDecoded(NamedTuple):
    """An image the worker decoded (and augmented or cut into test views) on the CPU: not a plain colour JPEG."""

    pixels: object


def load(path: str) -> Jpeg | torch.Tensor:
    """The file as a Jpeg for the device, or, if it is not a plain colour JPEG, decoded on the CPU to uint8 RGB.
    Raises OSError or RuntimeError for a file that cannot be read or decoded."""
    data = read_file(path)
    size = colour_jpeg_size(data)
    return Jpeg(data, *size) if size else decode_rgb(data)


def train_item(image: Jpeg | torch.Tensor, rng, crop: int, scale: Sequence[int], flip: bool) -> Encoded | CpuDecoded:
    """A worker's share of the scale augmentation: only the window's draw for a JPEG the device decodes, all of it
    for an image decoded here. Both draw from `rng` alike, so the path does not change the windows."""
    if isinstance(image, Jpeg):
        return Encoded(image.data, draw_window(image.height, image.width, rng, crop, scale, flip))
    return CpuDecoded(scale_augment(image, rng, crop, scale, flip))


def eval_item(image: Jpeg | torch.Tensor, views: Callable[[torch.Tensor], object]) -> Encoded | CpuDecoded:
    """A worker's share of the test views: none for a JPEG the device decodes, all of them for one decoded here."""
    return Encoded(image.data, None) if isinstance(image, Jpeg) else CpuDecoded(views(image))


def colour_jpeg_size(data: torch.Tensor) -> tuple[int, int] | None:
    """(height, width) of a 3-component baseline or progressive JPEG that ends with its end-of-image marker;
    None for anything else, which the CPU decodes. Walks the header's segments up to the frame header only."""
    raw = data.numpy().tobytes() if isinstance(data, torch.Tensor) else bytes(data)
    if raw[:2] != b"\xff\xd8" or raw[-2:] != b"\xff\xd9":
        return None
    at = 2
    while at + 4 <= len(raw):
        if raw[at] != 0xFF:
            return None
        marker = raw[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in BARE_MARKERS:
            at += 2
            continue
        length = int.from_bytes(raw[at + 2:at + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame
            if marker not in DEVICE_FRAMES or at + 10 > len(raw):
                return None
            height, width = int.from_bytes(raw[at + 5:at + 7], "big"), int.from_bytes(raw[at + 7:at + 9], "big")
            return (height, width) if raw[at + 9] == 3 and height and width else None
        if marker == 0xDA:  # start of scan before any frame header
            return None
        at += 2 + length
    return None


class Files(NamedTuple):
    """A batch's items as they cross from a worker: the Encoded files' bytes end to end in one tensor (one
    shared-memory transfer, where a tensor per file would cost a file descriptor each), the items without them,
    and CPU-decoded pixels as numpy arrays (pickled inline)."""

    data: torch.Tensor
    lengths: list[int]
    items: list

    def unpack(self) -> list:
        files = iter(torch.split(self.data, self.lengths))
        return [item._replace(data=next(files)) if isinstance(item, Encoded) else
                tree_map(_from_numpy, item) for item in self.items]


def collate(samples: Sequence[tuple]) -> tuple:
    """Batch (item, label, reason[, step]) samples whose items are Encoded files or CPU-decoded images: the items
    become Files (they differ in size), the rest is batched as usual."""
    items, *rest = zip(*samples)
    files = [item.data for item in items if isinstance(item, Encoded)]
    data = torch.cat(files) if files else torch.empty(0, dtype=torch.uint8)
    light = [item._replace(data=None) if isinstance(item, Encoded) else tree_map(_to_numpy, item) for item in items]
    return (Files(data, [len(f) for f in files], light), *default_collate(list(zip(*rest))))


def _to_numpy(value):
    return value.numpy() if isinstance(value, torch.Tensor) else value


def _from_numpy(value):
    return torch.from_numpy(value) if isinstance(value, np.ndarray) else value


class DeviceDecoder:
    """Decodes a batch's Encoded items on `device` in one call and finishes their images there with
    finish(images, items) (their crops or views, in order); CpuDecoded items pass through unwrapped, anything else
    as it is. On CUDA the work runs on a
    side stream, so decoding batch k+1 overlaps the training kernels of batch k that are still queued.

    `cpu_decoded` counts the images of this process that were decoded on the CPU (by a worker or here)."""

    def __init__(self, device: torch.device, finish: Callable[[list[torch.Tensor], list[Encoded]], list]):
        self.device, self.finish = device, finish
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.cpu_decoded = 0

    def __call__(self, files: Files) -> list:
        """The finished items, in order. Raises RuntimeError for a file no decoder reads."""
        items = files.unpack()
        if self.stream is None:
            return self._decode(items)
        # nvJPEG writes the decoded images on a stream of its own, into blocks this side stream's pool may hand
        # out again while the previous batch's crop kernels, queued here, still read them: let those finish first
        self.stream.synchronize()
        with torch.cuda.stream(self.stream):
            out = self._decode(items)
        main = torch.cuda.current_stream(self.device)
        main.wait_stream(self.stream)
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                tensor.record_stream(main)
        return out

    def _decode(self, items: list) -> list:
        encoded = [i for i, item in enumerate(items) if isinstance(item, Encoded)]
        images = self._decode_all([items[i].data for i in encoded])
        self._count(sum(isinstance(item, CpuDecoded) for item in items), "not plain colour JPEGs")
        out = [tree_map(self._to_device, item.pixels if isinstance(item, CpuDecoded) else item) for item in items]
        for i, finished in zip(encoded, self.finish(images, [items[i] for i in encoded])):
            out[i] = finished
        return out

    def _decode_all(self, files: list[torch.Tensor]) -> list[torch.Tensor]:
        if not files:
            return []
        try:
            return decode_jpeg(files, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:  # one file spoils the batched call: find it
            return [self._decode_one(data) for data in files]

    def _decode_one(self, data: torch.Tensor) -> torch.Tensor:
        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError as err:
            self._count(1, f"refused by the {self.device.type} decoder: {str(err).strip()[:200]}")
            return decode_rgb(data).to(self.device)

    def _to_device(self, value):
        return value.to(self.device, non_blocking=True) if isinstance(value, torch.Tensor) else value

    def _count(self, images: int, why: str) -> None:
        if images and not self.cpu_decoded:
            log.info(f"decoding {images} image(s) on the CPU ({why}); more such images are only counted")
        self.cpu_decoded += images
