"""The progress bar of a run (or pack): iterations, and the last training row."""
import math
import time

from lightning.pytorch.callbacks import RichProgressBar


class StepProgressBar(RichProgressBar):
    """A rich progress bar counted in iterations to trainer.max_steps (training is one endless stream, no epochs).

    Redrawn `refresh_rate` times a second and updated every `every_n_steps` iterations, or at every iteration once
    `max_wait_s` has passed since the last update: with Lightning's defaults (redrawn up to 100 times a second,
    updated every iteration) the bar cost a small net about 1 ms per iteration in a terminal; a redraw takes about
    1.4 ms, so 2 a second cost 0.3% of the time (benchmarks/README.md). Slow runs update at every iteration: rich's
    rate needs two updates within its 30 s window, and a run of 0.3 it/s updated every 10 iterations read 0.00it/s."""

    def __init__(self, refresh_rate: int = 2, every_n_steps: int = 10, max_wait_s: float = 2.0):
        super().__init__(refresh_rate=refresh_rate)
        self.every_n_steps, self.max_wait_s = every_n_steps, max_wait_s
        self._updated = -math.inf

    def due(self, step: int, max_steps: int, now: float) -> bool:
        """Whether iteration `step` updates the bar (at time `now`, in seconds)."""
        return step % self.every_n_steps == 0 or step >= max_steps or now - self._updated >= self.max_wait_s

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.monotonic()
        if self.due(trainer.global_step, trainer.max_steps, now):
            self._updated = now
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer, pl_module) -> dict:
        return {**super().get_metrics(trainer, pl_module), **getattr(pl_module, "bar_metrics", {})}

    @property
    def total_train_batches(self) -> int:
        return self.trainer.max_steps

    def _get_train_description(self, current_epoch: int) -> str:
        return f"{'Iteration':{len(self.validation_description)}}"
