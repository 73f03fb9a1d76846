"""Images/s and peak memory of the paper's Faster R-CNN detectors (ResNet-101 and its VGG-16 baseline, Tables 7 and
8), in training and in inference:

    python benchmarks/detection.py [--nets resnet101 vgg16] [--modes train inference] [--min-size 600]
                                   [--max-size 1000] [--batch 1] [--steps N] [--warmup N] [--out FILE] [--dry]

Training is forward (the four losses), backward and an SGD step with [32]'s settings, one image per iteration as in
[32] (or --batch); inference is the detector in eval mode with 300 proposals, up to its detections. The images are
drawn as deepres.detection.generated draws its sets (shapes in the VOC classes' colours, with their boxes as targets),
500x375 like most of VOC's, resident on the device; the detector's own transform resizes them (shorter side 600,
longer at most 1000: [32]'s input; a 2-core CPU takes a smaller --min-size). The weights are random, a ResNet's BN
statistics taken from an image (see calibrated()), so that the head runs on as many RoIs as a trained detector's
(the RoIs/image column: sampled in training, the proposals left after NMS at test); only the last per-class NMS sees
as many boxes as pass the 0.05 score threshold, which with random weights is anything from none to the 100 kept. On
CUDA bf16 autocast and cudnn autotuning (the project's defaults), fp32 on CPU.

Each (net, mode) runs in a fresh process, its peak memory measured as throughput.py measures it (CUDA: all that was
allocated at the peak, weights included; CPU: the growth of the process's peak resident set). --dry runs ResNet-18 and
VGG-16 at 96 pixels with 16 RoIs and proposals, 2 iterations, all in this process: the path the tests run, not
measurements."""
import argparse
import itertools
import json
import logging
import re
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from common import device, machine, publish
from throughput import peak_memory_mb, reset_peak_memory
from timing import Clock, StepTime, percentile
from torch import nn

from deepres.detection.backbones import resnet_backbone, vgg16_backbone
from deepres.detection.faster_rcnn import IMAGENET_MEAN, Detector, build_detector
from deepres.detection.generated import draw
from deepres.detection.voc import VOC_CLASSES
from deepres.detection.weights import imagenet_resnet, imagenet_vgg16

CUDA = torch.cuda.is_available()
MODES = ("train", "inference")
NET = re.compile(r"(resnet|plain)(\d+)|vgg16")
# conf/experiment/voc_faster_rcnn.yaml ([32]); fused on CUDA as conf/optimizer/sgd.yaml has it
SGD = {"lr": 0.001, "momentum": 0.9, "weight_decay": 0.0005, **({"fused": True} if CUDA else {})}
VOC_SIZE = (500, 375)  # width, height
IMAGES = 4  # distinct images, drawn in turn
# [32]'s input, 128 RoIs per training image and 300 proposals at test; a 2-core CPU takes a smaller input and fewer
# iterations, the dry run tiny settings of everything
PAPER = {"nets": ["resnet101", "vgg16"], "min_size": 600, "max_size": 1000, "rois": 128, "proposals": 300}
SETTINGS = {**PAPER, "steps": 20, "warmup": 5} if CUDA else {**PAPER, "min_size": 300, "max_size": 500, "steps": 3,
                                                             "warmup": 1}
DRY = {"nets": ["resnet18", "vgg16"], "min_size": 96, "max_size": 160, "rois": 16, "proposals": 16, "steps": 2,
       "warmup": 1}


def parse(net: str) -> re.Match:
    match = NET.fullmatch(net)
    if match is None:
        raise SystemExit(f"unknown net {net!r}: resnet<depth> or plain<depth> (Table 1's depths), vgg16")
    return match


def title(net: str) -> str:
    match = parse(net)
    return "VGG-16" if net == "vgg16" else f"{'ResNet' if match[1] == 'resnet' else 'plain'}-{match[2]}"


