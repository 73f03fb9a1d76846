"""What the training-speed benchmarks share: the machine and commit they ran on, synthetic CIFAR-size data in the
project's DataModule, and the two training paths they compare, on the same net, data stream, optimiser, schedule
and batch:

  lightning_step_time  the project's path: Classifier + Lightning Trainer configured as conf/trainer/default.yaml,
                       with the run's callbacks and metrics.csv logger (train.py without Hydra and W&B, which the
                       GPU machine lacks)
  plain_step_time      a hand-written PyTorch loop doing the same work: lr from the schedule, forward, loss, training
                       sums on the device read every log_every_n_steps iterations, backward, SGD step (also the
                       training step of throughput.py and concurrent_runs.py)

Both return the time per iteration over `steps` iterations after `warmup` (wall clock, and this process's CPU
time, which a shared machine disturbs less), with evaluation and checkpoints out of the timed window (they are not
per-step costs)."""
import datetime
import gc
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from timing import Clock, StepTime, sync
from torch import nn

from deepres.config import if_cuda
from deepres.data.cifar import CifarDataModule, Normalize
from deepres.models import CifarResNet
from deepres.models.build import STEP_GRAPH, apply_switches
from deepres.runs.metrics_logger import MetricsCSVLogger
from deepres.training.bookkeeping import Bookkeeping
from deepres.training.checkpoints import AtomicCheckpointIO, RunCheckpoints
from deepres.training.collector import ManualCollection
from deepres.training.module import Classifier
from deepres.training.progress import StepProgressBar
from deepres.training.schedule import IterationSchedule

ROOT = Path(__file__).resolve().parents[1]
# conf/optimizer/sgd.yaml (fused on CUDA)
SGD = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, **({"fused": True} if torch.cuda.is_available() else {})}
LOG_EVERY = 50  # conf/trainer/default.yaml: log_every_n_steps
NEVER = 10**9  # evaluation and checkpoint intervals that keep them out of the timed window
GC_EVERY = 100  # conf/train.yaml: gc.every_n_steps (with gc.manual=true)
COLLECTORS = ("manual", "python", "off")


def machine() -> str:
    """One line naming what the numbers were measured on, and when."""
    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"{cpu} ({os.cpu_count()} cores, torch threads {torch.get_num_threads()}){gpu}; torch {torch.__version__}, "
            f"lightning {L.__version__}; commit {commit()}; {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
            f", {load()}")


def load() -> str:
    """The machine's load average (1, 5, 15 minutes): how much the cores were shared while timing."""
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def publish(header: str, table: str, out: Path | None) -> None:
    """Print the report (its header, the table, the load at the end) and write it to `out` when given."""
    report = f"{header}\n\n{table}\n\nAt the end: {load()}\n"
    print(report)
    if out:
        out.write_text(report)


def commit() -> str:
    """`git rev-parse --short HEAD`, marked +dirty when the working tree has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git checkout)"
    return head + ("+dirty" if dirty else "")


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def median(values: list[float]) -> float:
    return statistics.median(values)


class SyntheticCifar(CifarDataModule):
    """CIFAR-10's shapes (50k training, 10k test images of 3x32x32 uint8) with random pixels, held on the training
    device like the real data set: the training stream (crop, flip, normalisation) is the project's own."""

    def __init__(self, batch_size: int = 128, train_images: int = 50000, test_images: int = 10000,
                 channels_last: bool = False):
        super().__init__(batch_size=batch_size, channels_last=channels_last)
        self.sizes = train_images, test_images
        self.clock: Clock | None = None  # times the training stream when set

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_images"):
            return
        gen = torch.Generator().manual_seed(0)
        train, test = (torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen) for n in self.sizes)
        self.train_images, self.train_labels = train, torch.randint(0, 10, (len(train),), generator=gen)
        # the same normalisation, with its statistics from a few images (random pixels: seconds saved per run)
        self.normalize = Normalize(self.train_images[:1000], self.normalization, self.mean, self.std)
        self.eval_sets = [(test, torch.randint(0, 10, (len(test),), generator=gen))]
        self.make_resident(device())

    def train_dataloader(self) -> Iterable:
        stream = super().train_dataloader()
        return _Timed(self.clock, stream) if self.clock is not None else stream

    def stream(self) -> Iterable:
        """The training stream from iteration 0, outside any Trainer."""
        self.trainer = None
        return self.train_dataloader()


