"""The detection task (section 4.3, Appendix A; Tables 7, 8): a run's VOC or COCO data (datamodule.py), its Faster R-CNN
(model.py) and the DetectorModule that trains it and scores the test set with VOC's or COCO's metric (module.py).
A detector trains alone: one run, one network (no packs)."""
import inspect
from collections.abc import Sequence

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from torchmetrics import Metric

from deepres.detection.coco_map import COCOMeanAP
from deepres.detection.datamodule import DetectionDataModule
from deepres.detection.faster_rcnn import build_detector
from deepres.detection.model import BACKBONES, faster_rcnn
from deepres.detection.module import DetectorModule
from deepres.detection.voc_ap import VOCMeanAP
from deepres.errors import UserError
from deepres.models.blocks import check_shortcut, check_stride_on
from deepres.models.imagenet import table_1_row
from deepres.training.bookkeeping import Bookkeeping
from deepres.training.validate import validate_run


def _built(node: DictConfig, **kwargs):
    """instantiate(node), a UserError of the constructor raised as it is (Hydra wraps it in a message of its own)."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise


def _check_model(model: DictConfig) -> None:
    """The model's keys are the detector's, and its backbone one the paper has."""
    valid = [k for k in inspect.signature(faster_rcnn).parameters if k not in ("num_classes", "detector")]
    valid += [k for k in inspect.signature(build_detector).parameters if k not in ("backbone", "num_classes",
                                                                                     "image_std")]
    unknown = [k for k in model if k != "_target_" and k not in valid]
    if unknown:
        raise UserError(f"model.{unknown[0]} is not a key of the detector; valid keys under model: "
                        f"{', '.join(valid)}.")
    if model.backbone not in BACKBONES:
        faster_rcnn(1, backbone=model.backbone)  # its one-paragraph error
    if model.backbone == "resnet":
        table_1_row(model.depth)
        check_shortcut(model.shortcut)
        check_stride_on(model.stride_on)


class Detection:
    def __init__(self):
        self._checked: tuple[DictConfig, DetectionDataModule] | None = None  # the config checked, its files read

    def check(self, cfgs: Sequence[DictConfig]) -> None:
        if len(cfgs) > 1:
            raise UserError(f"the runs {[cfg.name for cfg in cfgs]} cannot share a network: a detector trains alone "
                            "(packs are for CIFAR nets); run them with hydra/launcher=local or slurm.")
        cfg = cfgs[0]
        if cfg.data.name not in ("voc", "coco"):
            raise UserError(f"task=detection trains on data=voc or data=coco, not data={cfg.data.name}; "
                            "experiment=voc_faster_rcnn or coco_faster_rcnn sets task, model and data together.")
        _check_model(cfg.model)
        validate_run(cfg)
        datamodule = _built(cfg.data)
        datamodule.check_files()
        self._checked = cfg, datamodule

    def datamodule(self, cfgs: Sequence[DictConfig]) -> DetectionDataModule:
        """The checked config's DataModule, its annotations read once (COCO's train JSON takes a while)."""
        if self._checked is not None and self._checked[0] is cfgs[0]:
            return self._checked[1]
        return _built(cfgs[0].data)

    def module(self, cfgs: Sequence[DictConfig], datamodule: DetectionDataModule,
               book: Bookkeeping) -> DetectorModule:
        (cfg,) = cfgs
        L.seed_everything(cfg.seed, verbose=False)
        net = _built(cfg.model, num_classes=datamodule.num_classes)
        return DetectorModule(net, instantiate(cfg.optimizer), book, evaluation_metric(datamodule),
                              datamodule.class_names, cfg.seed)


def evaluation_metric(datamodule: DetectionDataModule) -> Metric | None:
    """VOC 2007's devkit mAP, or COCO's evaluator; None for a test set without labels (VOC 2012 test)."""
    if not datamodule.test_labelled:
        return None
    return VOCMeanAP(datamodule.class_names) if datamodule.name == "voc" else COCOMeanAP()
