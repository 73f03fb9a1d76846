"""A task is what a kind of run computes: its data, its net, its loss, metrics and evaluation. The run machinery that
every task shares (fit.py, bookkeeping.py, checkpoints.py, runs/) takes it from the config, `task._target_`
(conf/task/), so that the core never imports a task's module.

    check(cfgs)                      all that can be checked before anything of the runs exists (UserError)
    datamodule(cfgs)                 the runs' LightningDataModule
    module(cfgs, datamodule, book)   their LightningModule (its `net` attribute the network), recording through
                                     `book` (bookkeeping.py); a pack's task sets book.split and book.merge"""
from collections.abc import Sequence
from typing import Protocol

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from deepres.training.bookkeeping import Bookkeeping


class Task(Protocol):
    def check(self, cfgs: Sequence[DictConfig]) -> None: ...

    def datamodule(self, cfgs: Sequence[DictConfig]) -> L.LightningDataModule: ...

    def module(self, cfgs: Sequence[DictConfig], datamodule: L.LightningDataModule,
               book: Bookkeeping) -> L.LightningModule: ...


def task_of(cfg: DictConfig) -> Task:
    return instantiate(cfg.task)