def tiny_net(num_classes: int = 10) -> nn.Module:
    """A net with almost no compute (one 3x3 conv of 8 filters on 8x8 maps, pool, FC): its step time is the data
    stream and the training loop's own work."""
    return nn.Sequential(nn.AvgPool2d(4), nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, num_classes))


def cifar_net(depth: int, **kwargs) -> Callable[[], nn.Module]:
    return partial(CifarResNet, depth, **kwargs)


def paper_schedule(depth: int) -> IterationSchedule:
    return IterationSchedule(SGD["lr"], milestones=[0.5, 0.75], gamma=0.1, max_steps=64000, depth=depth)


def precision(switches: Mapping) -> str:
    return switches.get("precision") or if_cuda("auto", "bf16-mixed", "32-true")


@contextmanager
def collector(mode: str) -> Iterator[None]:
    """Python's garbage collector around a timed loop, from a clean start (what earlier loops left is collected
    first): "python" as Python runs it, "off" disabled throughout, "manual" the project's policy, a callback that
    project_fit_time adds (src/deepres/training/collector.py)."""
    if mode not in COLLECTORS:
        raise ValueError(f"collector {mode!r}: one of {', '.join(COLLECTORS)}")
    was_enabled = gc.isenabled()
    gc.collect()
    if mode == "off":
        gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _Timed:
    """The stream, timed; otherwise the stream itself (a captured step draws from it and switches it to steps)."""

    def __init__(self, clock: Clock, stream):
        self.__dict__.update(clock=clock, stream=stream)

    def __iter__(self) -> Iterator:
        return self.clock.batches(self.stream)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self.stream, name, value)


def lightning_step_time(make_net: Callable[[], nn.Module], data: SyntheticCifar, steps: int, warmup: int,
                        switches: Mapping = {}, depth: int = 20, progress_bar: bool = True,
                        wait: Callable[[], object] | None = None, gc_mode: str = "manual",
                        interleave: Callable[[Clock], L.Callback] | None = None) -> StepTime:
    """Time per iteration of the project's training path (gc_mode: its collector policy, or one of COLLECTORS);
    interleave(its clock) makes a callback that runs another loop between its iterations, clock paused."""
    torch.manual_seed(0)
    net = apply_switches(make_net(), switches)
    with tempfile.TemporaryDirectory() as run_dir:
        book = Bookkeeping([paper_schedule(depth)], [[MetricsCSVLogger(run_dir)]])
        module = Classifier(net, partial(torch.optim.SGD, **SGD), book, data.eval_names,
                            step_graph=switches.get("compile") == STEP_GRAPH)
        return project_fit_time(module, data, steps, warmup, switches, run_dir, progress_bar, wait, gc_mode,
                                interleave)


def project_fit_time(module: L.LightningModule, data: SyntheticCifar, steps: int, warmup: int, switches: Mapping,
                     run_dir: str, progress_bar: bool = True, wait: Callable[[], object] | None = None,
                     gc_mode: str = "manual", interleave: Callable[[Clock], L.Callback] | None = None) -> StepTime:
    """Fit `module` in a Trainer configured as conf/trainer/default.yaml, with the run's checkpoint callback,
    progress bar and collector policy (gc_mode); the time per iteration of its timed window."""
    data.clock = clock = Clock(warmup, warmup + steps, wait)
    callbacks = [RunCheckpoints(run_dir, NEVER)] + ([StepProgressBar()] if progress_bar else [])
    callbacks += [ManualCollection(GC_EVERY)] if gc_mode == "manual" else []
    callbacks += [interleave(clock)] if interleave else []
    trainer = L.Trainer(accelerator="auto", devices=1, precision=precision(switches), max_steps=warmup + steps + 1,
                        max_epochs=-1, val_check_interval=NEVER, check_val_every_n_epoch=None,
                        log_every_n_steps=LOG_EVERY, num_sanity_val_steps=0, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=progress_bar,
                        benchmark=if_cuda("auto", True, None), callbacks=callbacks, logger=False,
                        plugins=[AtomicCheckpointIO()], default_root_dir=run_dir)
    with collector(gc_mode):
        trainer.fit(module, data)
    data.clock = None
    return clock.elapsed


