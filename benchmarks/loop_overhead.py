"""The project's Lightning training path against a hand-written PyTorch loop, on the same net, data stream,
optimiser, schedule and batch (benchmarks/common.py): their steps/s ratio, repeated until it holds, and the
distribution of each loop's step times, with Python's garbage collector as each runs it and with it off.

    python benchmarks/loop_overhead.py [--nets resnet20 tiny] [--spread 0.02] [--max-repeats N] [--threads N]
                                       [--out FILE.md]

The loops run in pairs, interleaved: inside the project's fit, after every BLOCK of its iterations, BLOCK of the
plain loop's, each loop's clock paused while the other runs. A shared machine's speed drifts by several per cent
from one ten-second window to the next; interleaved, both loops see the same drift. The pairs:
  project            Classifier in the Trainer as runs are configured by default: the progress bar, and the
                     collector policy of gc.manual=true (automatic collection off, collections at boundaries)
    with plain       the loop as people write it: Python's collector on, nothing frozen, during its blocks
  project, Python's collector     the same with gc.manual=false, with plain again
  project, collector off          the same with the collector disabled throughout, with plain, collector off
The ratio is project's steps/s over plain's in the first pair of each repeat; repeats (the pairs' order reversed
every repeat) go on until the last WINDOW ratios lie within +-spread of their median (or --max-repeats, and the
report says it could not). The step-time distributions pool every repeat's timed iterations; beside the raw p99 /
median, which a shared machine's drift moves, the p99 of each step over the median of its neighbours (timing.py's
local_ratios): the stalls that a loop itself adds, such as a collection."""
import argparse
import gc
import importlib.util
import logging
import statistics
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import lightning as L
import torch
from common import (
    SyntheticCifar,
    cifar_net,
    device,
    lightning_step_time,
    machine,
    plain_iterations,
    publish,
    tiny_net,
)
from timing import Clock, StepTime, local_ratios, percentile

# net -> (builder, depth for the schedule, timed iterations, warm-up iterations) on CPU; on a GPU: GPU_STEPS
NETS = {"resnet20": (cifar_net(20), 20, 60, 5), "tiny": (tiny_net, 20, 1000, 100)}
GPU_STEPS = {"resnet20": (300, 50), "tiny": (1000, 100)}
BLOCK, GPU_BLOCK = 10, 50  # iterations of one loop before the other's turn
WINDOW = 5  # the repeats whose ratios must agree
RICH = importlib.util.find_spec("rich") is not None  # the progress bar's library (not on every GPU machine)
PROJECT, PLAIN = "project", "plain"
# (project loop, its collector mode; plain loop, its collector mode): the first pair gives the ratio
PAIRS = [(PROJECT, "manual", PLAIN, "python"), ("project, Python's collector", "python", PLAIN, "python"),
         ("project, collector off", "off", "plain, collector off", "off")]


@contextmanager
def plain_collector(mode: str) -> Iterator[None]:
    """Python's collector as the plain loop has it during its blocks ("python": on, nothing frozen; "off"), and
    back as the project's loop had it after."""
    enabled, frozen = gc.isenabled(), gc.get_freeze_count()
    if mode == "python":
        gc.unfreeze()
        gc.enable()
    else:
        gc.disable()
    try:
        yield
    finally:
        gc.enable() if enabled else gc.disable()
        if frozen:
            gc.freeze()


class Interleave(L.Callback):
    """After every `block` of the project's iterations in its timed window, `block` of the plain loop's (its warm-up
    before its first block), the project's clock paused meanwhile and the plain loop's running only then."""

    def __init__(self, clock: Clock, plain: Iterator, plain_clock: Clock, block: int, warmup: int, gc_mode: str):
        self.clock, self.plain, self.plain_clock, self.block = clock, plain, plain_clock, block
        self.todo, self.gc_mode = warmup, gc_mode

    def on_train_batch_end(self, trainer, *args) -> None:
        if not self.clock.marks or self.clock.elapsed is not None or trainer.global_step % self.block:
            return
        self.clock.pause()
        with plain_collector(self.gc_mode):
            self.plain_clock.resume()
            for _ in range(self.todo + self.block):
                if self.plain_clock.elapsed is not None:
                    break
                next(self.plain)
            self.plain_clock.pause()
        self.todo = 0
        self.clock.resume()


def interleaved(make_net, project_data: SyntheticCifar, plain_data: SyntheticCifar, project_gc: str, plain_gc: str,
                steps: int, warmup: int, depth: int, block: int) -> tuple[StepTime, StepTime]:
    """One pair: the project's loop (collector mode project_gc) with the plain loop's blocks between its own."""
    plain_clock = Clock(warmup, warmup + steps)
    plain = plain_iterations(make_net, plain_clock.batches(plain_data.stream()), depth=depth)
    callback = lambda clock: Interleave(clock, plain, plain_clock, block, warmup, plain_gc)  # noqa: E731
    project = lightning_step_time(make_net, project_data, steps, warmup, depth=depth, progress_bar=RICH,
                                  gc_mode=project_gc, interleave=callback)
    plain_clock.resume()
    with plain_collector(plain_gc):
        while plain_clock.elapsed is None:  # what the last block left (an iteration or two), alone
            next(plain)
    return project, plain_clock.elapsed


