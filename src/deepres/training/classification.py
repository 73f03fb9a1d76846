"""The classification task (CIFAR, ImageNet: Tables 1-6, Figs. 1, 4, 6, 7): the runs' data, their pack's net and
optimiser (packing/members.py), and the Classifier that trains and evaluates them (module.py)."""
from collections.abc import Sequence

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from deepres.errors import UserError
from deepres.models.build import STEP_GRAPH
from deepres.packing.members import Pack
from deepres.packing.plan import MEMBER_KEYS, pack_key
from deepres.training.bookkeeping import Bookkeeping
from deepres.training.module import Classifier
from deepres.training.validate import check_data, validate


class Classification:
    def check(self, cfgs: Sequence[DictConfig]) -> None:
        for cfg in cfgs:
            validate(cfg)
            check_data(cfg)
        keys = {pack_key(cfg) for cfg in cfgs}
        if len(cfgs) > 1 and (None in keys or len(keys) > 1):
            raise UserError(f"the runs {[cfg.name for cfg in cfgs]} cannot share a network: they must be CIFAR nets "
                            f"differing only in {', '.join(MEMBER_KEYS[:4])}.")

    def datamodule(self, cfgs: Sequence[DictConfig]) -> L.LightningDataModule:
        """For a pack, one training stream per member (its data.seed), the same evaluation."""
        if len(cfgs) == 1:
            return instantiate(cfgs[0].data)
        return instantiate(cfgs[0].data, member_seeds=[cfg.data.seed for cfg in cfgs])

    def module(self, cfgs: Sequence[DictConfig], datamodule: L.LightningDataModule, book: Bookkeeping) -> Classifier:
        pack = Pack(cfgs, datamodule.num_classes)
        book.split, book.merge = pack.split, pack.merge
        return Classifier(pack.net, pack.optimizer, book, datamodule.eval_names, top5=datamodule.top5,
                          freeze=pack.freeze, step_graph=cfgs[0].model.get("compile") == STEP_GRAPH)


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, Classifier]:
    """One run's DataModule and LightningModule (without loggers), as its training builds them."""
    task = Classification()
    datamodule = task.datamodule([cfg])
    return datamodule, task.module([cfg], datamodule, Bookkeeping([instantiate(cfg.schedule)]))