def plain_step_time(make_net: Callable[[], nn.Module], batches: Iterable, steps: int, warmup: int,
                    switches: Mapping = {}, depth: int = 20, wait: Callable[[], object] | None = None,
                    gc_mode: str = "python") -> StepTime:
    """Time per iteration of a hand-written loop with the same net, optimiser and schedule on `batches` (for
    the comparison, SyntheticCifar.stream(): the same stream and batch as the Lightning path), with Python's
    collector as people leave it (gc_mode="python") or off."""
    if gc_mode == "manual":
        raise ValueError("the plain loop has no collector policy: gc_mode python or off")
    with collector(gc_mode):
        return _plain_loop(make_net, batches, steps, warmup, switches, depth, wait)


def _plain_loop(make_net: Callable[[], nn.Module], batches: Iterable, steps: int, warmup: int, switches: Mapping,
                depth: int, wait: Callable[[], object] | None) -> StepTime:
    clock = Clock(warmup, warmup + steps, wait)
    for _ in plain_iterations(make_net, clock.batches(batches), switches, depth):
        if clock.elapsed is not None:
            return clock.elapsed


def plain_iterations(make_net: Callable[[], nn.Module], batches: Iterable, switches: Mapping = {}, depth: int = 20
                     ) -> Iterator[None]:
    """The hand-written loop, one iteration per step of the iterator (its batch drawn at the start of the step)."""
    torch.manual_seed(0)
    dev = device()
    net = apply_switches(make_net(), switches).to(dev).train()
    optimizer = torch.optim.SGD(net.parameters(), **SGD)
    schedule = paper_schedule(depth)
    bf16 = precision(switches) == "bf16-mixed"
    autocast = partial(torch.autocast, dev.type, dtype=torch.bfloat16) if bf16 else nullcontext
    sums, rows = torch.zeros(3, device=dev), []
    for step, (x, y) in enumerate(batches):
        if step and step % LOG_EVERY == 0:
            rows.append(sums.tolist())
            sums.zero_()
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr(step)
        with autocast():
            logits = net(x)
            loss = F.cross_entropy(logits, y)
        sums += torch.stack([loss.detach() * len(y), (logits.argmax(1) != y).sum(), y.new_full((), len(y))])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        yield


def plain_graph_step_time(make_net: Callable[[], nn.Module], data: SyntheticCifar, steps: int, warmup: int,
                          switches: Mapping = {}, depth: int = 20) -> StepTime:
    """Time per iteration of the hand-written loop with its whole iteration (batch drawn from the resident data,
    forward, loss, backward, fused SGD with the lr in a device tensor, the running sums) captured as one CUDA graph
    and replayed: the fastest a loop of plain PyTorch can go. On CPU the body runs eagerly."""
    torch.manual_seed(0)
    dev = device()
    net = apply_switches(make_net(), switches).to(dev).train()
    lr = torch.tensor(SGD["lr"], device=dev)
    optimizer = torch.optim.SGD(net.parameters(), **{**SGD, "lr": lr})
    schedule, stream = paper_schedule(depth), data.stream()
    bf16 = precision(switches) == "bf16-mixed"
    autocast = partial(torch.autocast, dev.type, dtype=torch.bfloat16, cache_enabled=False) if bf16 else nullcontext
    sums, index, rows = torch.zeros(3, device=dev), torch.zeros((), dtype=torch.long, device=dev), []
    stream.draws(0)

    def body() -> None:
        x, y = stream.batch_at(0, index)
        with autocast():
            logits = net(x)
            loss = F.cross_entropy(logits, y)
        sums.add_(torch.stack([loss.detach() * len(y), (logits.argmax(1) != y).sum(), y.new_full((), len(y))]))
        loss.backward()
        optimizer.step()

    graph, began = None, None
    for step in range(warmup + steps):
        if step == warmup:
            sync()
            began = StepTime(time.perf_counter(), time.process_time())
        if step and step % LOG_EVERY == 0:
            rows.append(sums.tolist())
            sums.zero_()
        lr.fill_(schedule.lr(step))
        index.fill_(step % stream.batches_per_epoch)
        if graph is not None:
            graph.replay()
        elif dev.type == "cuda" and step >= 3:  # captured after three eager iterations on a side stream
            optimizer.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                body()
            graph.replay()
        else:
            side = torch.cuda.Stream() if dev.type == "cuda" else None
            with torch.cuda.stream(side) if side is not None else nullcontext():
                optimizer.zero_grad(set_to_none=True)
                body()
            if side is not None:
                torch.cuda.current_stream().wait_stream(side)
    sync()
    return StepTime((time.perf_counter() - began.wall) / steps, (time.process_time() - began.cpu) / steps)
