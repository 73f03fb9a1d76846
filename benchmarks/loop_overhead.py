"""The project's Lightning training path against a hand-written PyTorch loop, on the same net, data stream,
optimiser, schedule and batch (benchmarks/common.py): steps/second of each and their ratio, and the framework's
overhead per iteration in ms.

    python benchmarks/loop_overhead.py [--nets resnet20 tiny] [--repeats N] [--threads N] [--out FILE.md]

Each repeat times the loops in turn, in alternating order, over the same number of iterations after a warm-up:
plain; Lightning without the progress bar; with it, as runs are configured by default; a bare LightningModule (the
loss only, in a Trainer with nothing turned on: Lightning's own floor). The table gives the medians over the
repeats, and the overhead is the median of the per-repeat differences, which cancels most of a shared machine's
drift; beside the wall clock, the same from the process's CPU time, which other processes disturb less."""
import argparse
import importlib.util
import logging
import warnings
from functools import partial
from pathlib import Path

import torch
from common import (
    StepTime,
    SyntheticCifar,
    bare_lightning_step_time,
    cifar_net,
    device,
    lightning_step_time,
    machine,
    median,
    plain_step_time,
    publish,
    tiny_net,
)

# net -> (builder, depth for the schedule, timed iterations, warm-up iterations, repeats) on CPU; on a GPU the
# iterations are far shorter: (timed, warm-up)
NETS = {"resnet20": (cifar_net(20), 20, 20, 3, 5), "tiny": (tiny_net, 20, 1000, 100, 15)}
GPU_STEPS = {"resnet20": (300, 50), "tiny": (1000, 100)}
RICH = importlib.util.find_spec("rich") is not None  # the progress bar's library (not on every GPU machine)


def measure(name: str, data: SyntheticCifar, repeats: int | None) -> tuple[int, dict[str, list[StepTime]]]:
    """(timed iterations, {loop: its time per iteration in each repeat})."""
    make_net, depth, steps, warmup, default_repeats = NETS[name]
    if device().type == "cuda":
        steps, warmup = GPU_STEPS[name]
    loops = {"plain": lambda **kwargs: plain_step_time(make_net, data.stream(), **kwargs),
             "without progress bar": partial(lightning_step_time, make_net, data, progress_bar=False)}
    if RICH:
        loops["with progress bar"] = partial(lightning_step_time, make_net, data)
    loops["bare LightningModule"] = partial(bare_lightning_step_time, make_net, data)
    times = {loop: [] for loop in loops}
    for repeat in range(repeats or default_repeats):
        for loop, run in list(loops.items())[::1 if repeat % 2 == 0 else -1]:  # alternate the order
            times[loop].append(run(steps=steps, warmup=warmup, depth=depth))
    return steps, times


def table(results: dict[str, tuple[int, dict[str, list[StepTime]]]]) -> str:
    """Medians over the repeats; an overhead is the median of the repeats' differences (Lightning - plain)."""
    lines = ["| net, batch 128 | Lightning path | timed iterations | plain PyTorch (ms/iter) | Lightning (ms/iter) "
             "| steps/s ratio Lightning/plain | overhead (ms/iter) | CPU time: ratio | CPU time: overhead (ms/iter) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, (steps, times) in results.items():
        plain = times["plain"]
        for loop in ("with progress bar", "without progress bar", "bare LightningModule"):
            if loop not in times:
                continue
            cells = []
            for clock in ("wall", "cpu"):
                p, t = [getattr(x, clock) for x in plain], [getattr(x, clock) for x in times[loop]]
                cells.append((1e3 * median(p), 1e3 * median(t), median(p) / median(t),
                              1e3 * median([b - a for a, b in zip(p, t)])))
            (p_ms, t_ms, ratio, over), (_, _, cpu_ratio, cpu_over) = cells
            lines.append(f"| {name} | {loop} | {steps} x {len(plain)} | {p_ms:.2f} | {t_ms:.2f} | {ratio:.3f} "
                         f"| {over:+.3f} | {cpu_ratio:.3f} | {cpu_over:+.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", choices=list(NETS), default=list(NETS))
    parser.add_argument("--repeats", type=int, help="default: 5 for resnet20, 15 for tiny")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, the cores)")
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    data = SyntheticCifar()
    data.setup()
    header = f"Lightning vs plain PyTorch loop, {device().type}: {machine()}"
    results = {name: measure(name, data, args.repeats) for name in args.nets}
    publish(header, table(results), args.out)


if __name__ == "__main__":
    main()
