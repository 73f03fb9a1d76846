"""Step times of a training loop: StepTime, and Clock, which marks every batch draw of a loop (CUDA events on a GPU)
and leaves out what runs while it is paused (the other loop of an interleaved pair, benchmarks/loop_overhead.py)."""
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple

import torch


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepTime(NamedTuple):
    """Seconds per iteration: wall clock, and CPU time of this process (all its threads); and each timed
    iteration's seconds (on a GPU: between CUDA events recorded at each batch draw, the device's timeline)."""

    wall: float
    cpu: float
    steps: tuple[float, ...] = ()


class Clock:
    """Wall time from the draw of batch `start` to the draw of batch `stop`: `stop - start` iterations of whichever
    loop draws them, timed in the data stream so that the timed loop runs no extra hook, with a mark at every draw
    between. `wait`, if given, is called before the clock starts (concurrent runs start their timed iterations
    together)."""

    def __init__(self, start: int, stop: int, wait: Callable[[], object] | None = None):
        self.start, self.stop, self.wait = start, stop, wait
        self.marks: list = []
        self.pauses: list[tuple[int, object, object, float]] = []  # (step, wall mark, wall mark, CPU seconds)
        self._paused: tuple[object, float] | None = None
        self.elapsed: StepTime | None = None

    def _now(self) -> object:
        """A mark on the timeline the steps are measured on: the host's clock, or the GPU's (a recorded event)."""
        if not torch.cuda.is_available():
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def pause(self) -> None:
        """Leave out of the timed steps what runs until resume(): the other loop of an interleaved pair."""
        if self.marks and self.elapsed is None:
            self._paused = (self._now(), time.process_time())

    def resume(self) -> None:
        if self._paused is not None:
            began, cpu = self._paused
            self.pauses.append((len(self.marks) - 1, began, self._now(), time.process_time() - cpu))
            self._paused = None

    def batches(self, stream: Iterable) -> Iterator:
        for i, batch in enumerate(stream):
            if self.start <= i <= self.stop:
                self._mark(i)
            yield batch

    def _mark(self, i: int) -> None:
        if i in (self.start, self.stop):
            sync()
        if i == self.start and self.wait is not None:
            self.wait()
        now = (time.perf_counter(), time.process_time())
        self.marks.append(self._now())
        if i == self.start:
            self.began = now
        elif i == self.stop:
            sync()  # the last event recorded
            steps = [_seconds(a, b) for a, b in zip(self.marks, self.marks[1:])]
            for step, began, ended, _ in self.pauses:
                steps[step] -= _seconds(began, ended)
            n = self.stop - self.start
            cpu = now[1] - self.began[1] - sum(pause[3] for pause in self.pauses)
            self.elapsed = StepTime(sum(steps) / n, cpu / n, tuple(steps))


def _seconds(a, b) -> float:
    """Seconds between two of Clock's marks (host times, or CUDA events)."""
    return a.elapsed_time(b) / 1e3 if isinstance(a, torch.cuda.Event) else b - a


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0-100) of the values, interpolated between the nearest ranks."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def local_ratios(steps: Sequence[float], half_window: int = 10) -> list[float]:
    """Each step's seconds over the median of the steps around it (up to `half_window` either side, itself
    included, within one timed run): how far a step stands out from its neighbours. A shared machine's speed drifts
    by tens of per cent over a minute (every loop's raw p99 / median moves with it); a slow step among fast
    neighbours (a collection, a stall) is what these ratios keep."""
    return [step / statistics.median(steps[max(0, i - half_window):i + half_window + 1])
            for i, step in enumerate(steps)]
