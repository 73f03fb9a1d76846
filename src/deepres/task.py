"""The LightningModule: cross-entropy, top-1 (and top-5) error in percent, SGD with the iteration schedule.

Training sums stay on the device and are read once every `trainer.log_every_n_steps` iterations, so the training
step has no host-device sync. Rows go to every logger with the iteration as the step."""
import math
from collections.abc import Callable, Iterable

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from deepres.errors import UserError
from deepres.schedule import IterationSchedule


class Diverged(UserError):
    """The training loss became NaN or infinite."""

    @classmethod
    def loss(cls, step: int, last_finite: float) -> "Diverged":
        return cls(f"training diverged: the loss became NaN or infinite at iteration {step} (last finite loss "
                   f"{last_finite:.4g}); lower optimizer.lr or check the data.")

    @classmethod
    def weights(cls, step: int, last_finite: float) -> "Diverged":
        return cls(f"training diverged: weights became NaN or infinite by iteration {step} (last finite loss "
                   f"{last_finite:.4g}); lower optimizer.lr or check the data.")


def view_scores(net: nn.Module, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """Class scores of a batch with one view per image (B, C, H, W): the logits. With several views per image
    ((B, V, C, H, W), such as the 10 crops, or a list of those at different sizes for multi-scale testing): the log of
    the softmax averaged over all views, which cross-entropy, top-1 and top-5 read as they read logits."""
    if torch.is_tensor(x) and x.dim() == 4:
        return net(x)
    views = x if isinstance(x, list) else [x]
    log_probs = torch.cat([net(v.flatten(0, 1)).float().log_softmax(1).unflatten(0, v.shape[:2]) for v in views], 1)
    return log_probs.logsumexp(1) - math.log(log_probs.shape[1])


class Classifier(L.LightningModule):
    def __init__(self, net: nn.Module, optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
                 schedule: IterationSchedule, eval_names: list[str], top5: bool = False):
        super().__init__()
        self.net, self.optimizer_factory, self.schedule, self.eval_names = net, optimizer, schedule, eval_names
        self.top5 = top5  # also log <eval name>/top5_error (ImageNet)
        # loss sum, wrong, seen since the last training row; saved in checkpoints so a resumed run logs the same rows
        self.register_buffer("train_sums", torch.zeros(3))
        self.register_buffer("eval_sums", torch.zeros(len(eval_names), 4), persistent=False)  # + top-5 wrong
        # the losses of the last log_every_n_steps iterations, on the device (set in on_train_start): check_finite()
        # reads them all at once, at least that often, so a training step never waits for the device
        self.losses: torch.Tensor | None = None
        self.checked_to, self.last_finite = 0, float("nan")  # iterations checked, the last finite loss among them
        self.bar_metrics: dict[str, float] = {}  # the last training row's loss and error, for StepProgressBar

    def __setattr__(self, name: str, value) -> None:
        # Lightning sets _current_fx_name around each of the ~20 hook calls of an iteration; nn.Module.__setattr__
        # (a lookup for parameters, modules and buffers) made that about 60 us of every step
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _sums(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        # the count is made on y's device (a fill, not a host-to-device copy, which would wait for the GPU)
        sums = torch.stack([loss.detach() * len(y), (logits.argmax(1) != y).sum(), y.new_full((), len(y))])
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
        # summed over the processes of a data-parallel run: every process logs and schedules on the global batch
        row = self._as_metrics("train", self.trainer.strategy.reduce(self.train_sums, reduce_op="sum"))
        row["lr"] = self.schedule.lr(step - 1)
        self.train_sums.zero_()
        self._log_row(row)
        return row

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # The row for iteration k is written here, before iteration k+1, so that a checkpoint taken between the two
        # (see checkpointing.py) holds its sums and a resumed run writes it exactly once.
        step = self.global_step
        if step and step % self.trainer.log_every_n_steps == 0:
            self.check_finite()
            row = self._log_train_row()
            # read by the progress bar directly: Lightning's self.log costs about 0.6 ms a call
            self.bar_metrics = {k: row[k] for k in ("train/loss", "train/error")}
        lr = self.schedule.lr(step)
        for group in self.optimizers().optimizer.param_groups:
            group["lr"] = lr

    def on_train_start(self) -> None:
        self.losses = torch.full((self.trainer.log_every_n_steps,), float("nan"), device=self.device)
        self.checked_to = self.global_step

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, sums = self._sums(batch)
        self.train_sums.add_(sums)  # in place: `+=` on a buffer would go through nn.Module.__setattr__
        self.losses[self.global_step % len(self.losses)] = loss.detach()  # iteration k at (k - 1) % length
        return loss

    def check_finite(self, weights: bool = False) -> None:
        """Raise Diverged if any loss so far was NaN or infinite (or, with weights=True, any weight or BN statistic
        is): called before every row, evaluation and checkpoint, so none of them ever holds a diverged state."""
        if self.losses is not None and self.checked_to < self.global_step:
            losses = self.losses.tolist()
            for step in range(self.checked_to + 1, self.global_step + 1):
                loss = losses[(step - 1) % len(losses)]
                if not math.isfinite(loss):
                    raise Diverged.loss(step, self.last_finite)
                self.last_finite = loss
            self.checked_to = self.global_step
        if weights and not all(torch.isfinite(t).all() for t in self.net.state_dict().values()
                               if t.is_floating_point()):
            raise Diverged.weights(self.global_step, self.last_finite)

    def on_train_end(self) -> None:
        if self.train_sums[2] > 0:
            self.check_finite()
            self._log_train_row()

    def on_validation_start(self) -> None:
        self.check_finite()

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        scores = view_scores(self.net, x)
        top5 = scores.topk(min(5, scores.shape[1]), 1).indices
        sums = [F.cross_entropy(scores, y, reduction="sum"), (scores.argmax(1) != y).sum(),
                (top5 != y[:, None]).all(1).sum(), torch.tensor(len(y))]
        self.eval_sums[dataloader_idx] += torch.stack([t.to(self.eval_sums) for t in sums])

    def on_validation_epoch_end(self) -> None:
        row = {}
        # summed over the processes, which evaluate their own share of the images (or all of them: same ratios)
        for name, sums in zip(self.eval_names, self.trainer.strategy.reduce(self.eval_sums, reduce_op="sum")):
            row.update(self._as_metrics(name, sums[[0, 1, 3]]))
            if self.top5:
                row[f"{name}/top5_error"] = 100.0 * sums[2].item() / sums[3].item()
        self.eval_sums.zero_()
        self._log_row(row)
        self.log_dict(row, prog_bar=True, logger=False)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.net.parameters())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["schedule"] = self.schedule.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.schedule.load_state_dict(checkpoint["schedule"])
