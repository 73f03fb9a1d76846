"""Checkpoints that survive a kill at any moment: last.ckpt every N iterations, final.ckpt at the end.

last.ckpt is written where Lightning's own loop can resume from exactly: after the iteration, or, at an iteration
that is also evaluated, after the evaluation (so its rows are in the checkpoint and it is not run twice). The metric
rows travel inside each checkpoint (see metrics_csv.py)."""
from pathlib import Path

import torch
from lightning.pytorch import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn

from deepres.atomic import atomic_write
from deepres.metrics_csv import MetricsCSVLogger

LAST, FINAL = "last.ckpt", "final.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temporary file, then rename: a checkpoint on disk is always whole."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        atomic_write(path, lambda f: torch.save(checkpoint, f))


class RunCheckpoints(Callback):
    def __init__(self, dirpath: str | Path, every_n_steps: int):
        self.dirpath, self.every_n_steps = Path(dirpath), every_n_steps
        self._saved_at = -1

    @staticmethod
    def _metrics_loggers(trainer) -> list[MetricsCSVLogger]:
        return [lg for lg in trainer.loggers if isinstance(lg, MetricsCSVLogger)]

    def _due(self, trainer) -> bool:
        step = trainer.global_step
        return step % self.every_n_steps == 0 and step != self._saved_at

    def _save_last(self, trainer) -> None:
        trainer.save_checkpoint(self.dirpath / LAST)
        self._saved_at = trainer.global_step
        for logger in self._metrics_loggers(trainer):
            logger.save()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._due(trainer) and trainer.global_step % trainer.val_check_batch:
            self._save_last(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == TrainerFn.FITTING and self._due(trainer):
            self._save_last(trainer)

    def save_final(self, trainer) -> None:
        trainer.save_checkpoint(self.dirpath / FINAL)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        for logger in self._metrics_loggers(trainer):
            checkpoint["metric_rows"] = logger.state_dict()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._saved_at = checkpoint["global_step"]
        for logger in self._metrics_loggers(trainer):
            logger.load_state_dict(checkpoint["metric_rows"])
