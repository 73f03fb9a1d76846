"""The detection LightningModule: Faster R-CNN's four losses summed (RPN and detector trained jointly), the iteration
schedule through the run's Bookkeeping, and at each evaluation the test set's mAP (VOC's or COCO's metric), or, for
a test set without public labels (VOC 2012), its detections written for the evaluation server.

Training sums stay on the device and are read once every `trainer.log_every_n_steps` iterations (a training row:
the mean of each loss since the last row, and the learning rate), as the classifier's are; a loss that becomes NaN
or infinite stops the run with Diverged at the next row, evaluation or checkpoint."""
import itertools
from collections.abc import Callable, Iterable

import lightning as L
import torch
import torch.distributed as dist
from torch import nn
from torchmetrics import Metric

from deepres.data.streams import SAMPLING, derived_seed
from deepres.detection.voc_submission import write_comp4_results
from deepres.errors import Diverged
from deepres.packing.optimizer import set_member_lrs
from deepres.training.bookkeeping import Bookkeeping

LOSSES = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
SUBMISSION = "voc2012_test"  # the run's folder for detections that the evaluation server scores


class DetectorModule(L.LightningModule):
    """`net` a Detector (faster_rcnn.py); `book` its run's Bookkeeping (one run; schedule None: evaluation only);
    `metric` scores the test set (None: the set has no labels, and its detections go to <run>/voc2012_test for the
    server, in the order of `class_names`). The anchors and RoIs that iteration k samples are drawn from (seed, k,
    rank), so a resumed run trains exactly as an uninterrupted one."""

    def __init__(self, net: nn.Module, optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None,
                 book: Bookkeeping, metric: Metric | None, class_names: list[str], seed: int = 0):
        super().__init__()
        self.net, self.optimizer_factory, self.book = net, optimizer, book
        self.metric, self.class_names, self.seed = metric, class_names, seed
        # each loss summed since the last training row, and the iterations: saved, so a resumed run logs the same rows
        self.register_buffer("train_sums", torch.zeros(len(LOSSES) + 1))
        self.losses: torch.Tensor | None = None  # the last log_every_n_steps iterations' total losses, on the device
        self.unscored: list[tuple[str, dict[str, torch.Tensor]]] = []  # (image id, detections) without a metric
        self.bar_metrics: dict[str, float] = {}
        self.automatic_optimization = False

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return self.net(images)

    # ---- training ---------------------------------------------------------------------------------------------

    def on_train_start(self) -> None:
        self.losses = torch.full((self.trainer.log_every_n_steps,), float("nan"), device=self.device)
        self.book.checked_to = self.global_step

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        step = self.global_step  # the row of iteration k is written before iteration k+1 (see module.py)
        if step and step % self.trainer.log_every_n_steps == 0:
            self._row_due()
        set_member_lrs(self.optimizers().optimizer, self.book.lrs(step))
        torch.manual_seed(derived_seed(self.seed, SAMPLING, step, self.global_rank))

    def training_step(self, batch, batch_idx: int) -> None:
        images, targets = batch
        slot = self.global_step % len(self.losses)  # iteration k at (k - 1) % length: optimizer.step() counts it
        parts = self.net(images, targets)
        loss = sum(parts[name] for name in LOSSES)
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()
        self.train_sums.add_(torch.stack([*(parts[name].detach() for name in LOSSES), loss.new_ones(())]))
        self.losses[slot] = loss.detach()

    def _row_due(self) -> None:
        sums = self.trainer.strategy.reduce(self.train_sums, reduce_op="sum")  # every process's iterations
        values = torch.cat([self.losses, sums]).tolist()  # one transfer
        losses, sums = values[:len(self.losses)], values[len(self.losses):]
        self.book.check_losses(losses, self.global_step, len(self.losses))
        *parts, count = sums
        row = {"train/loss": sum(parts) / count, **{f"train/{name}": s / count for name, s in zip(LOSSES, parts)},
               "lr": self.book.schedules[0].lr(self.global_step - 1)}
        self.book.log_row(0, self.global_step, row)
        self.train_sums.zero_()
        self.bar_metrics = {"train/loss": row["train/loss"]}

    def on_train_end(self) -> None:
        if self.train_sums[-1] > 0:  # iterations since the last row (none: resumed at the end)
            self._row_due()

    def check_finite(self, weights: bool = False) -> None:
        """Diverged if a loss not checked yet, or with weights=True a weight, is NaN or infinite: before every row,
        evaluation and checkpoint, so none of them holds a diverged state."""
        if self.losses is not None and self.book.checked_to < self.global_step:
            self.book.check_losses(self.losses.tolist(), self.global_step, len(self.losses))
        if weights:
            state = [t for t in self.net.state_dict().values() if t.is_floating_point() and t.numel()]
            if not torch.stack(torch._foreach_norm(state, float("inf"))).isfinite().all():
                self.book.fail(0, Diverged.weights(self.global_step, self.book.last_finite[0]))

    # ---- evaluation -------------------------------------------------------------------------------------------

    def on_validation_start(self) -> None:
        self.check_finite()

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        images, targets = batch
        detections = self.net(images)
        if self.metric is not None:
            self.metric.update(detections, targets)
        else:
            self.unscored += [(t["image_id"], {k: v.cpu() for k, v in d.items()}) for d, t in zip(detections, targets)]

    def on_validation_epoch_end(self) -> None:
        if self.metric is not None:
            row = {f"test/{key}": value for key, value in self.metric.compute().items()}
            self.metric.reset()
        else:
            row = {"test/detections": float(self._write_unscored())}
        self.book.log_row(0, self.global_step, row)
        shown = {key: value for key, value in row.items() if "/AP50/" not in key}
        self.log_dict(shown, prog_bar=True, logger=False)

    def _write_unscored(self) -> int:
        """The detections of every process in the order of the test set, written by global rank 0; their count."""
        gathered = [self.unscored]
        if dist.is_available() and dist.is_initialized():
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, self.unscored)
        self.unscored = []
        # rank r evaluated images r, r + R, ... (datamodule.py): interleave them back
        ordered = [item for group in itertools.zip_longest(*gathered) for item in group if item is not None]
        if self.trainer.is_global_zero:
            write_comp4_results(f"{self.trainer.default_root_dir}/{SUBMISSION}", self.class_names,
                                [image_id for image_id, _ in ordered], [d for _, d in ordered])
        return sum(len(d["labels"]) for _, d in ordered)

    # ---- optimiser and checkpoints ----------------------------------------------------------------------------

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(p for p in self.net.parameters() if p.requires_grad)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint.update(self.book.state_dict())

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.book.load_state_dict(checkpoint)
