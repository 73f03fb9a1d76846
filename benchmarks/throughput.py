"""Training images/s and peak memory of the paper's nets, with this machine's default speed settings and with each
switch flipped, one at a time:

    python benchmarks/throughput.py [--nets resnet20 plain56 resnet1202 imagenet-resnet50 ...]
                                    [--configs defaults compile=reduce-overhead ...] [--batch N] [--steps N]

A training step is the plain PyTorch loop of common.py (forward, loss, backward, SGD; the Lightning path adds the
overhead that loop_overhead.py measures) on batches resident on the device: CIFAR nets on the project's augmenting
stream, ImageNet nets on one synthetic 224x224 batch (decoding is imagenet_decode.py's subject). Each (net,
configuration) runs in a fresh process, so that compilation starts clean. Peak memory: on a GPU all that training
held at its peak (torch.cuda.max_memory_allocated: the data set, weights, gradients, optimiser state, activations);
on CPU the growth of the process's peak resident set (VmHWM) over its size when training started (with the data set
loaded): what the net, its optimiser and its activations added."""
import argparse
import itertools
import json
import logging
import re
import subprocess
import sys
import warnings
from functools import partial
from pathlib import Path

import torch
from common import SyntheticCifar, device, machine, plain_step_time

from deepres.config import uses_cuda
from deepres.models import CifarResNet, ImageNetResNet

CUDA = uses_cuda("auto")
# The defaults as conf/ resolves them on this machine (trainer.precision, trainer.benchmark, model.*)
DEFAULTS = {"precision": "bf16-mixed" if CUDA else "32-true", "benchmark": CUDA, "channels_last": CUDA,
            "compile": False, "checkpoint_activations": False}
# each configuration flips one switch of the defaults; its name is the override that does it
OTHER_PRECISION = "32-true" if CUDA else "bf16-mixed"
FLIPS = {"defaults": {}, f"trainer.precision={OTHER_PRECISION}": {"precision": OTHER_PRECISION},
         f"model.channels_last={str(not CUDA).lower()}": {"channels_last": not CUDA},
         "trainer.benchmark=false": {"benchmark": False}, "model.compile=true": {"compile": True},
         "model.compile=reduce-overhead": {"compile": "reduce-overhead"},
         "model.checkpoint_activations=true": {"checkpoint_activations": True},
         "model.bn_batch=64": {"bn_batch": 64}}  # the CIFAR recipe's BN over groups of 64: its cost
CPU_NETS = ["resnet20", "resnet56", "resnet110"]
CPU_CONFIGS = [f for f in FLIPS if "benchmark" not in f and "compile" not in f]
GPU_NETS = [f"{kind}{d}" for d in (20, 56, 110) for kind in ("plain", "resnet")] + ["resnet1202"] + [
    f"imagenet-resnet{d}" for d in (18, 34, 50, 101, 152)]


def build(net: str, checkpoint_activations: bool):
    """(net builder, depth, is ImageNet) for names like resnet56, plain20, imagenet-resnet50."""
    match = re.fullmatch(r"(imagenet-)?(resnet|plain)(\d+)", net)
    if match is None:
        raise SystemExit(f"unknown net {net!r}: resnet<depth>, plain<depth>, imagenet-resnet<depth>")
    imagenet, residual, depth = bool(match[1]), match[2] == "resnet", int(match[3])
    if not imagenet:
        return partial(CifarResNet, depth, residual, checkpoint_activations=checkpoint_activations), depth, False

    def imagenet_net():
        net = ImageNetResNet(depth, residual)
        net.checkpoint_activations = checkpoint_activations  # the shared ResNet forward honours it
        return net
    return imagenet_net, depth, True


def resident_mb(field: str) -> float:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())[1]) / 1024


def reset_peak_memory() -> float:
    """Forget the peaks of setting up (CIFAR's normalisation statistics are computed in float64); returns what
    the peak is counted from: 0 on a GPU, the resident set on CPU."""
    if device().type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return 0.0
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
    return resident_mb("VmRSS")


