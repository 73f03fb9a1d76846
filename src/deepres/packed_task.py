"""The LightningModule of a pack: K runs trained as one PackedCifarResNet (models/packed.py).

The loss is the sum of the members' mean cross-entropies, so member k's gradients are those of its own run; the
optimiser (PackedSGD) steps every member with its own learning rate, which comes from its own schedule (the 110-layer
warm-up ends on the member's own training error). Each member logs its own rows to its own loggers, in the format of
task.Classifier. A member whose loss or weights become NaN or infinite is frozen: its weights and statistics are
zeroed and its learning rate is 0, so it computes zeros; the others go on unchanged."""
import math
from collections.abc import Callable, Iterable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers.logger import Logger

from deepres.metrics_csv import MetricsCSVLogger
from deepres.models.packed import PackedCifarResNet
from deepres.schedule import IterationSchedule
from deepres.task import Classifier, Diverged


class PackedSGD(torch.optim.Optimizer):
    """torch.optim.SGD (momentum, dampening, weight decay, Nesterov) over packed parameters, whose dim 0 holds
    `members` equal slices, one per member, each stepped with its own learning rate (param group key `lrs`)."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lrs: Sequence[float], momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False):
        super().__init__(params, dict(lrs=list(lrs), momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))
        self._rates_key: dict[int, tuple[float, ...]] = {}  # per param group (by id): the lrs its rates hold
        self._rates_cache: dict[int, list[torch.Tensor]] = {}

    def set_lrs(self, lrs: Sequence[float]) -> None:
        for group in self.param_groups:
            group["lrs"] = list(lrs)

    def _rates(self, group: dict) -> list[torch.Tensor]:
        """Each parameter's learning rate per element (member k's lr over its slice), made again only when the
        learning rates change: the update is then one fused multiply-add over all parameters."""
        key = tuple(group["lrs"])
        if self._rates_key.get(id(group)) != key:
            members = len(group["lrs"])
            rates = []
            for p in group["params"]:
                lrs = torch.tensor(group["lrs"], dtype=p.dtype).to(p.device).view(members, *[1] * p.dim())
                rate = torch.empty_like(p, requires_grad=False)
                rate.unflatten(0, (members, -1)).copy_(lrs.expand_as(rate.unflatten(0, (members, -1))))
                rates.append(rate)
            self._rates_key[id(group)], self._rates_cache[id(group)] = key, rates
        return self._rates_cache[id(group)]

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            pairs = [(p, r) for p, r in zip(group["params"], self._rates(group)) if p.grad is not None]
            if not pairs:
                continue
            params, rates = [p for p, _ in pairs], [r for _, r in pairs]
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            updates = grads
            if group["momentum"]:
                bufs = [self.state[p].get("momentum_buffer") for p in params]
                if any(buf is None for buf in bufs):
                    bufs = [g.detach().clone() for g in grads]
                    for p, buf in zip(params, bufs):
                        self.state[p]["momentum_buffer"] = buf
                else:
                    torch._foreach_mul_(bufs, group["momentum"])
                    torch._foreach_add_(bufs, grads, alpha=1 - group["dampening"])
                updates = torch._foreach_add(grads, bufs, alpha=group["momentum"]) if group["nesterov"] else bufs
            torch._foreach_addcmul_(params, updates, rates, value=-1)
        return loss

    def freeze(self, member: int) -> None:
        """Member's learning rate stays 0 and its momentum is dropped."""
        for group in self.param_groups:
            group["lrs"][member] = 0.0
            for p in group["params"]:
                buf = self.state[p].get("momentum_buffer")
                if buf is not None:
                    buf.unflatten(0, (len(group["lrs"]), -1))[member].zero_()


