"""The classification LightningModule: cross-entropy, top-1 (and top-5) error in percent, the optimiser with the
iteration schedule, for K runs trained as one network (a pack, packing/members.py); an ordinary run is the pack of
one. What each run keeps (schedule, loggers, failures, checkpoint rows) is its Bookkeeping (bookkeeping.py).

The loss is the sum of the members' mean cross-entropies, so member k's gradients are those of its own run; each
member has its own schedule (the 110-layer warm-up ends on its own training error) and learning rate, and logs its
own rows to its own loggers, with the iteration as the step. Training sums stay on the device and are read once
every `trainer.log_every_n_steps` iterations, so the training step has no host-device sync. A member whose loss or
weights become NaN or infinite is reported and frozen (its weights and statistics zeroed, its learning rate 0, so it
computes zeros) while the others go on; training stops with Diverged when no member is left."""
import math
from collections.abc import Callable, Iterable

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from deepres.errors import Diverged
from deepres.packing.optimizer import set_member_lrs
from deepres.training.bookkeeping import Bookkeeping
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
    classes), or (B, classes) for one member); `book` keeps the members' schedules, loggers and failures (a book of
    one run with schedule None: evaluation only). `optimizer` makes the optimiser from the parameters; `freeze(k)`
    zeroes member k's part of the net; `step_graph` runs each ordinary iteration as one captured CUDA graph
    (training/step_graph.py)."""

    def __init__(self, net: nn.Module, optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None,
                 book: Bookkeeping, eval_names: list[str], top5: bool = False,
                 freeze: Callable[[int], None] | None = None, step_graph: bool = False):
        super().__init__()
        self.step_graph = step_graph  # model.compile=step_graph: the iteration as one CUDA graph (step_graph.py)
        self.net, self.optimizer_factory, self.book = net, optimizer, book
        self.members = k = book.members
        self.eval_names, self.top5 = eval_names, top5  # top5: also log <eval name>/top5_error (ImageNet)
        self.freeze = freeze
        # per member: loss sum, wrong, seen since the last training row; flat, so that dim 0 holds the members'
        # slices; saved in checkpoints so a resumed run logs the same rows
        self.register_buffer("train_sums", torch.zeros(k * 3))
        # per evaluation set and member: loss sum, wrong, seen (and top-5 wrong)
        self.register_buffer("eval_sums", torch.zeros(len(eval_names), k, 4 if top5 else 3), persistent=False)
        # the members' losses of the last log_every_n_steps iterations, on the device (set in on_train_start):
        # check_finite() reads them all at once, at least that often, so a training step never waits for the device
        self.losses: torch.Tensor | None = None
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
        return self.book.live

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

    def _log_train_rows(self, sums: list[float]) -> None:
        """Each live member's mean training loss and error since the last row (`sums`: train_sums on the host,
        summed over the processes of a data-parallel run, so every process logs and schedules on the global batch),
        at the number of iterations done."""
        step, rows = self.global_step, []
        for k in self.live:
            row = as_metrics("train", *sums[3 * k:3 * k + 3])
            row["lr"] = self.book.schedules[k].lr(step - 1)
            self.book.log_row(k, step, row)
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

    def _check_losses(self, losses: list[float]) -> None:
        for k in self.book.check_losses(losses, self.global_step, len(self.losses)):
            self._freeze(k)

    # ---- training ---------------------------------------------------------------------------------------------

    def on_train_start(self) -> None:
        self.losses = torch.full((self.trainer.log_every_n_steps, self.members), float("nan"), device=self.device)
        self.book.checked_to = self.global_step
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
        set_member_lrs(self._optimizer(), self.book.lrs(step))

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
        live, unchecked = self.live, self.losses is not None and self.book.checked_to < self.global_step
        reads = [self.losses] if unchecked else []
        if weights and live:
            reads.append(self._weights_finite(live))
        values = _host(*reads) if reads else []
        if unchecked:
            self._check_losses(values.pop(0))
        if weights and live:
            for k, finite in zip(live, values.pop(0)):
                if not finite and k in self.live:
                    self.book.fail(k, Diverged.weights(self.global_step, self.book.last_finite[k]))
                    self._freeze(k)

    def _weights_finite(self, members: list[int]) -> torch.Tensor:
        """Per member of `members`, 1 if all its weights and BN statistics are finite: their largest magnitudes
        (NaN if any is NaN) in one multi-tensor kernel, not a kernel and a host read per tensor."""
        tensors = [t.unflatten(0, (self.members, -1)) for t in self.net.state_dict().values()
                   if t.is_floating_point() and t.dim()]
        largest = torch._foreach_norm([t[k] for t in tensors for k in members], float("inf"))
        return torch.stack(largest).view(len(tensors), len(members)).isfinite().all(0)

    def _freeze(self, member: int) -> None:
        """A failed member of a pack computes zeros from now on: its weights, statistics and momentum zeroed."""
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
            self.book.log_row(k, self.global_step, row)
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
        checkpoint.update(self.book.state_dict())  # per member: packing/members.py splits them

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.book.load_state_dict(checkpoint)


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
