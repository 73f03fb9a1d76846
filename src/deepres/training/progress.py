"""The progress bar of a run (or pack): iterations, and the last training row."""
from lightning.pytorch.callbacks import RichProgressBar


class StepProgressBar(RichProgressBar):
    """A rich progress bar counted in iterations to trainer.max_steps (training is one endless stream, no epochs).

    Redrawn `refresh_rate` times a second and updated every `every_n_steps` iterations: with Lightning's defaults
    (redrawn up to 100 times a second, updated every iteration) the bar cost a small net about 1 ms per iteration
    in a terminal; a redraw takes about 1.4 ms, so 2 a second cost 0.3% of the time (benchmarks/README.md)."""

    def __init__(self, refresh_rate: int = 2, every_n_steps: int = 10):
        super().__init__(refresh_rate=refresh_rate)
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step % self.every_n_steps == 0 or trainer.global_step >= trainer.max_steps:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer, pl_module) -> dict:
        return {**super().get_metrics(trainer, pl_module), **getattr(pl_module, "bar_metrics", {})}

    @property
    def total_train_batches(self) -> int:
        return self.trainer.max_steps

    def _get_train_description(self, current_epoch: int) -> str:
        return f"{'Iteration':{len(self.validation_description)}}"
