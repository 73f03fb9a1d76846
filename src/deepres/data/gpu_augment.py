"""Batch-wise augmentation on the device that holds the data (CIFAR): pad, random crop, horizontal flip, drawn from
(seed, step) with one gather per batch and no per-image Python."""
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from deepres.data.streams import TRAIN_AUGMENT, EpochOrder, generator


def random_crop_flip(x: torch.Tensor, padding: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad each image by `padding`, take a random crop of the original size, mirror it with probability 1/2.

    Drawn independently per image, like torchvision's RandomCrop(size, padding) + RandomHorizontalFlip."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    offsets = torch.randint(0, 2 * padding + 1, (b, 2), generator=gen, device=x.device)
    rows = offsets[:, :1] + torch.arange(h, device=x.device)
    cols = offsets[:, 1:] + torch.arange(w, device=x.device)
    if flip:
        mirrored = torch.rand(b, generator=gen, device=x.device) < 0.5
        cols = torch.where(mirrored[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


class TrainBatches:
    """An endless stream of augmented training batches of device-resident images, epoch after epoch, dropping each
    epoch's last partial batch. Iteration starts at `start_step()` (the Trainer's global step), so a resumed run
    sees the batches it would have seen without the interruption.

    `batch_size` is the global batch. Under data parallelism, `shard` = (rank, world size): every process draws the
    same global batch (order and augmentation) and keeps its contiguous 1/world-size slice, so the images a run
    trains on do not depend on the number of processes."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, normalize: Callable[[torch.Tensor], torch.Tensor],
                 batch_size: int, padding: int, flip: bool, seed: int, start_step: Callable[[], int],
                 shard: tuple[int, int] = (0, 1)):
        self.images, self.labels, self.normalize = images, labels, normalize
        self.batch_size, self.padding, self.flip, self.seed = batch_size, padding, flip, seed
        self.start_step = start_step
        rank, world_size = shard
        per_rank = batch_size // world_size
        self.slice = slice(rank * per_rank, (rank + 1) * per_rank)
        self.batches_per_epoch = len(images) // batch_size
        self.order = EpochOrder(len(images), seed, lambda order: order.to(images.device))

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = divmod(step, self.batches_per_epoch)
        index = self.order(epoch)[i * self.batch_size:(i + 1) * self.batch_size]
        x = self.normalize(self.images[index])
        gen = generator(self.images.device, self.seed, TRAIN_AUGMENT, step)
        return random_crop_flip(x, self.padding, self.flip, gen)[self.slice], self.labels[index][self.slice]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        step = self.start_step()
        while True:
            yield self.batch(step)
            step += 1


class MemberBatches:
    """The batches of a pack's members (one TrainBatches per member) as one: images side by side along the
    channels, labels (B, K). A stream listed twice (members of one seed) draws its batch once."""

    def __init__(self, streams: list[TrainBatches]):
        self.streams = streams

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        iterators = {id(s): iter(s) for s in self.streams}
        while True:
            batches = {key: next(it) for key, it in iterators.items()}
            xs, ys = zip(*(batches[id(s)] for s in self.streams))
            yield torch.cat(xs, 1), torch.stack(ys, 1)


class EvalBatches:
    """The evaluation images in order, normalised, unaugmented (the paper tests on the original image only)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, normalize: Callable[[torch.Tensor], torch.Tensor],
                 batch_size: int):
        self.images, self.labels, self.normalize, self.batch_size = images, labels, normalize, batch_size

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.images), self.batch_size):
            end = start + self.batch_size
            yield self.normalize(self.images[start:end]), self.labels[start:end]
