"""The paper's learning-rate schedule, counted in iterations, with the warm-up of the 110-layer net.

lr = base lr, divided by `gamma` at each milestone. A milestone below 1 is a fraction of the run's max steps
(0.5 and 0.75 are the paper's 32k and 48k of 64k, and stay in proportion when a run is shortened); a whole number
is an iteration. Nets of at least `warmup_from_depth` layers start at `warmup_lr` until the training error first
falls below `warmup_until_error` percent (about 400 iterations in the paper), or `warmup_max_steps` pass."""
from collections.abc import Sequence

from deepres.errors import UserError


def milestone_steps(milestones: Sequence[float], max_steps: int) -> list[int]:
    """Milestones as iteration counts. A fraction always lies inside the run; a whole iteration that does not
    (a milestone at or beyond trainer.max_steps) is a user error, as is a milestone list out of order."""
    fractions_ok = all(0 < m < 1 or (m >= 1 and m == int(m) and m < max_steps) for m in milestones)
    steps = [int(m * max_steps) if m < 1 else int(m) for m in milestones]
    if not fractions_ok or steps != sorted(steps):
        raise UserError(
            f"schedule.milestones={list(milestones)} with trainer.max_steps={max_steps}: each milestone must be a "
            f"fraction in (0, 1) of the run or a whole iteration in [1, {max_steps - 1}], in increasing order "
            "(the paper's: [0.5, 0.75], i.e. 32k and 48k of 64k).")
    return steps


class IterationSchedule:
    """Learning rate as a function of the iteration and of whether the warm-up has ended."""

    def __init__(self, lr: float, milestones: Sequence[float], gamma: float, max_steps: int, depth: int,
                 warmup_from_depth: int | None = 110, warmup_lr: float = 0.01, warmup_until_error: float = 80.0,
                 warmup_max_steps: int = 2000):
        self.lr_base, self.gamma = lr, gamma
        self.milestones = milestone_steps(milestones, max_steps)
        self.warmup_lr, self.warmup_until_error, self.warmup_max_steps = warmup_lr, warmup_until_error, warmup_max_steps
        warms_up = warmup_from_depth is not None and depth >= warmup_from_depth
        self.warmup_end: int | None = None if warms_up else 0

    def lr(self, step: int) -> float:
        if self.warmup_end is None and step < self.warmup_max_steps:
            return self.warmup_lr
        return self.lr_base * self.gamma ** sum(step >= m for m in self.milestones)

    def observe(self, step: int, row: dict[str, float]) -> None:
        """Every logged row (training or evaluation) passes here: the warm-up ends once the training error
        (percent) falls below the threshold."""
        error = row.get("train/error")
        if self.warmup_end is None and error is not None and (
                error < self.warmup_until_error or step >= self.warmup_max_steps):
            self.warmup_end = step

    def state_dict(self) -> dict:
        return {"warmup_end": self.warmup_end}

    def load_state_dict(self, state: dict) -> None:
        self.warmup_end = state["warmup_end"]


class PlateauSchedule(IterationSchedule):
    """lr / `gamma` when the evaluated error plateaus (the ImageNet recipe): each time `monitor` (an error in
    percent) has not improved by more than `threshold` points for `patience` evaluations in a row, at most
    `max_drops` times. A drop applies from the iteration of the evaluation that found the plateau; the drops are
    milestones, so the learning rate is computed as in IterationSchedule and resumes with the checkpoint."""

    def __init__(self, lr: float, gamma: float, max_steps: int, monitor: str = "test/error", patience: int = 5,
                 threshold: float = 0.1, max_drops: int = 3):
        super().__init__(lr, milestones=[], gamma=gamma, max_steps=max_steps, depth=0, warmup_from_depth=None)
        self.monitor, self.patience, self.threshold, self.max_drops = monitor, patience, threshold, max_drops
        self.best, self.stale = float("inf"), 0

    def observe(self, step: int, row: dict[str, float]) -> None:
        super().observe(step, row)
        error = row.get(self.monitor)
        if error is None:
            return
        if error < self.best - self.threshold:
            self.best, self.stale = error, 0
            return
        self.stale += 1
        if self.stale >= self.patience and len(self.milestones) < self.max_drops:
            self.milestones.append(step)
            self.stale = 0

    def state_dict(self) -> dict:
        return {**super().state_dict(), "milestones": list(self.milestones), "best": self.best, "stale": self.stale}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.milestones, self.best, self.stale = list(state["milestones"]), state["best"], state["stale"]
