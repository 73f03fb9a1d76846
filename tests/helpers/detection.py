"""A detector small and quick enough for the suite, and its mAP scored in the test's own process."""
from pathlib import Path

import lightning as L
import torch

from deepres.detection.task import Detection
from deepres.training.bookkeeping import Bookkeeping
from helpers.config import compose_config

# ResNet-18 at 96-128 pixels, few proposals and RoIs
TINY = ["experiment=voc_faster_rcnn", "model.depth=18", "model.min_size=96", "model.max_size=128",
        "model.anchor_sizes=[32,64,128]", "model.rpn_pre_nms_top_n_train=300", "model.rpn_post_nms_top_n_train=60",
        "model.rpn_pre_nms_top_n_test=300", "model.rpn_post_nms_top_n_test=20", "model.box_batch_size_per_image=8",
        "data.batch_size=2", "data.eval_batch_size=2", "data.num_workers=0", "trainer.log_every_n_steps=2",
        "trainer.enable_progress_bar=false", "logger=none"]


def map50(*overrides: str, checkpoint: Path | None = None) -> float:
    """VOC 2007's mAP50 of the run's detector, as it starts or with a checkpoint's weights, evaluated here."""
    cfg = compose_config(*overrides)
    datamodule = Detection().datamodule([cfg])
    module = Detection().module([cfg], datamodule, Bookkeeping([None]))
    if checkpoint is not None:
        module.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"])
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.validate(module, datamodule, verbose=False)
    return float(trainer.callback_metrics["test/mAP50"])
