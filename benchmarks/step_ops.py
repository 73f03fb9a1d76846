"""The ops outside the network and the host reads of the project's training step, against a hand-written loop,
counted on CPU with torch.profiler under the GPU settings (bf16 autocast, channels_last, fused SGD):

    python benchmarks/step_ops.py [--depth 20] [--out FILE.md]

Small CIFAR nets on a GPU are bound by kernel launches, so every op outside the network and every host read (a
value the host waits for: item, tolist, bool, ...) adds to the step time. Counted per phase of a run: an ordinary
iteration, the extra of a logging iteration (every trainer.log_every_n_steps), a checkpoint (its finite check and
save), an evaluation batch. An op is a top-level aten op that computes (views, and conversions that copy nothing,
launch no kernel and are not counted); the ops outside the network are those of the phase less the net's own forward
(and backward) with the same input, counted on its own. A tensor made from host data (torch.tensor) is a
host-to-device copy on a GPU; a checkpoint's storages are the device-to-host copies torch.save makes of them, and its
host reads are its finite check's and the copies of its tensors to the host (one buffer per dtype).

The project's path is the real one (conf/ composed with the GPU settings, training/build.py, the Trainer of
train.py, no W&B) on a generated CIFAR-10. The plain loop is the hand-written loop of results/reference_h100.md:
the data set normalised and padded on the device once, a random crop and flip per batch by gathers, the loss,
backward, one fused SGD step, and the running sums a loop keeps for its log."""
import argparse
import contextlib
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from common import machine, publish
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch import Callback
from torch.profiler import ProfilerActivity, profile

from deepres.config import register_resolvers
from deepres.data.fake_cifar import write_cifar10
from deepres.models import CifarResNet
from deepres.models.build import apply_switches
from deepres.runs.metrics_logger import MetricsCSVLogger
from deepres.runs.run_dir import RunDir
from deepres.training.bookkeeping import Bookkeeping
from deepres.training.build import make_trainer
from deepres.training.checkpoints import MemberCheckpointIO, tensors_in
from deepres.training.classification import Classification

CONF = Path(__file__).resolve().parents[1] / "conf"
GPU_SETTINGS = ["trainer.precision=bf16-mixed", "model.channels_last=true", "optimizer.fused=true"]
VIEWS = {"aten::view", "aten::slice", "aten::select", "aten::unsqueeze", "aten::squeeze", "aten::expand",
         "aten::as_strided", "aten::t", "aten::transpose", "aten::permute", "aten::reshape", "aten::flatten",
         "aten::unflatten", "aten::alias", "aten::detach", "aten::detach_", "aten::lift_fresh", "aten::_unsafe_view",
         "aten::view_as", "aten::expand_as", "aten::empty", "aten::resolve_conj", "aten::resolve_neg",
         "aten::contiguous", "aten::split", "aten::chunk", "aten::unbind", "aten::narrow", "aten::set_",
         "aten::is_nonzero", "aten::item", "aten::_local_scalar_dense", "aten::result_type"}
READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy")
BATCH, LOG_EVERY, CHECKPOINT_AT, ORDINARY = 128, 10, 20, (2, 9)  # ordinary iterations: steps 2..8
PHASES = ("ordinary iteration", "logging iteration (extra)", "checkpoint: finite check", "checkpoint: check and save",
          "evaluation batch")


def launched(prof) -> Counter:
    """Top-level aten ops that compute, by name; `aten::to` and `aten::copy_` only where they copy."""
    ops = Counter()
    for event in prof.events():
        parent = event.cpu_parent
        if parent is not None and parent.name.startswith("aten::"):
            continue
        if not event.name.startswith("aten::") or event.name in VIEWS:
            continue
        if event.name in ("aten::to", "aten::contiguous") and not event.cpu_children:
            continue
        ops[event.name] += 1
    return ops


class Counted:
    """Profile what runs between start() and stop(): ops (Counter), reads (host reads), made (tensors made from host
    data)."""

    def __init__(self):
        self.ops, self.reads, self.made = Counter(), 0, 0
        self._originals = {name: getattr(torch.Tensor, name) for name in READS}

    def start(self) -> "Counted":
        def reading(original):
            def read(tensor, *args, **kwargs):
                self.reads += 1
                return original(tensor, *args, **kwargs)
            return read

        for name, original in self._originals.items():
            setattr(torch.Tensor, name, reading(original))
        self._prof = profile(activities=[ProfilerActivity.CPU])
        self._prof.__enter__()
        return self

    def stop(self) -> "Counted":
        self._prof.__exit__(None, None, None)
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)
        self.ops = launched(self._prof)
        self.made = sum(event.name == "aten::lift_fresh" for event in self._prof.events())
        return self

    @property
    def total(self) -> int:
        return sum(self.ops.values())


@contextlib.contextmanager
def counting() -> Iterator[Counted]:
    counted = Counted().start()
    try:
        yield counted
    finally:
        counted.stop()


