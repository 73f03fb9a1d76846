"""Files from elsewhere are data, never code. Every torch file loads with weights_only=True: tensors, and the
containers, numbers and strings around them, all that this project's checkpoints and public weights hold. CIFAR
batches are unpickled by an unpickler that builds only what the official files hold: dicts, lists, strings, numbers
and numpy arrays. A file that would build anything else is refused (RefusedFile, naming it); none of it runs."""
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import torch
from numpy._core.multiarray import _reconstruct
from numpy._core.numeric import _frombuffer

from deepres.errors import DamagedFile, RefusedFile

# how numpy pickles an array: _reconstruct + ndarray + dtype (protocols 0-4, numpy 1 and 2), _frombuffer (protocol 5)
_ARRAY_GLOBALS = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                  **{(f"{core}.multiarray", "_reconstruct"): _reconstruct for core in ("numpy.core", "numpy._core")},
                  **{(f"{core}.numeric", "_frombuffer"): _frombuffer for core in ("numpy.core", "numpy._core")}}
_RUNS_CODE = re.compile(r"global|reduce|object|build", re.IGNORECASE)  # torch's words for what only code builds


def _first_sentence(text: str) -> str:
    return re.split(r"\.\s", text.strip() + " ", maxsplit=1)[0].strip().rstrip(".")


def load_torch(path: str | Path, name: str | None = None, mmap: bool = False):
    """torch.load of tensors and plain data only (any torch.save format); RefusedFile, naming the file as `name`
    (default: its path), when it holds anything that only running code can build. Other errors propagate."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        reason = _first_sentence(str(err).split("WeightsUnpickler error:")[-1])
        if not _RUNS_CODE.search(reason):  # a pickle that does not parse: an unreadable file, without torch's advice
            raise pickle.UnpicklingError(reason) from None
        raise RefusedFile(f"{name or path} was refused: besides tensors and plain data it holds pickled objects that "
                          f"only running code can build ({reason}); nothing in it was run. A checkpoint of weights "
                          "needs none: if you trust its source, load it there and save its state dict alone.") from None


def read_checkpoint(path: str | Path, mmap: bool = True) -> dict:
    """A checkpoint of a run (torch.save's zip format): DamagedFile when it is not whole or does not load,
    RefusedFile when it holds pickled code. With mmap the tensors are read only when used."""
    if not zipfile.is_zipfile(path):  # a zip's directory is at its end: a file cut short has none
        raise DamagedFile(path, "not a whole zip archive as torch.save writes one: cut short or overwritten")
    try:
        checkpoint = load_torch(path, mmap=mmap)
    except RefusedFile:
        raise
    except Exception as err:  # a whole zip whose records are not: miniz, pickle and torch errors alike
        raise DamagedFile(path, f"{type(err).__name__}: {_first_sentence(str(err)) or 'no detail'}") from None
    if not isinstance(checkpoint, dict) or "global_step" not in checkpoint:
        raise DamagedFile(path, "not a checkpoint of a run: it has no global_step")
    return checkpoint


class _Forbidden(pickle.UnpicklingError):
    pass


class _ArrayUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings, numbers and numpy arrays; any other global is _Forbidden, before it is called."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ARRAY_GLOBALS:
            return _ARRAY_GLOBALS[module, name]
        raise _Forbidden(f"{module}.{name}")


def load_pickle_of_arrays(path: Path, what: str):
    """The pickle in `path` (Python 2 pickles read as latin1, as the official CIFAR batches need); RefusedFile when
    it would build anything but `what` holds."""
    try:
        with open(path, "rb") as f:
            return _ArrayUnpickler(f, encoding="latin1").load()
    except _Forbidden as err:
        raise RefusedFile(f"{path} was refused: {what} holds only dicts, lists, strings, numbers and numpy arrays, and "
                          f"this file's pickle would call {err} to build something else; nothing in it was run. "
                          "Delete it and unpack the official archive again.") from None