def pairs(make_net, project_data: SyntheticCifar, plain_data: SyntheticCifar) -> list[tuple[str, str, Callable]]:
    """[(project loop, plain loop, run(steps=, warmup=, depth=, block=) -> (project StepTime, plain StepTime))]."""
    return [(project, plain, partial(interleaved, make_net, project_data, plain_data, project_gc, plain_gc))
            for project, project_gc, plain, plain_gc in PAIRS]


def spread(ratios: list[float]) -> float:
    """How far the last WINDOW ratios lie from their median, as a fraction of it."""
    last = ratios[-WINDOW:]
    middle = statistics.median(last)
    return max(abs(r - middle) for r in last) / middle


def measure(name: str, data: tuple[SyntheticCifar, SyntheticCifar], target: float, max_repeats: int) -> dict:
    """Repeat the pairs until the ratio holds; {steps, times: {loop: [StepTime per run]}, ratios}."""
    make_net, depth, steps, warmup = NETS[name]
    block = BLOCK
    if device().type == "cuda":
        (steps, warmup), block = GPU_STEPS[name], GPU_BLOCK
    runs = pairs(make_net, *data)
    times = {loop: [] for project, plain, _ in runs for loop in (project, plain)}
    ratios: list[float] = []
    while len(ratios) < WINDOW or (spread(ratios) > target and len(ratios) < max_repeats):
        order = runs[::1 if len(ratios) % 2 == 0 else -1]
        for project, plain, run in order:
            project_time, plain_time = run(steps=steps, warmup=warmup, depth=depth, block=block)
            times[project].append(project_time)
            times[plain].append(plain_time)
            if project == runs[0][0]:
                first = plain_time.wall / project_time.wall
        ratios.append(first)
        logging.getLogger("bench").warning(f"{name} repeat {len(ratios)}: ratio {ratios[-1]:.3f}")
    return {"steps": steps, "times": times, "ratios": ratios}


def ratio_line(name: str, result: dict, target: float) -> str:
    ratios = result["ratios"]
    held = spread(ratios) <= target
    verdict = "held" if held else f"could not hold within +-{100 * target:.0f}% in {len(ratios)} repeats"
    return (f"- {name}: project / plain steps/s = {statistics.median(ratios[-WINDOW:]):.3f} "
            f"+- {100 * spread(ratios):.1f}% (median and spread of the last {WINDOW} of {len(ratios)} repeats of "
            f"{result['steps']} iterations: {verdict}); every repeat: {', '.join(f'{r:.3f}' for r in ratios)}")


def table(results: dict[str, dict]) -> str:
    lines = ["| net, batch 128 | loop | steps/s | ms/iter (median of repeats) | step median (ms) | step p99 (ms) "
             "| p99 / median | p99 of step / local median | step max (ms) | CPU time (ms/iter) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, result in results.items():
        for loop, times in result["times"].items():
            wall = statistics.median(t.wall for t in times)
            steps = [s for t in times for s in t.steps]
            mid, p99 = statistics.median(steps), percentile(steps, 99)
            local = percentile([r for t in times for r in local_ratios(t.steps)], 99)
            lines.append(f"| {name} | {loop} | {1 / wall:.2f} | {1e3 * wall:.2f} | {1e3 * mid:.2f} | {1e3 * p99:.2f} "
                         f"| {p99 / mid:.3f} | {local:.3f} | {1e3 * max(steps):.2f} | "
                         f"{1e3 * statistics.median(t.cpu for t in times):.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", choices=list(NETS), default=list(NETS))
    parser.add_argument("--spread", type=float, default=0.02, help="the ratio's spread to reach (0.02: +-2%%)")
    parser.add_argument("--max-repeats", type=int, default=12)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, the cores)")
    parser.add_argument("--out", type=Path, help="also write the report here (Markdown)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    data = SyntheticCifar(), SyntheticCifar()  # the same images: each loop its own stream
    for loop_data in data:
        loop_data.setup()
    header = f"Lightning vs plain PyTorch loop, {device().type}: {machine()}"
    results = {name: measure(name, data, args.spread, args.max_repeats) for name in args.nets}
    summary = "\n".join(ratio_line(name, result, args.spread) for name, result in results.items())
    publish(header, f"{summary}\n\n{table(results)}", args.out)


if __name__ == "__main__":
    main()
