"""Packed runs: run-steps/second of K runs trained as one network (src/deepres/packing/) against one run, by pack
size, through the project's Lightning path (the Classifier of K members in the Trainer of common.py):

    python benchmarks/packed.py [--nets resnet20 resnet56] [--packs 1 2 4 8 16] [--steps N] [--graph]
                                [--images N] [--out FILE.md]

A run-step is one iteration of one run (batch 128 of its own images): a pack of K does K per iteration. The
baseline is an ordinary run (Classifier), timed the same way; each pack trains K ResNets with K seeds on the
synthetic CIFAR stream, with this machine's default speed settings (bf16 and channels_last on CUDA, fp32 on CPU);
--graph: the one run and every pack with model.compile=step_graph (the iteration as one CUDA graph)."""
import argparse
import logging
import tempfile
import warnings
from functools import partial
from pathlib import Path

import torch
from common import (
    SGD,
    SyntheticCifar,
    cifar_net,
    device,
    lightning_step_time,
    machine,
    paper_schedule,
    project_fit_time,
    publish,
)
from timing import StepTime

from deepres.config import uses_cuda
from deepres.models import CifarResNet
from deepres.models.build import STEP_GRAPH, apply_switches
from deepres.packing.members import freeze_member
from deepres.packing.optimizer import PackedSGD
from deepres.runs.metrics_logger import MetricsCSVLogger
from deepres.training.bookkeeping import Bookkeeping
from deepres.training.module import Classifier

NETS = {"resnet20": 20, "resnet56": 56}
SWITCHES = {"channels_last": uses_cuda("auto")}  # conf/model/cifar_resnet.yaml's default on this machine
# (timed iterations, warm-up) per net: on a GPU iterations are milliseconds, on CPU ~0.1-10 s
STEPS = {"cuda": (200, 30), "cpu": (6, 2)}


class PackedSyntheticCifar(SyntheticCifar):
    """The synthetic data set, member k drawing the batches of seed k."""

    def __init__(self, members: int, batch_size: int = 128, images: tuple[int, int] = (50000, 10000)):
        super().__init__(batch_size, *images, channels_last=SWITCHES["channels_last"])
        self.member_seeds = list(range(members))


def packed_step_time(depth: int, members: int, data: PackedSyntheticCifar, steps: int, warmup: int,
                     switches: dict) -> StepTime:
    torch.manual_seed(0)
    net = apply_switches(CifarResNet(depth, [True] * members), switches)
    lr, hyper = SGD["lr"], {k: v for k, v in SGD.items() if k != "lr"}
    with tempfile.TemporaryDirectory() as run_dir:
        loggers = [[MetricsCSVLogger(Path(run_dir) / str(k))] for k in range(members)]
        module = Classifier(net, partial(PackedSGD, lrs=[lr] * members, **hyper),
                            Bookkeeping([paper_schedule(depth) for _ in range(members)], loggers), data.eval_names,
                            freeze=partial(freeze_member, net, members=members),
                            step_graph=switches.get("compile") == STEP_GRAPH)
        return project_fit_time(module, data, steps, warmup, switches, run_dir)


def measure(name: str, packs: list[int], steps: int | None, batch: int,
            images: tuple[int, int] = (50000, 10000), graph: bool = False) -> list[tuple[str, int, float]]:
    """[(what, runs, seconds per iteration)]: one ordinary run, then each pack size; `images`: the synthetic data
    set's (training, test) sizes; `graph`: with model.compile=step_graph."""
    switches = {**SWITCHES, "compile": STEP_GRAPH if graph else False}
    depth = NETS[name]
    default_steps, warmup = STEPS[device().type]
    steps = steps or default_steps
    one_run = SyntheticCifar(batch, *images, SWITCHES["channels_last"])
    rows = [("one run (Classifier)", 1,
             lightning_step_time(cifar_net(depth), one_run, steps, warmup, switches, depth).wall)]
    for k in packs:
        data = PackedSyntheticCifar(k, batch, images)
        rows.append((f"pack of {k}", k, packed_step_time(depth, k, data, steps, warmup, switches).wall))
        logging.getLogger("bench").warning(f"{name} pack {k}: {rows[-1][2] * 1000:.1f} ms/iteration")
    return rows


def table(results: dict[str, list[tuple[str, int, float]]], batch: int) -> str:
    lines = [f"| net, batch {batch} per run | training | runs | ms/iteration | run-steps/s | x one run |",
             "|---|---|---|---|---|---|"]
    for name, rows in results.items():
        one = 1 / rows[0][2]
        for what, runs, seconds in rows:
            lines.append(f"| {name} | {what} | {runs} | {seconds * 1000:.1f} | {runs / seconds:.1f} | "
                         f"{runs / seconds / one:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    parser.add_argument("--packs", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    parser.add_argument("--steps", type=int, help="timed iterations (default: 200 on a GPU, 6 on CPU)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--graph", action="store_true", help="model.compile=step_graph for every run and pack")
    parser.add_argument("--images", type=int, default=50000, help="synthetic training images (test: a fifth)")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    graph = ", model.compile=step_graph" if args.graph else ""
    header = f"Packed runs, run-steps/s by pack size{graph}. {machine()}"
    images = (args.images, max(args.batch, args.images // 5))
    results = {name: measure(name, args.packs, args.steps, args.batch, images, args.graph) for name in args.nets}
    publish(header, table(results, args.batch), args.out)


if __name__ == "__main__":
    main()
