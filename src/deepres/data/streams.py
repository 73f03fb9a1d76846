"""What the CIFAR and ImageNet training streams share: every draw comes from a generator seeded by a key (seed, what,
step...), the epoch-wise shuffled order, and, DataModule-side, the Trainer's iteration (where a resumed stream
starts) and this process's share of the global batch.

Batch k is then the same whether a run is resumed or not, and for any number of processes and workers."""
from collections.abc import Callable

import lightning as L
import numpy as np
import torch

from deepres.errors import UserError

# generator keys: what a draw is for, beside the seed
TRAIN_AUGMENT, TRAIN_ORDER, COLOUR_NOISE = 0, 1, 2
SAMPLING = 3  # a detector's draws of anchors and RoIs (torchvision's samplers use torch's global generator)
VAL_SPLIT = 2  # CIFAR's held-out split (a key of its own data set: ImageNet has no colour noise there)


def derived_seed(*key: int) -> int:
    """A seed that is a pure function of the integer key."""
    return int(np.random.SeedSequence([abs(k) for k in key]).generate_state(1, dtype=np.uint64)[0]) >> 1


def generator(device: torch.device, *key: int) -> torch.Generator:
    """A generator on `device` whose state is a pure function of the integer key."""
    return torch.Generator(device=device).manual_seed(derived_seed(*key))


class EpochOrder:
    """The order of `size` items in each epoch, drawn from (seed, epoch) on the CPU, as `convert` keeps it (on the
    training device, as a numpy array...); the current epoch's is kept."""

    def __init__(self, size: int, seed: int, convert: Callable[[torch.Tensor], object] = lambda order: order):
        self.size, self.seed, self.convert = size, seed, convert
        self._epoch, self._order = -1, None

    def __call__(self, epoch: int):
        if epoch != self._epoch:
            gen = generator(torch.device("cpu"), self.seed, TRAIN_ORDER, epoch)
            self._epoch, self._order = epoch, self.convert(torch.randperm(self.size, generator=gen))
        return self._order


class StreamDataModule(L.LightningDataModule):
    """A DataModule whose training stream starts at the Trainer's iteration and whose batch sizes are global."""

    def global_step(self) -> int:
        return self.trainer.global_step if self.trainer is not None else 0

    def shard(self, **global_batches: int) -> tuple[int, int]:
        """(rank, world size) of this process: each process loads its 1/world-size slice of every global batch
        (data.batch_size=..., data.eval_batch_size=...), which must split evenly."""
        if self.trainer is None:
            return 0, 1
        rank, world = self.trainer.global_rank, self.trainer.world_size
        for key, size in global_batches.items():
            if size % world:
                raise UserError(f"data.{key}={size} is the global batch and must split evenly over the {world} "
                                f"processes (trainer.devices x trainer.num_nodes); use a multiple of {world}.")
        return rank, world