def detector(net: str, min_size: int, max_size: int, rois: int, proposals: int, image: torch.Tensor) -> Detector:
    """Faster R-CNN for VOC's 20 classes on `net` (random weights, a ResNet's BN statistics from `image`), as
    conf/model/faster_rcnn.yaml builds it."""
    match = parse(net)
    parts = vgg16_backbone(imagenet_vgg16()) if net == "vgg16" else resnet_backbone(
        calibrated(imagenet_resnet(int(match[2]), residual=match[1] == "resnet").to(image.device), image))
    return build_detector(parts, len(VOC_CLASSES), min_size=min_size, max_size=max_size,
                          box_batch_size_per_image=rois, rpn_post_nms_top_n_test=proposals)


def calibrated(net: nn.Module, image: torch.Tensor) -> nn.Module:
    """`net` with each BN layer's statistics those of its input on `image` (uint8), as a trained net's keep its
    activations in range: with the initial ones (mean 0, variance 1), which the detector freezes, a random
    ResNet-101's conv4_x grows them ten-thousandfold and its RPN's proposals collapse to a few."""
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average: this one batch's statistics
    mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(3, 1, 1)
    with torch.no_grad():
        net.train()(image.float().div(255).sub(mean)[None])
    return net.eval()


def voc_like_images(count: int, seed: int = 0) -> list[tuple[torch.Tensor, dict]]:
    """`count` uint8 500x375 images of 2-4 objects each, and their targets."""
    rng, samples = np.random.default_rng(seed), []
    for _ in range(count):
        labels = rng.permutation(len(VOC_CLASSES))[:int(rng.integers(2, 5))]
        image, shapes = draw(rng, *VOC_SIZE, labels)
        target = {"boxes": torch.tensor([box for box, _ in shapes], dtype=torch.float32),
                  "labels": torch.as_tensor(labels[:len(shapes)] + 1, dtype=torch.int64),
                  "difficult": torch.zeros(len(shapes), dtype=torch.bool)}
        samples.append((torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous(), target))
    return samples


def batches(samples: list[tuple[torch.Tensor, dict]], batch: int) -> Iterator[tuple[list, list]]:
    for i in itertools.count():
        chosen = [samples[(i * batch + j) % len(samples)] for j in range(batch)]
        yield [image for image, _ in chosen], [target for _, target in chosen]


def training_step(model: Detector) -> Callable[[list, list], None]:
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], **SGD)
    model.train()

    def step(images: list, targets: list) -> None:
        with torch.autocast(device().type, dtype=torch.bfloat16, enabled=CUDA):
            loss = sum(model(images, targets).values())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def inference_step(model: Detector) -> Callable[[list, list], None]:
    model.eval()

    def step(images: list, targets: list) -> None:
        with torch.inference_mode(), torch.autocast(device().type, dtype=torch.bfloat16, enabled=CUDA):
            model(images)
    return step


def step_time(step: Callable[[list, list], None], stream: Iterator, steps: int, warmup: int) -> StepTime:
    """Seconds per iteration of `step` over `steps` iterations after `warmup`, each iteration timed."""
    clock = Clock(warmup, warmup + steps)
    for images, targets in clock.batches(stream):
        if clock.elapsed is not None:
            return clock.elapsed
        step(images, targets)


def run_one(net: str, mode: str, batch: int, steps: int, warmup: int, min_size: int, max_size: int, rois: int,
            proposals: int) -> dict:
    """One measurement, in this process."""
    torch.backends.cudnn.benchmark = CUDA
    dev = device()
    samples = [(image.to(dev), {key: value.to(dev) for key, value in target.items()})
               for image, target in voc_like_images(IMAGES)]
    baseline = reset_peak_memory()
    torch.manual_seed(0)
    model = detector(net, min_size, max_size, rois, proposals, samples[0][0]).to(dev)
    pooled = []  # RoIs pooled per iteration: sampled in training, the proposals left after NMS in inference
    model.roi_heads.box_roi_pool.register_forward_hook(lambda module, args, output: pooled.append(len(output)))
    make_step = {"train": training_step, "inference": inference_step}[mode]
    seconds = step_time(make_step(model), batches(samples, batch), steps, warmup)
    ms = [1e3 * s for s in seconds.steps]
    return {"net": title(net), "mode": mode, "batch": batch, "images_per_s": batch / seconds.wall,
            "ms_per_step": 1e3 * seconds.wall, "median_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
            "rois_per_image": sum(pooled[warmup:]) / (steps * batch), "peak_memory_mb": peak_memory_mb() - baseline}