class PackedClassifier(L.LightningModule):
    """Classifier for a pack. `loggers[k]` are member k's loggers; `on_failure(k, err)` is told when member k
    diverges (it is frozen here); when every member has diverged, training stops with Diverged."""

    def __init__(self, net: PackedCifarResNet, optimizer: Callable[..., PackedSGD],
                 schedules: Sequence[IterationSchedule], loggers: Sequence[Sequence[Logger]], eval_names: list[str],
                 on_failure: Callable[[int, Diverged], None]):
        super().__init__()
        self.net, self.optimizer_factory, self.schedules = net, optimizer, list(schedules)
        self.member_loggers, self.eval_names, self.on_failure = [list(lg) for lg in loggers], eval_names, on_failure
        self.metrics_csvs = [next(lg for lg in member if isinstance(lg, MetricsCSVLogger)) for member in loggers]
        k = net.members
        # per member: loss sum, wrong, seen (see Classifier); flat, so that dim 0 holds the members' slices
        self.register_buffer("train_sums", torch.zeros(k * 3))
        self.register_buffer("eval_sums", torch.zeros(len(eval_names), k, 3), persistent=False)
        self.losses: torch.Tensor | None = None  # (log_every_n_steps, K): the members' recent losses
        self.checked_to, self.last_finite = 0, [float("nan")] * k
        self.failed: set[int] = set()
        self.bar_metrics: dict[str, float] = {}

    def __setattr__(self, name: str, value) -> None:
        if name == "_current_fx_name":  # see Classifier.__setattr__
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def live(self) -> list[int]:
        return [k for k in range(self.net.members) if k not in self.failed]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _log_row(self, member: int, row: dict[str, float]) -> None:
        self.schedules[member].observe(self.global_step, row)
        for logger in self.member_loggers[member]:
            logger.log_metrics(row, step=self.global_step)

    def _log_train_rows(self) -> None:
        step, rows = self.global_step, []
        sums = self.trainer.strategy.reduce(self.train_sums, reduce_op="sum").view(-1, 3).cpu()  # one transfer
        for k in self.live:
            row = Classifier._as_metrics("train", sums[k])
            row["lr"] = self.schedules[k].lr(step - 1)
            self._log_row(k, row)
            rows.append(row)
        self.train_sums.zero_()
        if rows:  # the progress bar shows the mean over the live members
            self.bar_metrics = {key: sum(r[key] for r in rows) / len(rows) for key in ("train/loss", "train/error")}
        self.bar_metrics["runs"] = len(rows)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        step = self.global_step
        if step and step % self.trainer.log_every_n_steps == 0:
            self.check_finite()
            self._log_train_rows()
        lrs = [0.0 if k in self.failed else schedule.lr(step) for k, schedule in enumerate(self.schedules)]
        self.optimizers().optimizer.set_lrs(lrs)

    def on_train_start(self) -> None:
        self.losses = torch.full((self.trainer.log_every_n_steps, self.net.members), float("nan"),
                                 device=self.device)
        self.checked_to = self.global_step

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch  # (B, 3K, H, W), (B, K)
        logits = self.net(x)  # (B, K, classes)
        per_member = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(0)
        sums = torch.stack([per_member.detach() * len(y), (logits.argmax(2) != y).sum(0), y.new_full(per_member.shape,
                                                                                                    len(y))], 1)
        self.train_sums.add_(sums.flatten().to(self.train_sums))
        self.losses[self.global_step % len(self.losses)] = per_member.detach()
        return per_member.sum()

    def _fail(self, member: int, err: Diverged) -> None:
        self.failed.add(member)
        self.net.freeze(member)
        self.optimizers().optimizer.freeze(member)
        self.on_failure(member, err)

    def check_finite(self, weights: bool = False) -> None:
        """Freeze (and report) every member whose loss so far, or with weights=True whose weights or BN statistics,
        became NaN or infinite; raise Diverged once no member is left."""
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
        if weights:
            tensors = [t.unflatten(0, (self.net.members, -1)) for t in self.net.state_dict().values()
                       if t.is_floating_point() and t.dim()]
            for k in self.live:
                if not all(torch.isfinite(t[k]).all() for t in tensors):
                    self._fail(k, Diverged.weights(self.global_step, self.last_finite[k]))
        if not self.live:
            raise Diverged("every run of the pack diverged; each one's status.json says when.")

    def on_train_end(self) -> None:
        if self.train_sums.view(-1, 3)[:, 2].sum() > 0:
            self.check_finite()
            self._log_train_rows()

    def on_validation_start(self) -> None:
        self.check_finite()

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch  # the evaluation images once: every member sees the same ones
        scores = self.net(x.repeat(1, self.net.members, 1, 1))
        labels = y[:, None].expand(-1, self.net.members)
        sums = [F.cross_entropy(scores.transpose(1, 2), labels, reduction="none").sum(0),
                (scores.argmax(2) != labels).sum(0), torch.full((self.net.members,), len(y))]
        self.eval_sums[dataloader_idx] += torch.stack([t.to(self.eval_sums) for t in sums], 1)

    def on_validation_epoch_end(self) -> None:
        sums = self.trainer.strategy.reduce(self.eval_sums, reduce_op="sum").cpu()
        for k in self.live:
            row = {}
            for name, member_sums in zip(self.eval_names, sums[:, k]):
                row.update(Classifier._as_metrics(name, member_sums))
            self._log_row(k, row)
        self.eval_sums.zero_()

    def configure_optimizers(self) -> PackedSGD:
        return self.optimizer_factory(self.net.parameters())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Per member, as a Classifier's checkpoint holds them: its schedule and its metric rows (whose metrics.csv
        is written now, as RunCheckpoints does for a single run)."""
        checkpoint["schedule"] = [s.state_dict() for s in self.schedules]
        checkpoint["metric_rows"] = [csv.state_dict() for csv in self.metrics_csvs]
        for k in self.live:
            self.metrics_csvs[k].save()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        for schedule, csv, schedule_state, rows in zip(self.schedules, self.metrics_csvs, checkpoint["schedule"],
                                                       checkpoint["metric_rows"]):
            schedule.load_state_dict(schedule_state)
            csv.load_state_dict(rows)
