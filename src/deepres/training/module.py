"""The LightningModule: cross-entropy, top-1 (and top-5) error in percent, the optimiser with the iteration schedule,
for K runs trained as one network (a pack, packing/members.py); an ordinary run is the pack of one.

The loss is the sum of the members' mean cross-entropies, so member k's gradients are those of its own run; each
member has its own schedule (the 110-layer warm-up ends on its own training error) and learning rate, and logs its
own rows to its own loggers, with the iteration as the step. Training sums stay on the device and are read once
every `trainer.log_every_n_steps` iterations, so the training step has no host-device sync. A member whose loss or
weights become NaN or infinite is reported and frozen (its weights and statistics zeroed, its learning rate 0, so it
computes zeros) while the others go on; training stops with Diverged when no member is left."""
import math
from collections.abc import Callable, Iterable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers.logger import Logger
from torch import nn

from deepres.errors import Diverged
from deepres.packing.optimizer import set_member_lrs
from deepres.runs.metrics_csv import MetricsCSVLogger
from deepres.training.schedule import IterationSchedule

LOSS, WRONG, TOP5_WRONG, SEEN = range(4)  # the columns of the metric sums


def view_scores(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """Class scores (..., classes) of a batch with one view per image (B, C, H, W): the logits. With several views
    per image ((B, V, C, H, W), such as the 10 crops, or a list of those at different sizes for multi-scale
    testing): the log of the softmax averaged over all views, which cross-entropy, top-1 and top-5 read as they
    read logits."""
    if torch.is_tensor(x) and x.dim() == 4:
        return net(x)
    views = x if isinstance(x, list) else [x]
    log_probs = torch.cat([net(v.flatten(0, 1)).float().log_softmax(-1).unflatten(0, v.shape[:2]) for v in views], 1)
    return log_probs.logsumexp(1) - math.log(log_probs.shape[1])


def as_metrics(prefix: str, loss: float, wrong: float, seen: float) -> dict[str, float]:
    return {f"{prefix}/loss": loss / seen, f"{prefix}/error": 100.0 * wrong / seen}


class Classifier(L.LightningModule):
    """`net` computes the members side by side (input: member k's images in channels 3k..3k+2; output (B, K,
    classes), or (B, classes) for one member); `schedules[k]` and `loggers[k]` are member k's (schedule None:
    evaluation only); `on_failure(k, err)` is told when member k diverges. `optimizer` makes the optimiser from the
    parameters; `freeze(k)` zeroes member k's part of the net."""

    def __init__(self, net: nn.Module, optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
                 schedules: Sequence[IterationSchedule | None], eval_names: list[str], top5: bool = False,
                 loggers: Sequence[Sequence[Logger]] | None = None,
                 on_failure: Callable[[int, Diverged], None] | None = None,
                 freeze: Callable[[int], None] | None = None):
        super().__init__()
        self.net, self.optimizer_factory, self.schedules = net, optimizer, list(schedules)
        self.members = k = len(self.schedules)
        self.eval_names, self.top5 = eval_names, top5  # top5: also log <eval name>/top5_error (ImageNet)
        self.member_loggers = [list(lg) for lg in loggers] if loggers is not None else [[] for _ in range(k)]
        self.metrics_csvs = [next((lg for lg in member if isinstance(lg, MetricsCSVLogger)), None)
                             for member in self.member_loggers]
        self.on_failure, self.freeze = on_failure, freeze
        # per member: loss sum, wrong, seen since the last training row; flat, so that dim 0 holds the members'
        # slices; saved in checkpoints so a resumed run logs the same rows
        self.register_buffer("train_sums", torch.zeros(k * 3))
        self.register_buffer("eval_sums", torch.zeros(len(eval_names), k, 4), persistent=False)
        # the members' losses of the last log_every_n_steps iterations, on the device (set in on_train_start):
        # check_finite() reads them all at once, at least that often, so a training step never waits for the device
        self.losses: torch.Tensor | None = None
        self.checked_to, self.last_finite = 0, [float("nan")] * k  # iterations checked, the last finite losses
        self.failed: set[int] = set()
        self.bar_metrics: dict[str, float] = {}  # the last training rows' loss and error, for StepProgressBar

    def __setattr__(self, name: str, value) -> None:
        # Lightning sets _current_fx_name around each of the ~20 hook calls of an iteration; nn.Module.__setattr__
        # (a lookup for parameters, modules and buffers) made that about 60 us of every step
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def live(self) -> list[int]:
        return [k for k in range(self.members) if k not in self.failed]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K, classes): the members' logits for their images."""
        return self.net(x).reshape(len(x), self.members, -1)

    def _eval_scores(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K, classes) for evaluation images (one view or several), which every member sees the same."""
        def members_of_view(v: torch.Tensor) -> torch.Tensor:
            return self.scores(v if self.members == 1 else v.repeat(1, self.members, 1, 1))
        return view_scores(members_of_view, x)

    # ---- rows -------------------------------------------------------------------------------------------------

    def _log_row(self, member: int, row: dict[str, float]) -> None:
        if self.schedules[member] is not None:
            self.schedules[member].observe(self.global_step, row)
        for logger in self.member_loggers[member]:
            logger.log_metrics(row, step=self.global_step)

    def _log_train_rows(self) -> None:
        """Each live member's mean training loss and error since the last row, at the number of iterations done;
        summed over the processes of a data-parallel run: every process logs and schedules on the global batch."""
        step, rows = self.global_step, []
        sums = self.trainer.strategy.reduce(self.train_sums, reduce_op="sum").view(-1, 3).tolist()  # one transfer
        for k in self.live:
            row = as_metrics("train", *sums[k])
            row["lr"] = self.schedules[k].lr(step - 1)
            self._log_row(k, row)
            rows.append(row)
        self.train_sums.zero_()
        # read by the progress bar directly (Lightning's self.log costs about 0.6 ms a call): the live members' mean
        self.bar_metrics = _mean(rows, ("train/loss", "train/error"))
        if self.members > 1:
            self.bar_metrics["runs"] = len(rows)

    # ---- training ---------------------------------------------------------------------------------------------

    def on_train_start(self) -> None:
        self.losses = torch.full((self.trainer.log_every_n_steps, self.members), float("nan"), device=self.device)
        self.checked_to = self.global_step

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # The row for iteration k is written here, before iteration k+1, so that a checkpoint taken between the two
        # (see checkpoints.py) holds its sums and a resumed run writes it exactly once.
        step = self.global_step
        if step and step % self.trainer.log_every_n_steps == 0:
            self.check_finite()
            self._log_train_rows()
        lrs = [0.0 if k in self.failed else schedule.lr(step) for k, schedule in enumerate(self.schedules)]
        set_member_lrs(self.optimizers().optimizer, lrs)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch  # (B, 3K, H, W), labels (B, K) or (B,) for one member
        logits, y = self.scores(x), y.view(len(x), self.members)
        losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y)
        member_losses = losses.detach().sum(0)
        # the count is made on y's device (a fill, not a host-to-device copy, which would wait for the GPU)
        sums = torch.stack([member_losses, (logits.argmax(-1) != y).sum(0), y.new_full((self.members,), len(y))], 1)
        self.train_sums.add_(sums.flatten().to(self.train_sums))  # in place: `+=` would go through __setattr__
        self.losses[self.global_step % len(self.losses)] = member_losses / len(y)  # iteration k at (k - 1) % length
        return losses.sum() / len(y)

    def check_finite(self, weights: bool = False) -> None:
        """Fail every member whose loss so far, or with weights=True whose weights or BN statistics, became NaN or
        infinite: called before every row, evaluation and checkpoint, so none of them ever holds a diverged state.
        Raises Diverged once no member is left."""
        if self.losses is not None and self.checked_to < self.global_step:
            losses = self.losses.tolist()
            for step in range(self.checked_to + 1, self.global_step + 1):
                for k in self.live:
                    loss = losses[(step - 1) % len(losses)][k]
                    if math.isfinite(loss):
                        self.last_finite[k] = loss
                    else:
                        self._fail(k, Diverged.loss(step, self.last_finite[k]))
            self.checked_to = self.global_step
        if weights and self.live:
            tensors = [t.unflatten(0, (self.members, -1)) for t in self.net.state_dict().values()
                       if t.is_floating_point() and t.dim()]
            finite = torch.stack([torch.stack([t[k].isfinite().all() for t in tensors]).all() for k in self.live])
            for k, ok in zip(self.live, finite.tolist()):
                if not ok:
                    self._fail(k, Diverged.weights(self.global_step, self.last_finite[k]))

    def _fail(self, member: int, err: Diverged) -> None:
        self.failed.add(member)
        if self.on_failure is not None:
            self.on_failure(member, err)
        if not self.live:
            raise err if self.members == 1 else Diverged.every_member()
        self.freeze(member)
        self.optimizers().optimizer.freeze(member)

    def on_train_end(self) -> None:
        if self.train_sums.view(-1, 3)[:, 2].sum() > 0:
            self.check_finite()
            self._log_train_rows()

    # ---- evaluation -------------------------------------------------------------------------------------------

    def on_validation_start(self) -> None:
        self.check_finite()

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        scores = self._eval_scores(x)  # (B, K, classes)
        labels = y[:, None].expand(-1, self.members)
        top5 = scores.topk(min(5, scores.shape[-1]), -1).indices
        losses = F.cross_entropy(scores.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)
        sums = [losses.sum(0), (scores.argmax(-1) != labels).sum(0), (top5 != labels[..., None]).all(-1).sum(0),
                y.new_full((self.members,), len(y))]
        self.eval_sums[dataloader_idx] += torch.stack([t.to(self.eval_sums) for t in sums], 1)

    def on_validation_epoch_end(self) -> None:
        # summed over the processes, which evaluate their own share of the images (or all of them: same ratios)
        sums = self.trainer.strategy.reduce(self.eval_sums, reduce_op="sum").tolist()  # one transfer
        rows = []
        for k in self.live:
            row = {}
            for name, per_member in zip(self.eval_names, sums):
                loss, wrong, top5_wrong, seen = per_member[k]
                row.update(as_metrics(name, loss, wrong, seen))
                if self.top5:
                    row[f"{name}/top5_error"] = 100.0 * top5_wrong / seen
            self._log_row(k, row)
            rows.append(row)
        self.eval_sums.zero_()
        if rows:  # the live members' mean, for the progress bar and trainer.callback_metrics
            self.log_dict(_mean(rows, list(rows[0])), prog_bar=True, logger=False)

    # ---- optimiser and checkpoints ----------------------------------------------------------------------------

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.net.parameters())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Per member, as each member's checkpoint holds them (packing/members.py splits them): its schedule and its
        metric rows, whose metrics.csv is written now."""
        checkpoint["schedule"] = [s.state_dict() for s in self.schedules]
        checkpoint["metric_rows"] = [csv.state_dict() if csv else {"rows": {}} for csv in self.metrics_csvs]
        for k in self.live:
            if self.metrics_csvs[k] is not None:
                self.metrics_csvs[k].save()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        for k, (schedule, rows) in enumerate(zip(checkpoint["schedule"], checkpoint["metric_rows"])):
            self.schedules[k].load_state_dict(schedule)
            if self.metrics_csvs[k] is not None:
                self.metrics_csvs[k].load_state_dict(rows)


def _mean(rows: list[dict[str, float]], keys: Iterable[str]) -> dict[str, float]:
    return {key: sum(row[key] for row in rows) / len(rows) for key in keys} if rows else {}
