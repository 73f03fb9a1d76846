"""Python's garbage collector while training (conf/train.yaml: gc).

An automatic gen-2 collection walks every object the process holds (torch, Lightning and Hydra make millions) and
lands wherever the allocation count says: tens of ms in the middle of an iteration, which stalls a GPU that waits
for its next kernels and, under DDP, every rank at the next all-reduce. Large training frameworks turn automatic
collection off and collect at chosen points (Megatron-LM's manual GC); so does this. When training starts, what
setup made is collected once and frozen (gc.freeze: never walked again), automatic collection is off, and a
collection of the objects made since runs after each evaluation, at each checkpoint and every `every_n_steps`
iterations, the same points in every rank and in a pack. When training ends, by any way, Python's collector is back
as it was."""
import gc

from lightning.pytorch import Callback


class ManualCollection(Callback):
    """Automatic collection off while fitting; gc.collect() at evaluation, checkpoints and every N iterations."""

    def __init__(self, every_n_steps: int):
        self.every_n_steps = every_n_steps
        self._was_enabled: bool | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._was_enabled = gc.isenabled()
        gc.disable()
        gc.collect()
        gc.freeze()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            gc.collect()

    def on_validation_end(self, trainer, pl_module) -> None:
        gc.collect()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        gc.collect()

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._was_enabled is None:
            return
        gc.unfreeze()
        if self._was_enabled:
            gc.enable()
        self._was_enabled = None
