"""Data parallelism (trainer=ddp): data.batch_size is the global batch, each process trains on its slice of it.

Run on CPU with 2 processes (gloo); SyncBatchNorm needs GPUs, so BN statistics are per process here (model.bn_batch
= the per-process batch of 16)."""
from types import SimpleNamespace

import pytest
import torch
from helpers.ddp_reference import assert_matches
from helpers.train import FAST, run_train

from deepres.data.cifar import CifarDataModule
from deepres.errors import UserError

DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "model.bn_batch=16"]
ONE_STEP = [*FAST, "trainer.max_steps=1", "trainer.log_every_n_steps=1"]


def _datamodule(root, rank: int, world_size: int, batch_size: int = 32) -> CifarDataModule:
    dm = CifarDataModule(root=root, batch_size=batch_size)
    dm.trainer = SimpleNamespace(global_rank=rank, world_size=world_size, global_step=0,
                                 strategy=SimpleNamespace(root_device=torch.device("cpu")))
    dm.setup()
    return dm


def test_each_process_takes_its_slice_of_the_same_global_batch(cifar10_root):
    whole = next(iter(_datamodule(cifar10_root, 0, 1).train_dataloader()))
    slices = [next(iter(_datamodule(cifar10_root, rank, 2).train_dataloader())) for rank in (0, 1)]
    assert [len(y) for _, y in slices] == [16, 16]
    assert torch.equal(torch.cat([x for x, _ in slices]), whole[0])
    assert torch.equal(torch.cat([y for _, y in slices]), whole[1])


def test_a_global_batch_that_does_not_split_evenly_is_a_user_error(cifar10_root):
    with pytest.raises(UserError, match=r"data.batch_size=33 is the global batch.*2 processes"):
        _datamodule(cifar10_root, 0, 2, batch_size=33)


@pytest.mark.slow
def test_two_processes_make_the_global_batch_step(cifar10_root, tmp_path):
    overrides = [*ONE_STEP, f"data.root={cifar10_root}"]
    run_train(*DDP, *overrides, f"hydra.run.dir={tmp_path}")
    assert_matches(tmp_path, 2, *overrides)
