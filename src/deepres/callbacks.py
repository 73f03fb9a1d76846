"""Small Trainer callbacks."""
from lightning.pytorch.callbacks import RichProgressBar


class StepProgressBar(RichProgressBar):
    """A rich progress bar counted in iterations to trainer.max_steps (training is one endless stream, no epochs)."""

    @property
    def total_train_batches(self) -> int:
        return self.trainer.max_steps

    def _get_train_description(self, current_epoch: int) -> str:
        return f"{'Iteration':{len(self.validation_description)}}"
