"""The paper's ImageNet augmentation (section 3.4) and test views, split where each part is cheapest.

One uint8 image at a time: scale augmentation (shorter side resized to a random length in [256, 480], a random 224
crop, a flip) and the test views (centre crop, 10 crops, whole images at several scales), in the DataLoader workers
(data.decode=cpu) or on the training device after its JPEG decoder (data.decode=gpu). Then a whole batch at once on
the training device: float conversion, AlexNet's PCA colour noise and the mean subtraction."""
import random
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

# AlexNet-style PCA of ImageNet's RGB pixels in [0, 1] (eigenvalues, eigenvectors as columns), as in
# fb.resnet.torch, the reproduction of this paper by Facebook AI Research with its authors' advice.
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
              (-0.5808, -0.0045, -0.8140),
              (-0.5836, -0.6948, 0.4203))


class Window(NamedTuple):
    """Where the scale augmentation crops one image: a size x size square at (top, left) of the source image, resized
    to crop x crop, then mirrored or not."""

    top: int
    left: int
    size: int
    flip: bool


def draw_window(height: int, width: int, rng: random.Random, crop: int, scale: Sequence[int], flip: bool) -> Window:
    """The paper's scale augmentation for a height x width image: shorter side resized to a random length in
    [scale[0], scale[1]], a random crop x crop window, mirrored with probability 1/2.

    Only the window is resized: the same pixels as resizing the whole image and then cropping (up to rounding the
    window to whole source pixels), at a fraction of the cost. Both decode paths (data.decode) draw here, from the
    image's size alone, so they crop the same windows."""
    factor = rng.randint(scale[0], scale[1]) / min(height, width)
    top, left = rng.randint(0, round(height * factor) - crop), rng.randint(0, round(width * factor) - crop)
    size = min(round(crop / factor), height, width)
    top, left = min(round(top / factor), height - size), min(round(left / factor), width - size)
    return Window(top, left, size, flip and rng.random() < 0.5)


def crop_window(image: torch.Tensor, window: Window, crop: int) -> torch.Tensor:
    """(3, crop, crop): the window of a uint8 image, resized and mirrored, on the image's device."""
    out = TF.resized_crop(image, window.top, window.left, window.size, window.size, [crop, crop], antialias=True)
    return out.flip(-1) if window.flip else out


def crop_windows(images: Sequence[torch.Tensor], windows: Sequence[Window], crop: int) -> list[torch.Tensor]:
    """crop_window of each image (data.decode=gpu: a batch's decoded images). On a GPU they are made as one batch:
    per image a float conversion, a resize and the copy into its (mirrored) place, then one rounding to uint8 for
    the batch: the pixels of crop_window, which torchvision computes on CUDA the same way (in float32, rounded) in
    5 kernels per image. On a CPU crop_window resizes uint8 natively, so it runs one image at a time there."""
    if not images or images[0].device.type == "cpu":
        return [crop_window(image, window, crop) for image, window in zip(images, windows)]
    return list(crop_batch(images, windows, crop))


def crop_batch(images: Sequence[torch.Tensor], windows: Sequence[Window], crop: int) -> torch.Tensor:
    """(N, 3, crop, crop) uint8: the windows resized in float32 and rounded once (torchvision's float path)."""
    out = torch.empty(len(images), 3, crop, crop, device=images[0].device)
    for slot, image, window in zip(out, images, windows):
        region = image[:, window.top:window.top + window.size, window.left:window.left + window.size].float()
        if window.size != crop:
            region = F.interpolate(region[None], size=[crop, crop], mode="bilinear", align_corners=False,
                                   antialias=True)[0]
        slot.copy_(region.flip(-1) if window.flip else region)
    return out.round_().to(torch.uint8)


def scale_augment(image: torch.Tensor, rng: random.Random, crop: int, scale: Sequence[int], flip: bool
                  ) -> torch.Tensor:
    """The scale augmentation of a decoded image (draw_window, then crop_window)."""
    return crop_window(image, draw_window(*image.shape[-2:], rng, crop, scale, flip), crop)


def center_view(image: torch.Tensor, resize: int, crop: int) -> torch.Tensor:
    """(3, crop, crop): the centre of the image with its shorter side resized to `resize` (Fig. 4's val error)."""
    return TF.center_crop(TF.resize(image, resize, antialias=True), crop)


def ten_crop_views(image: torch.Tensor, resize: int, crop: int) -> torch.Tensor:
    """(10, 3, crop, crop): the four corners and the centre of the resized image, and their mirror images."""
    return torch.stack(TF.ten_crop(TF.resize(image, resize, antialias=True), crop))


def multi_scale_views(image: torch.Tensor, scales: Sequence[int]) -> list[torch.Tensor]:
    """One (2, 3, H, W) tensor per scale: the whole image with its shorter side resized to that scale, and its
    mirror image, for the fully convolutional net (whose global average pool averages the scores over positions)."""
    views = []
    for short in scales:
        resized = TF.resize(image, short, antialias=True)
        views.append(torch.stack([resized, resized.flip(-1)]))
    return views


class ColourNormalize:
    """uint8 batches to float: x / 255, plus the PCA colour noise when given its draws, minus the per-channel
    mean, divided by the per-channel std if one is given (the paper only subtracts the mean).

    The constants are moved to the batches' device once (per device and dtype), not at every batch: a copy from the
    host is a blocking transfer on a GPU."""

    def __init__(self, mean: Sequence[float], std: Sequence[float] | None, lighting: float):
        self.mean, self.std, self.lighting = torch.tensor(mean), None if std is None else torch.tensor(std), lighting
        # noise = alpha @ (eigvec * eigval).T for alpha ~ N(0, lighting): AlexNet's eigvec @ (alpha * eigval)
        self.mixing = (torch.tensor(PCA_EIGVEC) * torch.tensor(PCA_EIGVAL)).T.contiguous()
        self._on: dict[tuple, tuple] = {}

    def _constants(self, like: torch.Tensor) -> tuple:
        """(mean, std or None, mixing) as (3, 1, 1), (3, 1, 1), (3, 3) tensors on like's device and dtype."""
        key = (like.device, like.dtype)
        if key not in self._on:
            shape = (3, 1, 1)
            std = None if self.std is None else self.std.to(like).view(shape)
            self._on[key] = (self.mean.to(like).view(shape), std, self.mixing.to(like))
        return self._on[key]

    def colour_noise(self, normal: torch.Tensor) -> torch.Tensor:
        """(B, 3) RGB offsets from standard-normal draws (B, 3): eigvec @ (alpha * eigval), alpha ~ N(0, lighting)."""
        return (normal * self.lighting) @ self._constants(normal)[2]

    def __call__(self, images: torch.Tensor, normal: torch.Tensor | None = None) -> torch.Tensor:
        """images: (..., 3, H, W) uint8; normal: (B, 3) draws for a training batch (B, 3, H, W), else None."""
        x = images.float().div_(255)
        mean, std, _ = self._constants(x)
        if normal is not None and self.lighting:
            x += self.colour_noise(normal)[:, :, None, None]
        x -= mean
        return x.div_(std) if std is not None else x
