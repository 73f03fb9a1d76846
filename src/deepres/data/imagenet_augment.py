"""The paper's ImageNet augmentation (section 3.4) and test views, split where each part is cheapest.

In the DataLoader workers, one uint8 image at a time: scale augmentation (shorter side resized to a random length
in [256, 480], a random 224 crop, a flip) and the test views (centre crop, 10 crops, whole images at several
scales). On the training device, a whole batch at once: float conversion, AlexNet's PCA colour noise and the mean
subtraction, so that the workers decode and resize, and the batch crosses to the GPU as uint8 (4x fewer bytes)."""
import random
from collections.abc import Sequence

import torch
from torchvision.transforms.v2 import functional as TF

# AlexNet-style PCA of ImageNet's RGB pixels in [0, 1] (eigenvalues, eigenvectors as columns), as in
# fb.resnet.torch, the reproduction of this paper by Facebook AI Research with its authors' advice.
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
              (-0.5808, -0.0045, -0.8140),
              (-0.5836, -0.6948, 0.4203))


def scale_augment(image: torch.Tensor, rng: random.Random, crop: int, scale: Sequence[int], flip: bool
                  ) -> torch.Tensor:
    """Resize the shorter side to a random length in [scale[0], scale[1]], take a random crop x crop window, mirror it
    with probability 1/2.

    Only the window is resized: the same pixels as resizing the whole image and then cropping (up to rounding the
    window to whole source pixels), at a fraction of the cost."""
    h, w = image.shape[-2:]
    factor = rng.randint(scale[0], scale[1]) / min(h, w)
    top, left = rng.randint(0, round(h * factor) - crop), rng.randint(0, round(w * factor) - crop)
    size = min(round(crop / factor), h, w)
    top, left = min(round(top / factor), h - size), min(round(left / factor), w - size)
    out = TF.resized_crop(image, top, left, size, size, [crop, crop], antialias=True)
    return out.flip(-1) if flip and rng.random() < 0.5 else out


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
    mean, divided by the per-channel std if one is given (the paper only subtracts the mean)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float] | None, lighting: float):
        self.mean, self.std, self.lighting = torch.tensor(mean), None if std is None else torch.tensor(std), lighting
        self.eigval, self.eigvec = torch.tensor(PCA_EIGVAL), torch.tensor(PCA_EIGVEC)

    def colour_noise(self, normal: torch.Tensor) -> torch.Tensor:
        """(B, 3) RGB offsets from standard-normal draws (B, 3): eigvec @ (alpha * eigval), alpha ~ N(0, lighting)."""
        alpha = normal * self.lighting
        return (alpha * self.eigval.to(normal)) @ self.eigvec.to(normal).T

    def __call__(self, images: torch.Tensor, normal: torch.Tensor | None = None) -> torch.Tensor:
        """images: (..., 3, H, W) uint8; normal: (B, 3) draws for a training batch (B, 3, H, W), else None."""
        x = images.float().div_(255)
        if normal is not None and self.lighting:
            x += self.colour_noise(normal)[:, :, None, None]
        x -= self.mean.to(x)[:, None, None]
        return x.div_(self.std.to(x)[:, None, None]) if self.std is not None else x