def net_ops(net: torch.nn.Module, x: torch.Tensor, train: bool) -> int:
    """The net's own ops: its forward, and in training its backward from a given output gradient."""
    net.train(train)
    grad_mode = torch.enable_grad() if train else torch.no_grad()
    for measure in (False, True):  # the first pass initialises lazily (cuDNN, autocast caches), unprofiled
        net.zero_grad(set_to_none=True)  # as in a training step: gradients are made, not accumulated
        with counting() if measure else contextlib.nullcontext() as counted, \
                torch.autocast("cpu", torch.bfloat16), grad_mode:
            out = net(x)
            if train:
                out.backward(torch.ones_like(out))
    net.zero_grad(set_to_none=True)
    return counted.total


class Phases(Callback):
    """Profiles a fit: iterations ORDINARY[0] to ORDINARY[1] (between their on_train_batch_start), iteration
    LOG_EVERY (a logging one), the checkpoint at CHECKPOINT_AT, and the first batch of the evaluation there."""

    def __init__(self):
        self.ordinary, self.logging, self.evaluation = Counted(), Counted(), Counted()
        self.check = self.checkpoint = None
        self._evaluating = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if step in (ORDINARY[1], LOG_EVERY + 1):
            (self.ordinary if step == ORDINARY[1] else self.logging).stop()
        if step in (ORDINARY[0], LOG_EVERY):
            (self.ordinary if step == ORDINARY[0] else self.logging).start()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.global_step == CHECKPOINT_AT and batch_idx in (0, 1):
            self.evaluation.start() if batch_idx == 0 else self.evaluation.stop()


def project(depth: int, batch: int, data: Path, run: Path) -> dict[str, tuple]:
    """{phase: (ops outside the net, host reads, tensors made from host data, the ops by name)} of the project."""
    register_resolvers()
    overrides = [f"model.depth={depth}", f"data.root={data}", f"data.batch_size={batch}",
                 f"data.eval_batch_size={batch}", "logger=none", "trainer.enable_progress_bar=false",
                 f"trainer.max_steps={CHECKPOINT_AT}", f"trainer.log_every_n_steps={LOG_EVERY}",
                 f"trainer.val_check_interval={CHECKPOINT_AT}", f"checkpoint.every_n_steps={CHECKPOINT_AT}",
                 *GPU_SETTINGS]
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    torch.manual_seed(0)
    task, runs = Classification(), [RunDir(run)]
    datamodule = task.datamodule([cfg])
    module = task.module([cfg], datamodule, Bookkeeping([instantiate(cfg.schedule)], [[MetricsCSVLogger(run)]]))
    io = MemberCheckpointIO(runs, [None], lambda ckpt: module.book.split(ckpt, module, module.live),
                            lambda ckpts: module.book.merge(ckpts, module))
    trainer, checkpoints = make_trainer(cfg, runs[0], io)
    phases = Phases()
    trainer.callbacks.append(phases)
    saved, save_last, torch_save = [], checkpoints._save_last, torch.save

    def profiled_save(trainer, pl_module) -> None:
        with counting() as check:
            pl_module.check_finite(weights=True)
        phases.check = check
        with counting() as counted:
            save_last(trainer, pl_module)  # checks again (nothing new to read but the weights), then saves
        phases.checkpoint = counted

    def counted_save(obj, f, *args, **kwargs) -> None:  # the storages torch.save copies to the host one by one
        saved.append(len({t.untyped_storage().data_ptr() for t in tensors_in(obj)}))
        torch_save(obj, f, *args, **kwargs)

    checkpoints._save_last, torch.save = profiled_save, counted_save
    try:
        trainer.fit(module, datamodule)
    finally:
        torch.save = torch_save
    x = next(iter(datamodule.train_dataloader()))[0]
    train_net = net_ops(module.net, x, train=True)
    eval_net = net_ops(module.net, next(iter(datamodule.val_dataloader()[0]))[0], train=False)
    steps = ORDINARY[1] - ORDINARY[0]
    ordinary, ordinary_reads = phases.ordinary.total / steps - train_net, phases.ordinary.reads / steps
    out = {PHASES[0]: (ordinary, ordinary_reads, phases.ordinary.made / steps, phases.ordinary.ops),
           PHASES[1]: (phases.logging.total - train_net - ordinary, phases.logging.reads - ordinary_reads,
                       phases.logging.made, phases.logging.ops - _per_step(phases.ordinary.ops, steps)),
           PHASES[2]: (phases.check.total, phases.check.reads, phases.check.made, phases.check.ops),
           PHASES[3]: (phases.checkpoint.total, phases.checkpoint.reads, saved[0] if saved else 0,
                       phases.checkpoint.ops),
           PHASES[4]: (phases.evaluation.total - eval_net, phases.evaluation.reads, phases.evaluation.made,
                       phases.evaluation.ops)}
    return out


