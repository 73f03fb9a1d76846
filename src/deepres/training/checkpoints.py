"""Checkpoints that survive a kill at any moment: last.ckpt every N iterations, final.ckpt at the end, each written
into every member's own run directory in the format of a run trained alone (packing/members.py).

last.ckpt is written where Lightning's own loop can resume from exactly: after the iteration, or, at an iteration
that is also evaluated, after the evaluation (so its rows are in the checkpoint and it is not run twice). The metric
rows travel inside each checkpoint (see runs/metrics_csv.py).

A checkpoint holds tensors and plain data only, and is read back as such before it replaces the one before; the
last.ckpt it replaces stays as previous.ckpt. A run resumes from its newest checkpoint that loads: one damaged since
(a copy cut short, a full disk elsewhere) is named and set aside, and a run never starts again from iteration 0
unless asked (+resume=restart)."""
import io
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from lightning.pytorch import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn

from deepres.errors import DamagedFile, UserError
from deepres.runs.atomic import atomic_write
from deepres.runs.run_dir import FINAL, LAST, PREVIOUS, RunDir
from deepres.safe_files import read_checkpoint

log = logging.getLogger("deepres")


def checkpoint_bytes(net: torch.nn.Module) -> int:
    """About what one checkpoint takes on disk: the weights and the optimiser's momentum, in fp32."""
    return 2 * 4 * sum(p.numel() for p in net.parameters())


def on_host(checkpoint: dict) -> dict:
    """The checkpoint with its tensors in one host buffer per dtype: one device-to-host copy per dtype, where
    torch.save would copy each of its ~200 tensors on its own. Each tensor keeps its shape and memory layout."""
    tensors = list({id(t): t for t in tensors_in(checkpoint)}.values())
    host = {}
    for dtype in {t.dtype for t in tensors}:
        group = [t for t in tensors if t.dtype == dtype]
        flats = [_memory_order(t) for t in group]
        flat, at = torch.cat(flats).cpu(), 0
        for t, part in zip(group, flats):
            host[id(t)] = _laid_out(flat[at:at + part.numel()], t)
            at += part.numel()
    return _replace(checkpoint, host)


def _memory_order(t: torch.Tensor) -> torch.Tensor:
    """t's elements in memory order, flat: a view for a contiguous or channels-last tensor, else a copy."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1).reshape(-1)
    return t.reshape(-1)


def _laid_out(flat: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The flat elements (memory order of `like`) as a tensor of like's shape and memory layout."""
    if like.dim() == 4 and not like.is_contiguous() and like.is_contiguous(memory_format=torch.channels_last):
        n, c, h, w = like.shape
        return flat.view(n, h, w, c).permute(0, 3, 1, 2)
    return flat.view(like.shape)


