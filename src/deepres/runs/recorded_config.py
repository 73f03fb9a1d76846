"""A run directory's recorded config (.hydra/) describes the run its metrics and checkpoints came from, so it is
never overwritten by another config.

Hydra writes each invocation's config to .hydra-next/ (conf/hydra/default.yaml: hydra.output_subdir). Before a run
trains, it is compared with the recorded one: a run continued (resumed, or found finished) under a config that
changes its results is refused with the keys that differ, leaving every file as it was; otherwise the new files
become the record (they may differ only in keys that change no result: data.root, the logger, the progress bar...,
hydra.job.config.override_dirname.exclude_keys, and data.num_workers). Under data parallelism global rank 0 does
this, as it keeps the run's other records (run_dir.py)."""
import shutil
from pathlib import Path

from lightning_utilities.core.rank_zero import rank_zero_only
from omegaconf import OmegaConf

from deepres.errors import UserError

RECORD, STAGED = ".hydra", ".hydra-next"
CONFIG = "config.yaml"
# besides the keys a run directory's name leaves out; the task follows from the model and data, which are compared
# (and runs recorded before the key existed resume)
RESULT_NEUTRAL = ("data.num_workers", "task")


def flat(node, prefix: str = "") -> dict[str, object]:
    """{dotted key: value} of a config as written (interpolations as strings)."""
    if isinstance(node, dict):
        items = {}
        for key, value in node.items():
            items.update(flat(value, f"{prefix}{key}."))
        return items or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): node}


def changed_keys(recorded: dict, new: dict, neutral: tuple[str, ...]) -> list[str]:
    """The keys whose values differ between two flat configs, leaving out `neutral` keys and config groups."""
    def counts(key: str) -> bool:
        return not any(key == n or key.startswith(f"{n}.") for n in neutral)

    return sorted(k for k in recorded.keys() | new.keys() if counts(k) and recorded.get(k) != new.get(k))


@rank_zero_only
def check_unchanged(run: Path) -> None:
    """Refuse (UserError) a config that differs from the recorded one in a key that changes results."""
    staged, recorded = run / STAGED / CONFIG, run / RECORD / CONFIG
    if not (staged.is_file() and recorded.is_file()):
        return
    old, new = (flat(OmegaConf.to_container(OmegaConf.load(p), resolve=False)) for p in (recorded, staged))
    hydra = OmegaConf.load(run / STAGED / "hydra.yaml")
    keys = changed_keys(old, new, (*hydra.hydra.job.config.override_dirname.exclude_keys, *RESULT_NEUTRAL))
    if keys:
        discard(run)
        shown = ", ".join(f"{k}: {old.get(k, '(none)')} -> {new.get(k, '(none)')}" for k in keys[:5])
        more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
        raise UserError(f"{run} holds a run trained with another config ({shown}{more}); its metrics and checkpoints "
                        "are that run's, so its records are kept as they are. Train in another directory "
                        "(hydra.run.dir=... or hydra.sweep.dir=...), or delete it to start afresh.")


@rank_zero_only
def adopt(run: Path) -> None:
    """This invocation's config files become the run's record."""
    staged, record = run / STAGED, run / RECORD
    if not staged.is_dir():
        return
    if not record.is_dir():
        staged.rename(record)
        return
    for item in staged.iterdir():
        item.replace(record / item.name)  # each file replaced whole
    staged.rmdir()


@rank_zero_only
def discard(run: Path) -> None:
    """Drop this invocation's config files (a finished run keeps its record)."""
    shutil.rmtree(run / STAGED, ignore_errors=True)
