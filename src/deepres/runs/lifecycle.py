"""How runs start, stop and end, whether a run trains alone or several train as one network (a pack): the same
records and the same exit policy for both.

    with recorded(members) as todo:   # each directory locked; completed runs left as they are
        ...train todo...              # a signal marks the unfinished runs interrupted, an error marks them failed

report_outcome(train, multirun) is the exit policy of a Hydra job: a single run exits 2 on a user error, 128 + N on
signal N (after saving its checkpoint); in a sweep, a failed job (or pack) is logged and the sweep goes on."""
import contextlib
import errno
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from lightning_utilities.core.rank_zero import rank_zero_only
from omegaconf import DictConfig

from deepres.errors import EXIT_USER_ERROR, DamagedFile, Diverged, UserError
from deepres.runs.metrics_csv import FILENAME, final_metrics, read_rows
from deepres.runs.recorded_config import adopt, check_unchanged, discard
from deepres.runs.run_dir import FINAL, LAST, STATUS, RunDir
from deepres.runs.run_log import run_logs
from deepres.runs.signals import Interrupted
from deepres.safe_files import read_checkpoint

log = logging.getLogger("deepres")
T = TypeVar("T")
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


@dataclass
class Member:
    """One run to train: its composed config, its run directory, its overrides (for status.json)."""

    cfg: DictConfig
    run: RunDir
    overrides: str


def explain_failure(err: BaseException, run: RunDir | None) -> BaseException:
    """Add what was kept to a divergence, and turn a full disk into a user error; `run` None: several runs."""
    if run is None:
        kept = "each run keeps its last good checkpoint, if it had saved one"
    elif (run.checkpoints / LAST).is_file():
        kept = f"the last good checkpoint is {run.checkpoints / LAST}"
    else:
        kept = "no checkpoint had been saved yet"
    if isinstance(err, Diverged):
        return Diverged(f"{err} The run is stopped; {kept}.")
    if isinstance(err, OSError) and err.errno in DISK_FULL:
        where = run.path if run is not None else "the run directories"
        return UserError(f"no space left to write in {where} ({err.strerror}); every file written before is "
                         f"whole and {kept}: free some space and re-run the same command to resume.")
    return err


def mark_failed(run: RunDir, err: BaseException) -> BaseException:
    """status.json failed with the reason, if it can still be written (the disk may be full); the explained error."""
    explained = explain_failure(err, run)
    with contextlib.suppress(OSError):
        run.write_status(status="failed", reason=f"{type(explained).__name__}: {explained}")
    return explained


@rank_zero_only
def rebuild_status(member: Member) -> None:
    """A damaged status.json (not a JSON object: torn by another program, garbage) is kept as status.json.damaged and
    rebuilt from the run's checkpoints and metrics.csv: a run with a final.ckpt is completed, with its iterations and
    final errors, and is not trained again; any other resumes. The wall time it held is lost: the record says so."""
    run = member.run
    try:
        run.read_status()
        return
    except ValueError as err:
        why = str(err)
    run.set_aside(run.path / STATUS)
    try:
        steps = read_checkpoint(run.checkpoints / FINAL)["global_step"] if (run.checkpoints / FINAL).is_file() else None
    except DamagedFile:  # resume_point names it, as any damaged checkpoint
        steps = None
    note = (f"status.json was damaged ({why}), kept as {STATUS}.damaged; rebuilt from the checkpoints and metrics.csv, "
            "without the wall time it held")
    if steps is None:
        run.write_status(status="interrupted", name=member.cfg.name, overrides=member.overrides, reason=note,
                         rebuilt=note)
        found = "the run has not finished and resumes from its checkpoints"
    else:
        rows = read_rows(run.path / FILENAME) if (run.path / FILENAME).is_file() else []
        run.write_status(status="completed", name=member.cfg.name, overrides=member.overrides, reason="",
                         steps=steps, **final_metrics(rows), rebuilt=note)
        found = f"the run completed at iteration {steps} ({FINAL}), with the final errors of {FILENAME}"
    log.warning(f"{run.path / STATUS} is damaged ({why}); kept as {STATUS}.damaged and rebuilt: {found}. The wall "
                "time it held is lost.")


@contextlib.contextmanager
def recorded(members: list[Member]) -> Iterator[list[Member]]:
    """Lock the members' directories and yield those still to train, logging to their train.log meanwhile; a
    directory whose recorded config another config would contradict is refused first (recorded_config.py).
    Whatever stops the training is recorded in every started (status running) member's status.json: interrupted by
    a signal, or failed with the reason. An error leaves as explained for the user (explain_failure)."""
    try:
        for member in members:
            check_unchanged(member.run.path)  # before anything in the directories is touched
    except UserError:
        for member in members:
            discard(member.run.path)
        raise
    with contextlib.ExitStack() as locks:
        for member in members:
            member.run.lock()
            locks.callback(member.run.unlock)
        todo = []
        for member in members:
            rebuild_status(member)
            if member.run.status().get("status") == "completed":
                log.info(f"{member.run.path} already finished; delete it to train again")
                discard(member.run.path)
            else:
                adopt(member.run.path)
                todo.append(member)
        with run_logs([member.run.path for member in todo]):
            try:
                yield todo
            except Interrupted as stop:
                for member in todo:
                    if member.run.status().get("status") == "running":
                        member.run.write_status(status="interrupted", reason=str(stop))
                raise
            except Exception as err:
                for member in todo:
                    if member.run.status().get("status") == "running":
                        mark_failed(member.run, err)
                explained = explain_failure(err, todo[0].run if len(todo) == 1 else None)
                if explained is err:
                    raise
                raise explained from err


def report_outcome(train: Callable[[], T], multirun: bool, what: str = "job") -> T | None:
    """train() under the exit policy of a Hydra job (see the module's docstring); None for a failed sweep job."""
    try:
        return train()
    except UserError as err:
        if multirun:
            log.error(f"{what} failed: {err}")
            return None
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except Interrupted as stop:
        log.warning(f"{stop}: checkpoint saved; re-run the same command to resume")
        sys.exit(128 + stop.signum)
    except Exception:
        if multirun:
            log.exception(f"{what} failed")
            return None
        raise