def tensors_in(obj) -> Iterator[torch.Tensor]:
    """Every tensor in a checkpoint's nested dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from tensors_in(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from tensors_in(value)


def _replace(obj, host: dict):
    if isinstance(obj, torch.Tensor):
        return host[id(obj)]
    if isinstance(obj, dict):
        return {key: _replace(value, host) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_replace(value, host) for value in obj)
    return obj


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temporary file, read back, then renamed: a checkpoint on disk is always whole and loads as
    data. The last.ckpt it replaces becomes previous.ckpt, until final.ckpt is written."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        buffer = io.BytesIO()  # serialise first: torch's zip writer turns a full disk into an opaque RuntimeError
        torch.save(on_host(checkpoint), buffer)
        path = Path(path)

        def keep_previous(new: Path) -> None:
            read_checkpoint(new)
            if path.name == LAST and path.is_file():
                path.replace(path.with_name(PREVIOUS))

        atomic_write(path, lambda f: f.write(buffer.getbuffer()), keep_previous)
        if path.name == FINAL:
            path.with_name(PREVIOUS).unlink(missing_ok=True)


def resume_point(run: RunDir, restart: bool) -> Path | None:
    """The run's newest checkpoint that loads (None: the run starts at iteration 0). Damaged ones are named in the log
    and set aside when an older one takes their place, or when `restart` (+resume=restart) lets the run start again;
    otherwise the run stops, naming them. A refused one (pickled code) stops the run."""
    damaged: list[DamagedFile] = []
    for path in run.checkpoint_files():
        try:
            step = read_checkpoint(path)["global_step"]
        except DamagedFile as err:
            damaged.append(err)
            continue
        for err in damaged:
            run.set_aside(err.path)
            log.warning(f"{err}; set aside as {err.path.name}.damaged, resuming from {path} (iteration {step})")
        return path
    if damaged and not restart:
        kept = ", ".join(f"{err.path.name}.damaged" for err in damaged)
        raise UserError(f"{'; '.join(map(str, damaged))}; the run has no other checkpoint to resume from. Re-run the "
                        f"same command with +resume=restart to train it again from iteration 0 (keeping the damaged "
                        f"file as {kept}), or put a good copy in its place.")
    for err in damaged:
        run.set_aside(err.path)
        log.warning(f"{err}; set aside as {err.path.name}.damaged: the run restarts from iteration 0, as "
                    "+resume=restart asks")
    return None


class MemberCheckpointIO(AtomicCheckpointIO):
    """Saves the members' checkpoints, not the network's: `split(checkpoint)` gives each live member's checkpoint by
    its index, written atomically under the file name Lightning asked for into the member's checkpoints/. Loading
    merges the members' resume points (resume_point; they must stand at one iteration) with `merge`."""

    def __init__(self, runs: Sequence[RunDir], resumes: Sequence[Path | None], split: Callable[[dict], dict[int, dict]],
                 merge: Callable[[list[dict]], dict]):
        super().__init__()
        self.runs, self.resumes, self.split, self.merge = list(runs), list(resumes), split, merge

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        for k, member in self.split(checkpoint).items():
            super().save_checkpoint(member, self.runs[k].checkpoints / Path(path).name)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        """`path` names the resume point; each member's own is loaded, as data."""
        loaded = [read_checkpoint(p, mmap=False) if p else None for p in self.resumes]
        steps = {c["global_step"] if c else 0 for c in loaded}
        if len(steps) > 1:
            raise UserError(f"the runs {[str(run.path) for run in self.runs]} stand at different iterations "
                            f"({sorted(steps)}) and cannot resume as one pack; the packed launcher packs runs by "
                            "iteration.")
        return self.merge(loaded)


class RunCheckpoints(Callback):
    """last.ckpt every `every_n_steps` iterations, after calling before_save() (the runs' records of their time)."""

    def __init__(self, dirpath: str | Path, every_n_steps: int, before_save: Callable[[], None] = lambda: None):
        self.dirpath, self.every_n_steps, self.before_save = Path(dirpath), every_n_steps, before_save
        self._saved_at = -1
        self.stop_signal: int | None = None

    def request_stop(self, signum: int) -> None:
        """Save last.ckpt at the next point where a resume is exact, then stop the Trainer (SIGTERM, Ctrl-C)."""
        self.stop_signal = signum

    def _due(self, trainer) -> bool:
        step = trainer.global_step
        return (step % self.every_n_steps == 0 or self.stop_signal is not None) and step != self._saved_at

    def _save_last(self, trainer, pl_module) -> None:
        pl_module.check_finite(weights=True)
        self.before_save()
        trainer.save_checkpoint(self.dirpath / LAST)
        self._saved_at = trainer.global_step
        if self.stop_signal is not None:
            trainer.should_stop = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._due(trainer) and trainer.global_step % trainer.val_check_batch:
            self._save_last(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == TrainerFn.FITTING and self._due(trainer):
            self._save_last(trainer, pl_module)

    def save_final(self, trainer) -> None:
        trainer.save_checkpoint(self.dirpath / FINAL)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._saved_at = checkpoint["global_step"]
