"""Exit statuses of the entry points: 2 and one paragraph for anything the user can fix (a bad override, an unknown
config group or key, a bad value, missing data), a traceback only for bugs."""
import errno
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from hydra.errors import HydraException
from omegaconf import OmegaConf

from deepres.errors import EXIT_USER_ERROR, UserError

UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.ENOSPC, errno.EDQUOT)
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def _valid_keys_hint(message: str) -> str:
    """For an unknown key 'a.b.c', the keys that do exist under 'a.b' in the default config."""
    match = re.search(r"Could not override '([\w.]+)'", message)
    if not match or "." not in match.group(1):
        return ""
    from hydra import compose, initialize_config_dir

    parent = match.group(1).rsplit(".", 1)[0]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        node = OmegaConf.select(compose("train"), parent)
    if node is None or not OmegaConf.is_dict(node):
        return ""
    return f" Valid keys under {parent}: {', '.join(k for k in node if not k.startswith('_'))}."


def explain(err: BaseException) -> str:
    """One paragraph: Hydra's message (and its cause), folded onto one line, plus the valid keys where it helps."""
    if isinstance(err, OSError) and not isinstance(err, HydraException):  # Hydra creating the run directory
        return (f"cannot write the run directory {err.filename}: {err.strerror}. Choose a writable location with "
                "hydra.run.dir=... (or hydra.sweep.dir=... for a sweep).")
    parts = [str(err)]
    if err.__cause__ is not None and str(err.__cause__) not in parts[0]:
        parts.append(str(err.__cause__))
    text = " ".join(line.strip() for part in parts for line in part.splitlines() if line.strip())
    text = re.sub(r"\s*(Config search path:|Set the environment variable HYDRA_FULL_ERROR=1).*$", "", text)
    return text + (_valid_keys_hint(text) if isinstance(err, HydraException) else "")


def run_cli(main: Callable[[], object]) -> None:
    """Run a Hydra main; user errors end with `error: ...` on stderr and exit status 2."""
    show_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let Hydra's errors reach us, to print them our way
    try:
        main()
    except (UserError, HydraException, OSError) as err:
        is_bug = isinstance(err, OSError) and not isinstance(err, HydraException) and err.errno not in UNWRITABLE
        if show_traceback or is_bug:
            raise
        print(f"error: {explain(err)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
