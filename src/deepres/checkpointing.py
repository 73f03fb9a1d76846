"""Checkpoints that survive a kill at any moment: last.ckpt every N iterations, final.ckpt at the end.

last.ckpt is written where Lightning's own loop can resume from exactly: after the iteration, or, at an iteration
that is also evaluated, after the evaluation (so its rows are in the checkpoint and it is not run twice). The metric
rows travel inside each checkpoint (see metrics_csv.py)."""
import io
from pathlib import Path

import torch
from lightning.pytorch import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn

from deepres.atomic import atomic_write
from deepres.metrics_csv import MetricsCSVLogger

LAST, FINAL = "last.ckpt", "final.ckpt"


def checkpoint_bytes(net: torch.nn.Module) -> int:
    """About what one checkpoint takes on disk: the weights and the optimiser's momentum, in fp32."""
    return 2 * 4 * sum(p.numel() for p in net.parameters())


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temporary file, then rename: a checkpoint on disk is always whole."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        buffer = io.BytesIO()  # serialise first: torch's zip writer turns a full disk into an opaque RuntimeError
        torch.save(checkpoint, buffer)
        atomic_write(path, lambda f: f.write(buffer.getbuffer()))


class RunCheckpoints(Callback):
    def __init__(self, dirpath: str | Path, every_n_steps: int):
        self.dirpath, self.every_n_steps = Path(dirpath), every_n_steps
        self._saved_at = -1
        self.stop_signal: int | None = None

    def request_stop(self, signum: int) -> None:
        """Save last.ckpt at the next point where a resume is exact, then stop the Trainer (SIGTERM, Ctrl-C)."""
        self.stop_signal = signum

    @staticmethod
    def _metrics_loggers(trainer) -> list[MetricsCSVLogger]:
        return [lg for lg in trainer.loggers if isinstance(lg, MetricsCSVLogger)]

    def _due(self, trainer) -> bool:
        step = trainer.global_step
        return (step % self.every_n_steps == 0 or self.stop_signal is not None) and step != self._saved_at

    def _save_last(self, trainer, pl_module) -> None:
        pl_module.check_finite(weights=True)
        trainer.save_checkpoint(self.dirpath / LAST)
        self._saved_at = trainer.global_step
        for logger in self._metrics_loggers(trainer):
            logger.save()
        if self.stop_signal is not None:
            trainer.should_stop = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._due(trainer) and trainer.global_step % trainer.val_check_batch:
            self._save_last(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == TrainerFn.FITTING and self._due(trainer):
            self._save_last(trainer, pl_module)

    def save_final(self, trainer) -> None:
        trainer.save_checkpoint(self.dirpath / FINAL)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        for logger in self._metrics_loggers(trainer):
            checkpoint["metric_rows"] = logger.state_dict()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._saved_at = checkpoint["global_step"]
        for logger in self._metrics_loggers(trainer):
            logger.load_state_dict(checkpoint["metric_rows"])