def _per_step(ops: Counter, steps: int) -> Counter:
    return Counter({name: count // steps for name, count in ops.items()})


def plain_loop(depth: int, batch: int, data: Path) -> dict[str, tuple]:
    """The hand-written loop's ordinary iteration and evaluation batch, as the project's phases."""
    from deepres.data.cifar_files import read_split

    images, labels = (torch.from_numpy(a) for a in read_split("cifar10", data, train=True))
    test_images, test_labels = (torch.from_numpy(a) for a in read_split("cifar10", data, train=False))
    mean = images.float().div(255).mean(0)
    padded = F.pad(images.float().div(255) - mean, (4,) * 4)  # normalised and padded once
    test = (test_images.float().div(255) - mean).contiguous(memory_format=torch.channels_last)
    torch.manual_seed(0)
    net = apply_switches(CifarResNet(depth), {"channels_last": True})
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, fused=True)
    gen = torch.Generator().manual_seed(0)
    order, ar, sums = torch.randperm(len(images), generator=gen), torch.arange(32), torch.zeros(3)
    channel = torch.arange(3)[None, :, None, None]

    def step(i: int) -> None:
        i %= len(images) // batch
        index = order[i * batch:(i + 1) * batch]
        offsets = torch.randint(0, 9, (batch, 2), generator=gen)
        mirrored = torch.rand(batch, generator=gen) < 0.5
        rows, cols = offsets[:, :1] + ar, offsets[:, 1:] + ar
        cols = torch.where(mirrored[:, None], cols.flip(1), cols)
        x = padded[index[:, None, None, None], channel, rows[:, None, :, None], cols[:, None, None, :]]
        x, y = x.contiguous(memory_format=torch.channels_last), labels[index]
        for group in optimizer.param_groups:
            group["lr"] = 0.1
        with torch.autocast("cpu", torch.bfloat16):
            logits = net(x)
            loss = F.cross_entropy(logits, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sums.add_(torch.stack([loss.detach() * len(y), (logits.argmax(1) != y).sum(), y.new_full((), len(y))]))

    step(0)
    with counting() as ordinary:
        for i in range(1, 1 + ORDINARY[1] - ORDINARY[0]):
            step(i)
    with torch.no_grad():
        eval_sums = torch.zeros(3)
        for measure in (False, True):
            with counting() if measure else contextlib.nullcontext() as evaluation:
                x, y = test[:batch], test_labels[:batch]
                with torch.autocast("cpu", torch.bfloat16):
                    logits = net.eval()(x)
                eval_sums.add_(torch.stack([F.cross_entropy(logits, y, reduction="sum"),
                                            (logits.argmax(1) != y).sum(), y.new_full((), len(y))]))
    steps = ORDINARY[1] - ORDINARY[0]
    train_net = net_ops(net, torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last), True)
    eval_net = net_ops(net, test[:batch], train=False)
    return {PHASES[0]: (ordinary.total / steps - train_net, ordinary.reads / steps, ordinary.made / steps,
                        ordinary.ops),
            PHASES[4]: (evaluation.total - eval_net, evaluation.reads, evaluation.made, evaluation.ops)}


def table(ours: dict, plain: dict) -> str:
    lines = ["| phase | ops outside the net: project | plain loop | host reads: project | plain loop | "
             "host tensors (made / saved storages): project | plain loop |", "|---|---|---|---|---|---|---|"]
    for phase in PHASES:
        o, p = ours[phase], plain.get(phase)
        lines.append(f"| {phase} | {o[0]:.1f} | {f'{p[0]:.1f}' if p else '-'} | {o[1]:g} | "
                     f"{f'{p[1]:g}' if p else '-'} | {o[2]:g} | {f'{p[2]:g}' if p else '-'} |")
    return "\n".join(lines)


def names(ops: Counter, steps: int = 1) -> str:
    return ", ".join(f"{name.removeprefix('aten::')} {count / steps:g}" for name, count in ops.most_common())


def measure(depth: int, batch: int = BATCH) -> tuple[dict, dict]:
    """(project's phases, plain loop's phases) on a generated CIFAR-10 of 4 batches per epoch."""
    with tempfile.TemporaryDirectory() as tmp:
        data = write_cifar10(Path(tmp) / "data", per_batch=batch * 4 // 5 + 1, test=batch * 2)
        return project(depth, batch, data, Path(tmp) / "run"), plain_loop(depth, batch, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    ours, plain = measure(args.depth, args.batch)
    steps = ORDINARY[1] - ORDINARY[0]
    print(f"ops outside the network per step: project {ours[PHASES[0]][0]:.0f}, plain loop {plain[PHASES[0]][0]:.0f}")
    detail = [f"- project, ordinary iteration (incl. the net): {names(ours[PHASES[0]][3], steps)}",
              f"- plain loop, ordinary iteration (incl. the net): {names(plain[PHASES[0]][3], steps)}",
              f"- project, checkpoint: {names(ours[PHASES[3]][3])}",
              f"- project, evaluation batch (incl. the net): {names(ours[PHASES[4]][3])}"]
    publish(f"Ops outside the network and host reads per phase, ResNet-{args.depth}, batch {args.batch}, GPU "
            f"settings on CPU (bf16 autocast, channels_last, fused SGD). {machine()}", table(ours, plain) + "\n\n" +
            "\n".join(detail), args.out)


if __name__ == "__main__":
    main()
