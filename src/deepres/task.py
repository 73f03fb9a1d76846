"""The LightningModule: cross-entropy, top-1 error in percent, SGD with the iteration schedule.

Training sums stay on the device and are read once every `trainer.log_every_n_steps` iterations, so the training
step has no host-device sync. Rows go to every logger with the iteration as the step."""
from collections.abc import Callable, Iterable

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from deepres.schedule import IterationSchedule


class Classifier(L.LightningModule):
    def __init__(self, net: nn.Module, optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
                 schedule: IterationSchedule, eval_names: list[str]):
        super().__init__()
        self.net, self.optimizer_factory, self.schedule, self.eval_names = net, optimizer, schedule, eval_names
        # loss sum, wrong, seen since the last training row; saved in checkpoints so a resumed run logs the same rows
        self.register_buffer("train_sums", torch.zeros(3))
        self.register_buffer("eval_sums", torch.zeros(len(eval_names), 3), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _sums(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        sums = torch.stack([loss.detach() * len(y), (logits.argmax(1) != y).sum(), torch.tensor(len(y))])
        return loss, sums.to(self.train_sums)

    @staticmethod
    def _as_metrics(prefix: str, sums: torch.Tensor) -> dict[str, float]:
        loss, wrong, seen = sums.tolist()
        return {f"{prefix}/loss": loss / seen, f"{prefix}/error": 100.0 * wrong / seen}

    def _log_row(self, row: dict[str, float]) -> None:
        self.schedule.observe(self.global_step, row)
        for logger in self.loggers:
            logger.log_metrics(row, step=self.global_step)

    def _log_train_row(self) -> dict[str, float]:
        """The mean training loss and error since the last row, logged at the number of iterations done."""
        step = self.global_step
        row = self._as_metrics("train", self.train_sums)
        row["lr"] = self.schedule.lr(step - 1)
        self.train_sums.zero_()
        self._log_row(row)
        return row

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # The row for iteration k is written here, before iteration k+1, so that a checkpoint taken between the two
        # (see checkpointing.py) holds its sums and a resumed run writes it exactly once.
        step = self.global_step
        if step and step % self.trainer.log_every_n_steps == 0:
            row = self._log_train_row()
            self.log_dict({k: row[k] for k in ("train/loss", "train/error")}, prog_bar=True, logger=False)
        lr = self.schedule.lr(step)
        for group in self.optimizers().optimizer.param_groups:
            group["lr"] = lr

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, sums = self._sums(batch)
        self.train_sums += sums
        return loss

    def on_train_end(self) -> None:
        if self.train_sums[2] > 0:
            self._log_train_row()

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.eval_sums[dataloader_idx] += self._sums(batch)[1]

    def on_validation_epoch_end(self) -> None:
        row = {}
        for name, sums in zip(self.eval_names, self.eval_sums):
            row.update(self._as_metrics(name, sums))
        self.eval_sums.zero_()
        self._log_row(row)
        self.log_dict(row, prog_bar=True, logger=False)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.net.parameters())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["schedule"] = self.schedule.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.schedule.load_state_dict(checkpoint["schedule"])
