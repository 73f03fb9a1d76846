"""One run's directory: an exclusive lock, a status file, and the checkpoints to resume from.

status.json is the run's record for the sweep summary: running, completed or failed (with the reason), and the wall
time spent so far. checkpoints/ holds final.ckpt, last.ckpt and the last.ckpt before it, previous.ckpt: the newest
that loads is the resume point (training/checkpoints.py). A damaged file is set aside as NAME.damaged, never deleted.
Under data parallelism only global rank 0 locks and writes; the other processes of the run only train. Nothing here
loads torch or Lightning: the launcher plugins read run directories in every Hydra app."""
import contextlib
import errno
import fcntl
import json
import os
import secrets
import shutil
from pathlib import Path

from lightning_utilities.core.rank_zero import rank_zero_only  # Lightning's own, which sets its rank

from deepres.errors import UserError
from deepres.runs.atomic import atomic_write_text

STATUS = "status.json"
LAST, FINAL = "last.ckpt", "final.ckpt"  # in checkpoints/: every checkpoint.every_n_steps, and at the end
PREVIOUS = "previous.ckpt"  # the last.ckpt before, until the next is whole


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self._lock_file = None

    @rank_zero_only
    def lock(self) -> None:
        """Hold the directory for this process; a second run on the same directory is refused, not interleaved."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as err:
            raise UserError(f"cannot write the run directory {self.path}: {err.strerror}. Choose a writable location "
                            "with hydra.run.dir=... (or hydra.sweep.dir=... for a sweep).") from None
        self._lock_file = open(self.path / ".lock", "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.seek(0)
            owner = self._lock_file.read().strip() or "another process"
            raise UserError(f"the run directory {self.path} is in use by {owner}; wait for it to finish, or run "
                            "with another hydra.run.dir / hydra.sweep.dir.") from None
        self._lock_file.seek(0)
        self._lock_file.truncate()
        self._lock_file.write(f"pid {os.getpid()}\n")
        self._lock_file.flush()
        for leftover in [*self.path.glob(".*.tmp"), *self.checkpoints.glob(".*.tmp")]:
            leftover.unlink()  # half-written temporaries of a killed run (atomic.py); the real files are whole

    @rank_zero_only
    def remove_if_new(self) -> None:
        """Remove the directory if this invocation made it (Hydra writes .hydra-next/ into it, nothing else had
        been written): a run refused before it starts leaves nothing behind."""
        if self.path.is_dir() and {p.name for p in self.path.iterdir()} <= {".hydra-next"}:
            shutil.rmtree(self.path)

    def check_free_space(self, checkpoint_bytes: int, margin_bytes: int = 64 << 20) -> None:
        """Refuse to start, rather than fail hours later, when the disk cannot hold a few checkpoints."""
        needed = 3 * checkpoint_bytes + margin_bytes
        free = shutil.disk_usage(self.path).free
        if free < needed:
            raise UserError(f"only {free / 2**20:.0f} MiB free under {self.path}; this run needs about "
                            f"{needed / 2**20:.0f} MiB for its checkpoints and logs. Free some space or choose "
                            "another hydra.run.dir / hydra.sweep.dir.")

    @rank_zero_only
    def unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def status(self) -> dict:
        """status.json's fields; none when it is missing or damaged (lifecycle.py rebuilds a damaged one)."""
        try:
            return self.read_status()
        except ValueError:
            return {}

    def read_status(self) -> dict:
        """status.json's fields (none when it is missing); ValueError, saying why, when it is not a JSON object."""
        try:
            status = json.loads((self.path / STATUS).read_text())
        except FileNotFoundError:
            return {}
        except UnicodeDecodeError:
            raise ValueError("not text") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"not JSON: {err}") from None
        if not isinstance(status, dict):
            raise ValueError(f"a JSON {type(status).__name__}, not an object")
        return status

    @rank_zero_only
    def write_status(self, **fields) -> dict:
        """Update status.json, atomically; on a disk too full for the new copy, in place (the old file's space)."""
        status = {**self.status(), **fields}
        text = json.dumps(status, indent=1, sort_keys=True) + "\n"
        try:
            atomic_write_text(self.path / STATUS, text)
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            with open(self.path / STATUS, "r+") as f:  # a few hundred bytes: written in one block
                f.write(text)
                f.truncate()
        return status

    def checkpoint_files(self) -> list[Path]:
        """The run's checkpoints, newest first."""
        return [self.checkpoints / name for name in (FINAL, LAST, PREVIOUS) if (self.checkpoints / name).is_file()]

    def resume_step(self) -> int:
        """The iteration of the newest checkpoint that loads: 0 without one (the run itself names the others)."""
        from deepres.safe_files import read_checkpoint  # torch: only when there is a checkpoint to read

        for path in self.checkpoint_files():
            with contextlib.suppress(UserError):
                return read_checkpoint(path)["global_step"]
        return 0

    @rank_zero_only
    def set_aside(self, path: Path) -> None:
        """Rename a damaged file of the run to NAME.damaged (replacing an older one): out of the way, but kept."""
        path.replace(path.with_name(f"{path.name}.damaged"))

    @rank_zero_only
    def wandb_id(self) -> str:
        """A W&B run id kept with the run, so a resumed run continues the same W&B run."""
        path = self.path / ".wandb_id"
        if not path.is_file():
            atomic_write_text(path, secrets.token_hex(6))
        return path.read_text().strip()
