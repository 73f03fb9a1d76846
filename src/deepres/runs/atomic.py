"""Writes that a kill at any moment leaves either the old file or the new one, never a torn one."""
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None],
                 before_replace: Callable[[Path], None] | None = None) -> None:
    """Call write(f) on a temporary file beside `path`, flush it to disk, then rename it over `path`;
    before_replace(temporary) may check the new file first (raising keeps the old one) or move the old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode open() would
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))
