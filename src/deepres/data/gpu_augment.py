"""Batch-wise augmentation on the device that holds the data (CIFAR): pad, random crop, horizontal flip.

The training set is normalised and zero-padded once, on the device, in the net's memory layout (resident()); an
epoch's crop windows and flips are drawn at once from (seed, epoch), and each batch is then one gather of its crops:
no per-image Python, two kernels a batch (images and labels), and batch k is a function of (seed, k), the same
whether a run is resumed or not."""
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from deepres.data.streams import TRAIN_AUGMENT, EpochOrder, generator


def resident(images: torch.Tensor, normalize: Callable[[torch.Tensor], torch.Tensor], padding: int,
             device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 images (N, C, H, W), normalised and zero-padded by `padding` on each side (padding 0: as they are),
    on `device`, channels-last in memory if asked (the batches then come out channels-last for free)."""
    x = F.pad(normalize(images), (padding,) * 4) if padding else normalize(images)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format).to(device)


class TrainBatches:
    """An endless stream of augmented training batches, epoch after epoch, dropping each epoch's last partial batch:
    random crops of the resident padded images (padded by `padding`, cropped back to their original size), each
    mirrored with probability 1/2 when `flip`, drawn independently per image like torchvision's RandomCrop(size,
    padding) + RandomHorizontalFlip. Iteration starts at `start_step()` (the Trainer's global step), so a resumed
    run sees the batches it would have seen without the interruption.

    `batch_size` is the global batch. Under data parallelism, `shard` = (rank, world size): every process draws the
    same global batch (order and augmentation) and keeps its contiguous 1/world-size slice, so the images a run
    trains on do not depend on the number of processes."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, padding: int, flip: bool,
                 seed: int, start_step: Callable[[], int], shard: tuple[int, int] = (0, 1)):
        self.images, self.labels, self.padding, self.flip, self.seed = images, labels, padding, flip, seed
        self.batch_size, self.start_step = batch_size, start_step
        self.height, self.width = images.shape[2] - 2 * padding, images.shape[3] - 2 * padding
        rank, world_size = shard
        per_rank = batch_size // world_size
        self.slice = slice(rank * per_rank, (rank + 1) * per_rank)
        self.batches_per_epoch = len(images) // batch_size
        self.order = EpochOrder(len(images), seed, lambda order: order.to(images.device))
        channels_last = images.is_contiguous(memory_format=torch.channels_last)
        self.nhwc = images.permute(0, 2, 3, 1) if channels_last else None
        self.channel = None if channels_last else torch.arange(images.shape[1], device=images.device)[:, None, None]
        self._epoch, self._draws = -1, None
        self.steps_only = False

    def draws(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This process's images, crop rows and crop columns of every batch of the epoch: (batches, B) indices,
        (batches, B, H) and (batches, B, W) pixel positions in the padded images. A new epoch's are written into the
        same tensors (a captured training step reads them there)."""
        if epoch != self._epoch:
            device, shape = self.images.device, (self.batches_per_epoch, self.batch_size)
            gen = generator(device, self.seed, TRAIN_AUGMENT, epoch)
            offsets = torch.randint(0, 2 * self.padding + 1, (*shape, 2), generator=gen, device=device)
            rows = offsets[..., :1] + torch.arange(self.height, device=device)
            cols = offsets[..., 1:] + torch.arange(self.width, device=device)
            if self.flip:
                mirrored = torch.rand((*shape, 1), generator=gen, device=device) < 0.5
                cols = torch.where(mirrored, cols.flip(-1), cols)
            index = self.order(epoch)[:shape[0] * shape[1]].view(shape)
            draws = tuple(t[:, self.slice] for t in (index, rows, cols))
            if self._draws is None:
                self._draws = tuple(t.contiguous() for t in draws)
            else:
                for kept, new in zip(self._draws, draws):
                    kept.copy_(new)
            self._epoch = epoch
        return self._draws

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = divmod(step, self.batches_per_epoch)
        return self._gather(*(t[i] for t in self.draws(epoch)))

    def batch_at(self, epoch: int, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch i of the epoch, i a 0-dim tensor on the device: what a captured training step draws."""
        return self._gather(*(t[i] for t in self.draws(epoch)))

    def _gather(self, index: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.nhwc is not None:  # (B, H, W, C) in memory: channels-last batches
            x = self.nhwc[index[:, None, None], rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        else:
            x = self.images[index[:, None, None, None], self.channel, rows[:, None, :, None], cols[:, None, None, :]]
        return x, self.labels[index]

    def __iter__(self) -> Iterator:
        return _stream(self)


class MemberBatches:
    """The batches of a pack's members (one TrainBatches per member) as one: images side by side along the
    channels, labels (B, K). A stream listed twice (members of one seed) draws its batch once."""

    def __init__(self, streams: list[TrainBatches]):
        self.streams, self.start_step = streams, streams[0].start_step
        self.batches_per_epoch, self.steps_only = streams[0].batches_per_epoch, False

    def draws(self, epoch: int) -> None:
        for stream in self.streams:
            stream.draws(epoch)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._join({id(s): s.batch(step) for s in self.streams})

    def batch_at(self, epoch: int, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._join({id(s): s.batch_at(epoch, i) for s in self.streams})

    def _join(self, batches: dict[int, tuple]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*(batches[id(s)] for s in self.streams))
        return torch.cat(xs, 1), torch.stack(ys, 1)

    def __iter__(self) -> Iterator:
        return _stream(self)


def _stream(batches: TrainBatches | MemberBatches) -> Iterator:
    """The batches from the Trainer's step on; with `steps_only`, the steps alone (a captured training step draws
    its batch itself: training/step_graph.py)."""
    step = batches.start_step()
    while True:
        yield step if batches.steps_only else batches.batch(step)
        step += 1


class EvalBatches:
    """The evaluation images in order, resident and normalised (resident() with no padding), unaugmented (the paper
    tests on the original image only): each batch is a slice, no kernel."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int):
        self.images, self.labels, self.batch_size = images, labels, batch_size

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.images), self.batch_size):
            end = start + self.batch_size
            yield self.images[start:end], self.labels[start:end]
