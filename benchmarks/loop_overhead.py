"""The project's Lightning training path against a hand-written PyTorch loop, on the same net, data stream,
optimiser, schedule and batch (benchmarks/common.py): steps/second of each and their ratio, and the framework's
overhead per iteration in ms.

    python benchmarks/loop_overhead.py [--nets resnet20 tiny] [--repeats 5] [--out FILE.md]

Each repeat times both loops in turn (Lightning with the progress bar, as runs are configured by default, and
without it) over the same number of iterations after a warm-up; the table gives the median over the repeats, and
the overhead is the median of the per-repeat differences, which cancels most of a shared machine's drift."""
import argparse
import importlib.util
import logging
import warnings
from pathlib import Path

import torch
from common import (
    SyntheticCifar,
    cifar_net,
    device,
    lightning_step_time,
    load,
    machine,
    median,
    plain_step_time,
    tiny_net,
)

# net -> (builder, depth for the schedule, timed iterations, warm-up iterations) on CPU; GPU steps are far shorter
NETS = {"resnet20": (cifar_net(20), 20, 20, 3), "tiny": (tiny_net, 20, 1000, 100)}
GPU_STEPS = {"resnet20": (300, 50), "tiny": (1000, 100)}
RICH = importlib.util.find_spec("rich") is not None  # the progress bar's library (not on every GPU machine)


def measure(name: str, data: SyntheticCifar, repeats: int) -> dict[str, float]:
    make_net, depth, steps, warmup = NETS[name]
    if device().type == "cuda":
        steps, warmup = GPU_STEPS[name]
    times = {"plain": [], "lightning, no progress bar": []} | ({"lightning": []} if RICH else {})
    for _ in range(repeats):
        times["plain"].append(plain_step_time(make_net, data.stream(), steps, warmup, depth=depth))
        times["lightning, no progress bar"].append(
            lightning_step_time(make_net, data, steps, warmup, depth=depth, progress_bar=False))
        if RICH:
            times["lightning"].append(lightning_step_time(make_net, data, steps, warmup, depth=depth))
    plain = median(times["plain"])
    return {"steps": steps, "plain_ms": 1e3 * plain,
            **{f"{k}_ms": 1e3 * median(v) for k, v in times.items() if k != "plain"},
            **{f"{k}_ratio": plain / median(v) for k, v in times.items() if k != "plain"},
            **{f"{k}_overhead_ms": 1e3 * median([t - p for t, p in zip(v, times["plain"])])
               for k, v in times.items() if k != "plain"}}


def table(results: dict[str, dict[str, float]], repeats: int) -> str:
    lines = ["| net (batch 128) | Lightning | timed iterations | plain PyTorch (ms/iter) | Lightning (ms/iter) | "
             "steps/s ratio Lightning/plain | overhead (ms/iter) |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        for loop in ("lightning", "lightning, no progress bar"):
            if f"{loop}_ms" in r:
                lines.append(f"| {name} | {'with' if loop == 'lightning' else 'without'} progress bar "
                             f"| {r['steps']} x {repeats} | {r['plain_ms']:.2f} | {r[loop + '_ms']:.2f} "
                             f"| {r[loop + '_ratio']:.3f} | {r[loop + '_overhead_ms']:+.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", choices=list(NETS), default=list(NETS))
    parser.add_argument("--repeats", type=int, default=5)
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
    report = f"{header}\n\n{table(results, args.repeats)}\n\nAt the end: {load()}\n"
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
