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
from deepres.runs.metrics_logger import MetricsCSVLogger
from deepres.training.schedule import IterationSchedule
from deepres.training.step_graph import StepGraphOptimizer, autocast_for, check_capturable


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
    parameters; `freeze(k)` zeroes member k's part of the net; `step_graph` runs each ordinary iteration as one
    captured CUDA graph (training/step_graph.py)."""

    def __init__(self, net: nn.Module, optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
                 schedules: Sequence[IterationSchedule | None], eval_names: list[str], top5: bool = False,
                 loggers: Sequence[Sequence[Logger]] | None = None,
                 on_failure: Callable[[int, Diverged], None] | None = None,
                 freeze: Callable[[int], None] | None = None, step_graph: bool = False):
        super().__init__()
        self.step_graph = step_graph  # model.compile=step_graph: the iteration as one CUDA graph (step_graph.py)
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
        # per evaluation set and member: loss sum, wrong, seen (and top-5 wrong)
        self.register_buffer("eval_sums", torch.zeros(len(eval_names), k, 4 if top5 else 3), persistent=False)
        # the members' losses of the last log_every_n_steps iterations, on the device (set in on_train_start):
        # check_finite() reads them all at once, at least that often, so a training step never waits for the device
        self.losses: torch.Tensor | None = None
        self.checked_to, self.last_finite = 0, [float("nan")] * k  # iterations checked, the last finite losses
        self.failed: set[int] = set()
        self.bar_metrics: dict[str, float] = {}  # the last training rows' loss and error, for StepProgressBar
        # the step is written out (zero_grad, backward, step): no closure, and whole-step CUDA graphs can take it
        self.automatic_optimization = False

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

    def _log_train_rows(self, sums: list[float]) -> None:
        """Each live member's mean training loss and error since the last row (`sums`: train_sums on the host,
        summed over the processes of a data-parallel run, so every process logs and schedules on the global batch),
        at the number of iterations done."""
        step, rows = self.global_step, []
        for k in self.live:
            row = as_metrics("train", *sums[3 * k:3 * k + 3])
            row["lr"] = self.schedules[k].lr(step - 1)
            self._log_row(k, row)
            rows.append(row)
        self.train_sums.zero_()
        # read by the progress bar directly (Lightning's self.log costs about 0.6 ms a call): the live members' mean
        self.bar_metrics = _mean(rows, ("train/loss", "train/error"))
        if self.members > 1:
            self.bar_metrics["runs"] = len(rows)

    def _row_due(self) -> None:
        """The finite check and the training rows, from one transfer to the host."""
        sums = self.trainer.strategy.reduce(self.train_sums, reduce_op="sum")
        losses, sums = _host(self.losses, sums)
        self._check_losses(losses)
        self._log_train_rows(sums)

    # ---- training ---------------------------------------------------------------------------------------------

    def on_train_start(self) -> None:
        self.losses = torch.full((self.trainer.log_every_n_steps, self.members), float("nan"), device=self.device)
        self.checked_to = self.global_step
        if self.step_graph:
            batches = self.trainer.train_dataloader  # a CIFAR stream (training/validate.py checks)
            batches.steps_only = True
            graph = self.optimizers().optimizer
            graph.batches, graph.autocast = batches, autocast_for(self.trainer.precision, self.device)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # The row for iteration k is written here, before iteration k+1, so that a checkpoint taken between the two
        # (see checkpoints.py) holds its sums and a resumed run writes it exactly once.
        step = self.global_step
        if step and step % self.trainer.log_every_n_steps == 0:
            self._row_due()
        lrs = [0.0 if k in self.failed else schedule.lr(step) for k, schedule in enumerate(self.schedules)]
        set_member_lrs(self._optimizer(), lrs)

    def _optimizer(self) -> torch.optim.Optimizer:
        """The optimiser that holds the learning rates (under a step graph, the one it wraps)."""
        optimizer = self.optimizers().optimizer
        return optimizer.optimizer if isinstance(optimizer, StepGraphOptimizer) else optimizer

    def training_step(self, batch, batch_idx: int) -> None:
        optimizer = self.optimizers()
        if self.step_graph:  # the batch is drawn inside the step: `batch` is the iteration's number
            optimizer.optimizer.prepare(self.global_step, len(self.losses))
            optimizer.step()
            return
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(self.loss(*batch))
        optimizer.step()

    def loss(self, x: torch.Tensor, y: torch.Tensor, slot: torch.Tensor | None = None) -> torch.Tensor:
        """The sum of the members' mean cross-entropies on their images x (B, 3K, H, W) and labels y ((B, K), or
        (B,) for one member); their training sums and losses are kept on the device, the losses in the ring at
        `slot` (default: this iteration's; a tensor in a captured step)."""
        logits, y = self.scores(x), y.view(len(x), self.members)
        losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y)
        member_losses = losses.detach().mean(0)
        # the count is made on y's device (a fill, not a host-to-device copy, which would wait for the GPU)
        sums = torch.stack([member_losses * len(y), (logits.argmax(-1) != y).sum(0), y.new_full((self.members,),
                                                                                                len(y))], 1)
        self.train_sums.add_(sums.flatten())  # in place: `+=` would go through __setattr__
        # iteration k at (k - 1) % length
        self.losses[self.global_step % len(self.losses) if slot is None else slot] = member_losses
        return losses.mean(0).sum()

    def check_finite(self, weights: bool = False) -> None:
        """Fail every member whose loss so far, or with weights=True whose weights or BN statistics, became NaN or
        infinite: called before every row, evaluation and checkpoint, so none of them ever holds a diverged state.
        One transfer to the host. Raises Diverged once no member is left."""
        live = self.live
        reads = [self.losses] if self.losses is not None and self.checked_to < self.global_step else []
        if weights and live:
            reads.append(self._weights_finite(live))
        values = _host(*reads) if reads else []
        if self.losses is not None and self.checked_to < self.global_step:
            self._check_losses(values.pop(0))
        if weights and live:
            for k, finite in zip(live, values.pop(0)):
                if not finite and k in self.live:
                    self._fail(k, Diverged.weights(self.global_step, self.last_finite[k]))

    def _check_losses(self, losses: list[float]) -> None:
        """The losses of the iterations not checked yet, from the ring of the last log_every_n_steps (flat, K per
        iteration)."""
        for step in range(self.checked_to + 1, self.global_step + 1):
            at = (step - 1) % len(self.losses) * self.members
            for k in self.live:
                if math.isfinite(losses[at + k]):
                    self.last_finite[k] = losses[at + k]
                else:
                    self._fail(k, Diverged.loss(step, self.last_finite[k]))
        self.checked_to = max(self.checked_to, self.global_step)

    def _weights_finite(self, members: list[int]) -> torch.Tensor:
        """Per member of `members`, 1 if all its weights and BN statistics are finite: their largest magnitudes
        (NaN if any is NaN) in one multi-tensor kernel, not a kernel and a host read per tensor."""
        tensors = [t.unflatten(0, (self.members, -1)) for t in self.net.state_dict().values()
                   if t.is_floating_point() and t.dim()]
        largest = torch._foreach_norm([t[k] for t in tensors for k in members], float("inf"))
        return torch.stack(largest).view(len(tensors), len(members)).isfinite().all(0)

    def _fail(self, member: int, err: Diverged) -> None:
        self.failed.add(member)
        if self.on_failure is not None:
            self.on_failure(member, err)
        if not self.live:
            raise err if self.members == 1 else Diverged.every_member()
        self.freeze(member)
        self.optimizers().optimizer.freeze(member)

    def on_train_end(self) -> None:
        if self.train_sums.view(-1, 3)[:, 2].sum() > 0:  # iterations since the last row (none: resumed at the end)
            self._row_due()

    # ---- evaluation -------------------------------------------------------------------------------------------

    def on_validation_start(self) -> None:
        self.check_finite()

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        scores = self._eval_scores(x)  # (B, K, classes)
        labels = y[:, None].expand(-1, self.members)
        losses = F.cross_entropy(scores.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)
        sums = [losses.sum(0), (scores.argmax(-1) != labels).sum(0), y.new_full((self.members,), len(y))]
        if self.top5:
            top5 = scores.topk(min(5, scores.shape[-1]), -1).indices
            sums.append((top5 != labels[..., None]).all(-1).sum(0))
        self.eval_sums[dataloader_idx].add_(torch.stack(sums, 1))

    def on_validation_epoch_end(self) -> None:
        # summed over the processes, which evaluate their own share of the images (or all of them: same ratios)
        sums = self.trainer.strategy.reduce(self.eval_sums, reduce_op="sum").tolist()  # one transfer
        rows = []
        for k in self.live:
            row = {}
            for name, per_member in zip(self.eval_names, sums):
                loss, wrong, seen, *top5_wrong = per_member[k]
                row.update(as_metrics(name, loss, wrong, seen))
                if self.top5:
                    row[f"{name}/top5_error"] = 100.0 * top5_wrong[0] / seen
            self._log_row(k, row)
            rows.append(row)
        self.eval_sums.zero_()
        if rows:  # the live members' mean, for the progress bar and trainer.callback_metrics
            self.log_dict(_mean(rows, list(rows[0])), prog_bar=True, logger=False)

    # ---- optimiser and checkpoints ----------------------------------------------------------------------------

    def configure_optimizers(self) -> torch.optim.Optimizer:
        optimizer = self.optimizer_factory(self.net.parameters())
        if not self.step_graph:
            return optimizer
        check_capturable(optimizer, self.device)
        return StepGraphOptimizer(optimizer, self.loss, None, None, self.device)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Per member, as each member's checkpoint holds them (packing/members.py splits them): its schedule and its
        metric rows, whose metrics.csv is written now."""
        checkpoint["schedule"] = [s.state_dict() for s in self.schedules]
        checkpoint["metric_rows"] = [csv.state_dict() if csv else {"rows": {}} for csv in self.metrics_csvs]
        for k in self.live:
            if self.metrics_csvs[k] is not None:
                self.metrics_csvs[k].save()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A resumed member's schedule and rows; its other loggers (W&B) get the rows again, for those a killed
        process never delivered."""
        for k, (schedule, rows) in enumerate(zip(checkpoint["schedule"], checkpoint["metric_rows"])):
            self.schedules[k].load_state_dict(schedule)
            for logger in self.member_loggers[k]:
                if logger is self.metrics_csvs[k]:
                    logger.load_state_dict(rows)
                else:
                    for step in sorted(rows["rows"], key=int):
                        logger.log_metrics(rows["rows"][step], step=int(step))


def _host(*tensors: torch.Tensor) -> list[list[float]]:
    """The tensors' values on the host, each as a flat list, from one transfer (one wait for the device)."""
    flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors]).tolist()
    out, at = [], 0
    for t in tensors:
        out.append(flat[at:at + t.numel()])
        at += t.numel()
    return out


def _mean(rows: list[dict[str, float]], keys: Iterable[str]) -> dict[str, float]:
    return {key: sum(row[key] for row in rows) / len(rows) for key in keys} if rows else {}
