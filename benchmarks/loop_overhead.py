"""The project's Lightning training path against a hand-written PyTorch loop, on the same net, data stream,
optimiser, schedule and batch (benchmarks/common.py): their steps/s ratio, repeated until it holds, and the
distribution of each loop's step times, with Python's garbage collector as each runs it and with it off.

    python benchmarks/loop_overhead.py [--nets resnet20 tiny] [--spread 0.02] [--max-repeats N] [--threads N]
                                       [--out FILE.md]

The loops, each timed over the same iterations after a warm-up, in turn, the order reversed every repeat:
  project            Classifier in the Trainer as runs are configured by default: the progress bar, and the
                     collector policy of gc.manual=true (automatic collection off, collections at boundaries)
  project, Python's collector     the same with gc.manual=false
  project, collector off          the same with the collector disabled throughout
  plain              the loop as people write it: Python's collector on
  plain, collector off
The ratio is project's steps/s over plain's within each repeat; repeats go on until the last WINDOW ratios lie
within +-spread of their median (or --max-repeats, and the report says it could not). The step-time distributions
pool every repeat's timed iterations."""
import argparse
import importlib.util
import logging
import statistics
import warnings
from functools import partial
from pathlib import Path

import torch
from common import (
    StepTime,
    SyntheticCifar,
    cifar_net,
    device,
    lightning_step_time,
    machine,
    percentile,
    plain_step_time,
    publish,
    tiny_net,
)

# net -> (builder, depth for the schedule, timed iterations, warm-up iterations) on CPU; on a GPU: GPU_STEPS
NETS = {"resnet20": (cifar_net(20), 20, 60, 5), "tiny": (tiny_net, 20, 1000, 100)}
GPU_STEPS = {"resnet20": (300, 50), "tiny": (1000, 100)}
WINDOW = 5  # the repeats whose ratios must agree
RICH = importlib.util.find_spec("rich") is not None  # the progress bar's library (not on every GPU machine)
PROJECT, PLAIN = "project", "plain"


def loops(make_net, data: SyntheticCifar) -> dict:
    """{loop name: run(steps=, warmup=, depth=) -> StepTime}."""
    project = partial(lightning_step_time, make_net, data, progress_bar=RICH)
    plain = lambda **kwargs: plain_step_time(make_net, data.stream(), **kwargs)  # noqa: E731 (a fresh stream)
    return {PROJECT: partial(project, gc_mode="manual"),
            "project, Python's collector": partial(project, gc_mode="python"),
            "project, collector off": partial(project, gc_mode="off"),
            PLAIN: partial(plain, gc_mode="python"),
            "plain, collector off": partial(plain, gc_mode="off")}


def ratio(times: dict[str, list[StepTime]], repeat: int) -> float:
    """The project's steps/s over the plain loop's in one repeat."""
    return times[PLAIN][repeat].wall / times[PROJECT][repeat].wall


def spread(ratios: list[float]) -> float:
    """How far the last WINDOW ratios lie from their median, as a fraction of it."""
    last = ratios[-WINDOW:]
    middle = statistics.median(last)
    return max(abs(r - middle) for r in last) / middle


def measure(name: str, data: SyntheticCifar, target: float, max_repeats: int) -> dict:
    """Repeat the loops until the ratio holds; {steps, times: {loop: [StepTime per repeat]}, ratios}."""
    make_net, depth, steps, warmup = NETS[name]
    if device().type == "cuda":
        steps, warmup = GPU_STEPS[name]
    runs = loops(make_net, data)
    times = {loop: [] for loop in runs}
    ratios: list[float] = []
    while len(ratios) < WINDOW or (spread(ratios) > target and len(ratios) < max_repeats):
        order = list(runs.items())[::1 if len(ratios) % 2 == 0 else -1]
        for loop, run in order:
            times[loop].append(run(steps=steps, warmup=warmup, depth=depth))
        ratios.append(ratio(times, len(ratios)))
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
             "| p99 / median | step max (ms) | CPU time (ms/iter) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, result in results.items():
        for loop, times in result["times"].items():
            wall = statistics.median(t.wall for t in times)
            steps = [s for t in times for s in t.steps]
            mid, p99 = statistics.median(steps), percentile(steps, 99)
            lines.append(f"| {name} | {loop} | {1 / wall:.2f} | {1e3 * wall:.2f} | {1e3 * mid:.2f} | {1e3 * p99:.2f} "
                         f"| {p99 / mid:.3f} | {1e3 * max(steps):.2f} | "
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
    data = SyntheticCifar()
    data.setup()
    header = f"Lightning vs plain PyTorch loop, {device().type}: {machine()}"
    results = {name: measure(name, data, args.spread, args.max_repeats) for name in args.nets}
    summary = "\n".join(ratio_line(name, result, args.spread) for name, result in results.items())
    publish(header, f"{summary}\n\n{table(results)}", args.out)


if __name__ == "__main__":
    main()
