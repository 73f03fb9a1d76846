"""Aggregate training images/s of N runs at once on one GPU (what a sweep with several jobs per GPU gets):

    python benchmarks/concurrent_runs.py [--nets resnet20 resnet56] [--runs 1 2 4 8] [--loop lightning|plain]
                                         [--compile reduce-overhead|step_graph] [--images N] [--out FILE.md]

Each run is its own process with its own copy of the data set on the device, training as the project does (the
Lightning path of common.py, with this machine's default speed settings, or the plain loop). The runs warm up, wait
for each other, then time the same number of iterations: the aggregate is all their images over the time until
the slowest finished. On CPU the runs share the cores (torch threads = cores / runs): a check that it works, not a
measurement of interest."""
import argparse
import logging
import multiprocessing as mp
import os
import warnings
from pathlib import Path

import torch
from common import SyntheticCifar, cifar_net, device, lightning_step_time, machine, plain_step_time


def run(net: str, loop: str, compile: str | bool, batch: int, images: int, steps: int, warmup: int, threads: int,
        barrier, results) -> None:
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    torch.set_num_threads(threads)
    depth = int(net.removeprefix("resnet"))
    data = SyntheticCifar(batch, images, max(batch, images // 5), channels_last=device().type == "cuda")
    data.setup()
    switches = {"channels_last": device().type == "cuda", "compile": compile}
    if loop == "lightning":
        seconds = lightning_step_time(cifar_net(depth), data, steps, warmup, switches, depth, progress_bar=False,
                                      wait=barrier.wait)
    else:
        seconds = plain_step_time(cifar_net(depth), data.stream(), steps, warmup, switches, depth, wait=barrier.wait)
    results.put(seconds.wall)


def aggregate(net: str, runs: int, loop: str, compile: str | bool, batch: int, images: int, steps: int,
              warmup: int) -> float:
    """Images/s of `runs` concurrent runs together."""
    context = mp.get_context("spawn")
    barrier, results = context.Barrier(runs), context.Queue()
    threads = max(1, (os.cpu_count() or 1) // runs) if device().type == "cpu" else torch.get_num_threads()
    processes = [context.Process(target=run, args=(net, loop, compile, batch, images, steps, warmup, threads,
                                                   barrier, results)) for _ in range(runs)]
    for p in processes:
        p.start()
    seconds = [results.get() for _ in processes]
    for p in processes:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"a run of {net} exited with status {p.exitcode}")
    return runs * batch / max(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=["resnet20", "resnet56"])
    parser.add_argument("--runs", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--loop", choices=["lightning", "plain"], default="lightning")
    parser.add_argument("--compile", default=False, type=lambda v: {"false": False, "true": True}.get(v, v),
                        help="model.compile of every run: false, true, reduce-overhead, step_graph, ...")
    parser.add_argument("--images", type=int, default=50000, help="synthetic training images (test: a fifth)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=300 if device().type == "cuda" else 5)
    parser.add_argument("--warmup", type=int, default=50 if device().type == "cuda" else 2)
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    args = parser.parse_args()
    lines = ["| net | concurrent runs | aggregate images/s | per run | vs one run |", "|---|---|---|---|---|"]
    for net in args.nets:
        one = None
        for runs in args.runs:
            rate = aggregate(net, runs, args.loop, args.compile, args.batch, args.images, args.steps, args.warmup)
            one = one or rate / runs
            lines.append(f"| {net} | {runs} | {rate:,.0f} | {rate / runs:,.0f} | {rate / one:.2f}x |")
            print(lines[-1], flush=True)
    report = (f"Concurrent runs on one device, {args.loop} loop, model.compile={args.compile}, batch {args.batch}, "
              f"{args.steps} iterations each: {machine()}\n\n" + "\n".join(lines) + "\n")
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
