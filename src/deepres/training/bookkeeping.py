"""What a run keeps besides its net, the same for every task's LightningModule (classification, detection), for
K runs trained as one network (a pack, packing/members.py) or one: each run's schedule and learning rate, its
loggers (metrics.csv first), the finite check of its losses and what happens when it fails, and how the network's
checkpoint splits into the runs' own and merges back. The module computes (loss, metrics); this object records.

A run whose loss becomes NaN or infinite is reported (`on_failure`) and left out while the others go on (the
module freezes its part of the net); Diverged is raised when no run is left."""
import math
from collections.abc import Callable, Iterable, Sequence

from lightning.pytorch.loggers.logger import Logger
from torch import nn

from deepres.errors import Diverged
from deepres.runs.metrics_logger import MetricsCSVLogger
from deepres.training.schedule import IterationSchedule


def one_run_split(checkpoint: dict, module: nn.Module, members: Sequence[int]) -> dict[int, dict]:
    """A run trained alone: the network's checkpoint is the run's."""
    return {0: checkpoint} if 0 in members else {}


def one_run_merge(checkpoints: Sequence[dict], module: nn.Module) -> dict:
    return checkpoints[0]


class Bookkeeping:
    """`schedules[k]` and `loggers[k]` are run k's (schedule None: evaluation only); `on_failure(k, err)` is told
    when run k fails; `split(checkpoint, module, runs)` gives the runs' checkpoints of the network's,
    `merge(checkpoints, module)` the network's of the runs' (one run: as it is)."""

    def __init__(self, schedules: Sequence[IterationSchedule | None], loggers: Sequence[Sequence[Logger]] | None = None,
                 on_failure: Callable[[int, Diverged], None] | None = None,
                 split: Callable[[dict, nn.Module, Sequence[int]], dict[int, dict]] = one_run_split,
                 merge: Callable[[Sequence[dict], nn.Module], dict] = one_run_merge):
        self.schedules = list(schedules)
        self.members = k = len(self.schedules)
        self.add_loggers(loggers if loggers is not None else [[] for _ in range(k)])
        self.on_failure, self.split, self.merge = on_failure, split, merge
        self.failed: set[int] = set()
        self.checked_to, self.last_finite = 0, [float("nan")] * k  # iterations checked, the last finite losses

    def add_loggers(self, loggers: Iterable[Sequence[Logger]]) -> None:
        """The runs' loggers, one list per run in order (metrics.csv first), added as each is made: those made
        before one failed are there to be closed."""
        self.loggers, self.csvs = [], []
        for member in loggers:
            self.loggers.append(list(member))
            self.csvs.append(next((lg for lg in member if isinstance(lg, MetricsCSVLogger)), None))

    @property
    def live(self) -> list[int]:
        return [k for k in range(self.members) if k not in self.failed]

    def lrs(self, step: int) -> list[float]:
        """Each run's learning rate at iteration `step` (0 for a failed run)."""
        return [0.0 if k in self.failed else schedule.lr(step) for k, schedule in enumerate(self.schedules)]

    def log_row(self, member: int, step: int, row: dict[str, float]) -> None:
        """Run `member`'s row at iteration `step`: to its schedule (a plateau or warm-up rule reads it) and loggers."""
        if self.schedules[member] is not None:
            self.schedules[member].observe(step, row)
        for logger in self.loggers[member]:
            logger.log_metrics(row, step=step)

    def check_losses(self, losses: list[float], step: int, ring: int) -> list[int]:
        """The losses of iterations checked_to+1..step, from a ring of the last `ring` iterations' (flat, one per run
        per iteration, iteration i at (i - 1) % ring): fail each run at its first non-finite one; the runs failed."""
        live = self.live
        for i in range(self.checked_to + 1, step + 1):
            at = (i - 1) % ring * self.members
            for k in self.live:
                if math.isfinite(losses[at + k]):
                    self.last_finite[k] = losses[at + k]
                else:
                    self.fail(k, Diverged.loss(i, self.last_finite[k]))
        self.checked_to = max(self.checked_to, step)
        return [k for k in live if k in self.failed]

    def fail(self, member: int, err: Diverged) -> None:
        """Record run `member`'s failure and report it; raise once no run is left (a pack: Diverged.every_member)."""
        self.failed.add(member)
        if self.on_failure is not None:
            self.on_failure(member, err)
        if not self.live:
            raise err if self.members == 1 else Diverged.every_member()

    def state_dict(self) -> dict:
        """Per run, as each run's checkpoint holds them: its schedule and its metric rows, whose metrics.csv is
        written now."""
        for k in self.live:
            if self.csvs[k] is not None:
                self.csvs[k].save()
        return {"schedule": [s.state_dict() for s in self.schedules],
                "metric_rows": [csv.state_dict() if csv else {"rows": {}} for csv in self.csvs]}

    def load_state_dict(self, checkpoint: dict) -> None:
        """A resumed run's schedule and rows; its other loggers (W&B) get the rows again, for those a killed process
        never delivered."""
        for k, (schedule, rows) in enumerate(zip(checkpoint["schedule"], checkpoint["metric_rows"])):
            self.schedules[k].load_state_dict(schedule)
            for logger in self.loggers[k]:
                if logger is self.csvs[k]:
                    logger.load_state_dict(rows)
                else:
                    for step in sorted(rows["rows"], key=int):
                        logger.log_metrics(rows["rows"][step], step=int(step))