def run_isolated(settings: dict, timeout: int) -> dict:
    """run_one(**settings) in a fresh process; a row saying why when it fails."""
    command = [sys.executable, __file__, "--one", json.dumps(settings)]
    failed = {"net": title(settings["net"]), "mode": settings["mode"], "batch": settings["batch"]}
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**failed, "error": f"over {timeout} s"}
    if proc.returncode:
        return {**failed, "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:120]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rate(value: float) -> str:
    """Three significant digits (a CPU trains a detector at a few hundredths of an image per second)."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def table(results: list[dict]) -> str:
    """One row per measurement: images/s is the batch over the mean step (ms/iter); each step timed on its own
    gives the median and p99."""
    lines = ["| detector | mode | batch | RoIs/image | images/s | ms/iter | median (ms) | p99 (ms) "
             "| peak memory (MB) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        head = f"| {r['net']} Faster R-CNN | {r['mode']} | {r['batch']} |"
        if "error" in r:
            lines.append(f"{head} | failed: {r['error']} | | | | |")
            continue
        lines.append(f"{head} {r['rois_per_image']:.0f} | {rate(r['images_per_s'])} | {r['ms_per_step']:.1f} "
                     f"| {r['median_ms']:.1f} | {r['p99_ms']:.1f} | {r['peak_memory_mb']:,.0f} |")
    return "\n".join(lines)


def header(args: argparse.Namespace) -> str:
    precision = "bf16 autocast" if CUDA else "fp32"
    where = ("dry run: tiny settings in one process, not measurements" if args.dry else
             "the paper's input" if (args.min_size, args.max_size) == (PAPER["min_size"], PAPER["max_size"]) else
             f"smaller than the paper's input (shorter side {PAPER['min_size']}, longer <= {PAPER['max_size']}), "
             "for this machine")
    return (f"Faster R-CNN speed, {device().type}, {precision}: {VOC_SIZE[0]}x{VOC_SIZE[1]} images resized to "
            f"shorter side {args.min_size} (longer <= {args.max_size}; {where}); training: {args.rois} RoIs per "
            f"image, SGD; inference: {args.proposals} proposals; {args.steps} iterations after {args.warmup} of "
            f"warm-up, each (net, mode) in {'this process' if args.dry else 'a fresh process'}\n\n"
            f"Machine: {machine()}")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="+", help=f"resnet<depth>, plain<depth>, vgg16 (default {PAPER['nets']})")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--min-size", type=int, help=f"shorter side of the input (default {SETTINGS['min_size']})")
    parser.add_argument("--max-size", type=int, help=f"longer side at most (default {SETTINGS['max_size']})")
    parser.add_argument("--rois", type=int, help=f"RoIs per training image (default {PAPER['rois']})")
    parser.add_argument("--proposals", type=int, help=f"proposals at test (default {PAPER['proposals']})")
    parser.add_argument("--batch", type=int, default=1, help="images per iteration ([32]: 1)")
    parser.add_argument("--steps", type=int, help=f"timed iterations (default {SETTINGS['steps']})")
    parser.add_argument("--warmup", type=int, help=f"default {SETTINGS['warmup']}")
    parser.add_argument("--timeout", type=int, default=900, help="seconds for one (net, mode)")
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    parser.add_argument("--dry", action="store_true", help="tiny settings in this process (what the tests run)")
    args = parser.parse_args(argv)
    for key, value in (DRY if args.dry else SETTINGS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    results = []
    for net, mode in itertools.product(args.nets, args.modes):
        settings = {"net": net, "mode": mode, "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
                    "min_size": args.min_size, "max_size": args.max_size, "rois": args.rois,
                    "proposals": args.proposals}
        results.append(run_one(**settings) if args.dry else run_isolated(settings, args.timeout))
        print(json.dumps(results[-1]), flush=True)
    publish(header(args), table(results), args.out)
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        warnings.filterwarnings("ignore")
        logging.getLogger("torch").setLevel(logging.ERROR)
        print(json.dumps(run_one(**json.loads(sys.argv[2]))))
    else:
        main()
