"""ms per training step of the project's Lightning path against a hand-written loop, in one process, eager and with
the whole step as one CUDA graph, in fp32 and in bf16 + channels_last:

    python benchmarks/step_times.py [--nets 20 56 110] [--steps 200] [--warmup 30] [--images 50000]
                                    [--collector-off] [--out FILE.md] [--json FILE.json]

  plain eager     common.plain_step_time: forward, loss, training sums, backward, SGD (fused on CUDA), with
                  Python's garbage collector on, as people write it
  plain graph     common.plain_graph_step_time: that iteration captured as one CUDA graph and replayed
  lightning eager the project's path (Classifier in the Trainer), model.compile=false, with its collector policy
                  (gc.manual=true: automatic collection off, collections at boundaries)
  lightning graph the project's path with model.compile=step_graph
  --collector-off adds plain eager and lightning eager with the collector disabled throughout

Beside the mean ms/step, each loop's step-time distribution (median and p99 of the timed iterations; on a GPU
between CUDA events at each batch draw, the device's timeline, so a host pause that starves it shows), and the p99 of
each step over the median of its neighbours (timing.py's local_ratios: a stall, not the machine's drift).

The graphs are captured in the warm-up, so capture time is not in the timed window. The last column sets each
figure beside the hand-written loop on an H100 of results/reference_h100.md (eager for eager, its CUDA-graph figure
for graphs).
On CPU the graph variants run their bodies eagerly: a check that the script works, not a measurement."""
import argparse
import json
import logging
import warnings
from pathlib import Path

from common import (
    SyntheticCifar,
    cifar_net,
    device,
    lightning_step_time,
    machine,
    plain_graph_step_time,
    plain_step_time,
    publish,
)
from timing import StepTime, local_ratios, percentile

from deepres.models.build import STEP_GRAPH

PRECISIONS = {"fp32": {"precision": "32-true", "channels_last": False},
              "bf16 + channels_last": {"precision": "bf16-mixed", "channels_last": True}}
LOOPS = ("plain eager", "plain graph", "lightning eager", "lightning graph")
COLLECTOR_OFF = ("plain eager, collector off", "lightning eager, collector off")
# results/reference_h100.md, one H100, batch 128: {(depth, precision, eager or graph): ms/step}
REFERENCE = {(20, "fp32", "eager"): 9.3, (20, "bf16 + channels_last", "eager"): 8.9, (20, "fp32", "graph"): 3.3,
             (20, "bf16 + channels_last", "graph"): 3.9, (56, "fp32", "eager"): 21.9,
             (56, "bf16 + channels_last", "eager"): 23.1, (56, "bf16 + channels_last", "graph"): 5.9,
             (110, "fp32", "eager"): 45.2, (110, "bf16 + channels_last", "eager"): 43.5,
             (110, "bf16 + channels_last", "graph"): 9.6}


def step_time(loop: str, depth: int, data: SyntheticCifar, switches: dict, steps: int, warmup: int) -> StepTime:
    net, gc_mode = cifar_net(depth), "off" if loop.endswith("collector off") else None
    if loop.startswith("plain eager"):
        return plain_step_time(net, data.stream(), steps, warmup, switches, depth, gc_mode=gc_mode or "python")
    if loop == "plain graph":
        return plain_graph_step_time(net, data, steps, warmup, switches, depth)
    compile = STEP_GRAPH if loop == "lightning graph" else False
    return lightning_step_time(net, data, steps, warmup, {**switches, "compile": compile}, depth,
                               progress_bar=False, gc_mode=gc_mode or "manual")


def measure(depths: list[int], steps: int, warmup: int, batch: int, images: int, collector_off: bool = False
            ) -> list[dict]:
    rows = []
    for depth in depths:
        for name, switches in PRECISIONS.items():
            data = SyntheticCifar(batch, images, max(batch, images // 5), switches["channels_last"])
            data.setup()
            for loop in LOOPS + (COLLECTOR_OFF if collector_off else ()):
                seconds = step_time(loop, depth, data, switches, steps, warmup)
                each = seconds.steps
                rows.append({"net": f"ResNet-{depth}", "depth": depth, "precision": name, "loop": loop,
                             "ms_per_step": 1e3 * seconds.wall,
                             "median_ms": 1e3 * percentile(each, 50) if each else None,
                             "p99_ms": 1e3 * percentile(each, 99) if each else None,
                             "p99_local": percentile(local_ratios(each), 99) if each else None,
                             "reference_ms": REFERENCE.get((depth, name, loop.split()[1].rstrip(",")))})
                logging.getLogger("bench").warning(json.dumps(rows[-1]))
    return rows


def table(rows: list[dict]) -> str:
    plain = {(r["depth"], r["precision"], r["loop"].replace("plain", "")): r["ms_per_step"] for r in rows
             if r["loop"].startswith("plain")}
    lines = ["| net | precision | loop | ms/step | step median (ms) | step p99 (ms) | p99 of step / local median "
             "| lightning / plain (same mode) | vs GPU.md's H100 loop |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mode = r["loop"].replace("plain", "").replace("lightning", "")
        ratio = (f"{r['ms_per_step'] / plain[r['depth'], r['precision'], mode]:.2f}x"
                 if r["loop"].startswith("lightning") else "")
        reference = f"{r['ms_per_step'] / r['reference_ms']:.2f}x of {r['reference_ms']}" if r["reference_ms"] else "-"
        spread = " | ".join(f"{r[k]:.2f}" if r[k] is not None else "-" for k in ("median_ms", "p99_ms", "p99_local"))
        lines.append(f"| {r['net']} | {r['precision']} | {r['loop']} | {r['ms_per_step']:.2f} | {spread} | {ratio} | "
                     f"{reference} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", type=int, nargs="+", default=[20, 56, 110], help="CIFAR ResNet depths")
    parser.add_argument("--steps", type=int, default=200 if device().type == "cuda" else 5)
    parser.add_argument("--warmup", type=int, default=30 if device().type == "cuda" else 2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--images", type=int, default=50000, help="synthetic training images (test: a fifth)")
    parser.add_argument("--collector-off", action="store_true",
                        help="also the eager loops with Python's garbage collector disabled throughout")
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    rows = measure(args.nets, args.steps, args.warmup, args.batch, args.images, args.collector_off)
    header = (f"Step times, batch {args.batch}, {args.steps} timed iterations after {args.warmup}: {machine()}")
    publish(header, table(rows), args.out)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