def peak_memory_mb() -> float:
    return torch.cuda.max_memory_allocated() / 2**20 if device().type == "cuda" else resident_mb("VmHWM")


def run_one(net: str, flip: str, batch: int, steps: int, warmup: int, images: int = 50000) -> dict:
    """One measurement, in this process."""
    switches = {**DEFAULTS, **FLIPS[flip]}
    torch.backends.cudnn.benchmark = switches["benchmark"]
    make_net, depth, imagenet = build(net, switches["checkpoint_activations"])
    if imagenet:
        gen = torch.Generator().manual_seed(0)
        batches = itertools.repeat((torch.randn(batch, 3, 224, 224, generator=gen).to(device()),
                                    torch.randint(0, 1000, (batch,), generator=gen).to(device())))
    else:
        data = SyntheticCifar(batch, images, max(batch, images // 5), channels_last=switches["channels_last"])
        data.setup()
        batches = data.stream()
    baseline = reset_peak_memory()
    seconds = plain_step_time(make_net, batches, steps, warmup, switches, depth).wall
    return {"net": net, "config": flip, "batch": batch, "images_per_s": batch / seconds,
            "ms_per_step": 1e3 * seconds, "peak_memory_mb": peak_memory_mb() - baseline}


def run_isolated(net: str, flip: str, batch: int, steps: int, warmup: int, timeout: int, images: int = 50000
                 ) -> dict:
    command = [sys.executable, __file__, "--one", net, flip, str(batch), str(steps), str(warmup), str(images)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"net": net, "config": flip, "batch": batch, "error": f"over {timeout} s"}
    if proc.returncode:
        error = (proc.stderr.strip().splitlines() or ["?"])[-1][:120]
        return {"net": net, "config": flip, "batch": batch, "error": error}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    lines = ["| net | configuration | batch | images/s | ms/iter | vs defaults | peak memory (MB) |",
             "|---|---|---|---|---|---|---|"]
    defaults = {r["net"]: r["images_per_s"] for r in results if r["config"] == "defaults" and "error" not in r}
    for r in results:
        if "error" in r:
            lines.append(f"| {r['net']} | {r['config']} | {r['batch']} | failed: {r['error']} | | | |")
            continue
        relative = f"{r['images_per_s'] / defaults[r['net']]:.2f}x" if r["net"] in defaults else ""
        lines.append(f"| {r['net']} | {r['config']} | {r['batch']} | {r['images_per_s']:,.0f} "
                     f"| {r['ms_per_step']:.1f} | {relative} | {r['peak_memory_mb']:,.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=GPU_NETS if CUDA else CPU_NETS)
    parser.add_argument("--configs", nargs="+", choices=list(FLIPS),
                        default=list(FLIPS) if CUDA else CPU_CONFIGS)
    parser.add_argument("--batch", type=int, help="default: 128 for CIFAR nets, 256 for ImageNet nets")
    parser.add_argument("--steps", type=int, default=200 if CUDA else 5, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=30 if CUDA else 2)
    parser.add_argument("--images", type=int, default=50000, help="synthetic CIFAR training images")
    parser.add_argument("--timeout", type=int, default=900, help="seconds for one (net, configuration)")
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    args = parser.parse_args()
    results = []
    for net, flip in itertools.product(args.nets, args.configs):
        batch = args.batch or (256 if net.startswith("imagenet") else 128)
        results.append(run_isolated(net, flip, batch, args.steps, args.warmup, args.timeout, args.images))
        print(json.dumps(results[-1]), flush=True)
    defaults = ", ".join(f"{k}={v}" for k, v in DEFAULTS.items())
    report = (f"Training throughput, {args.steps} iterations after {args.warmup} of warm-up, {device().type}: "
              f"{machine()}\n\nDefaults on this machine: {defaults}\n\n{table(results)}\n")
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        warnings.filterwarnings("ignore")
        logging.getLogger("torch").setLevel(logging.ERROR)
        net, flip, batch, steps, warmup, images = sys.argv[2:]
        print(json.dumps(run_one(net, flip, int(batch), int(steps), int(warmup), int(images))))
    else:
        main()
