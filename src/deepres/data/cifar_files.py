"""Reading CIFAR-10/100 in the official python layout, and fetching the official archive.

The readers check shapes and labels instead of file checksums: the batches may be re-encoded copies of the official
ones, so only the downloaded archive's published md5 is verified. Whoever made them, a batch is unpickled as data
(safe_files.py): one that would run code is refused."""
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepres.errors import RefusedFile, UserError
from deepres.safe_files import load_pickle_of_arrays


@dataclass(frozen=True)
class CifarLayout:
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    label_key: str
    num_classes: int
    url: str
    archive_md5: str


DOWNLOAD_TIMEOUT_S = 60  # a connection or read that stalls this long ends the download

LAYOUTS = {
    "cifar10": CifarLayout(
        "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "labels", 10,
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar100": CifarLayout(
        "cifar-100-python", ("train",), "test", "fine_labels", 100,
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
}


def layout(name: str) -> CifarLayout:
    if name not in LAYOUTS:
        raise UserError(f"data.name={name!r} is not a CIFAR data set; valid: {', '.join(LAYOUTS)}.")
    return LAYOUTS[name]


def how_to_get(name: str, root: Path, downloaded: bool = False) -> str:
    """How to get the data set into root; `downloaded`: data.download=true already tried (offline, most likely)."""
    spec = layout(name)
    unpack = (f"on a machine with internet and unpack it into data.root={root}, so that {root / spec.folder} holds "
              f"{', '.join(spec.train_files + (spec.test_file,))}.")
    if downloaded:
        return f"Without network here, download {spec.url} {unpack}"
    return f"Get it with data.download=true (fetches {spec.url}), or download that archive {unpack}"


def download(name: str, root: Path) -> None:
    """Fetch and unpack the official archive into root, checking the archive's published md5. A download that fails
    leaves nothing behind: neither the folders it created nor a partial archive."""
    from torchvision.datasets.utils import download_and_extract_archive

    spec = layout(name)
    root = Path(root)
    if (root / spec.folder).is_dir():
        return
    created = next((p for p in [*reversed(root.parents), root] if not p.exists()), None)
    archive = root / Path(spec.url).name
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # torchvision's download waits forever on a silent network
    try:
        download_and_extract_archive(spec.url, str(root), md5=spec.archive_md5)
    except (OSError, RuntimeError) as err:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        else:
            archive.unlink(missing_ok=True)
        raise UserError(f"could not download {name} from {spec.url} into {root}: {err}. "
                        f"{how_to_get(name, root, downloaded=True)}") from None
    finally:
        socket.setdefaulttimeout(previous)


def _load_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = load_pickle_of_arrays(path, "a CIFAR batch")
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (FileNotFoundError, RefusedFile):
        raise
    except Exception as err:  # truncated pickles raise EOFError, UnpicklingError, ValueError, KeyError ...
        raise UserError(f"{path} is not a readable CIFAR batch ({type(err).__name__}: {err}); the file is corrupt or "
                        "truncated: delete it and unpack the archive again.") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise UserError(f"{path} holds data of shape {data.shape} with {len(labels)} labels; a CIFAR batch holds "
                        "N x 3072 uint8 rows (1024 R, 1024 G, 1024 B) and N labels.")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"{path} has labels in [{labels.min()}, {labels.max()}]; valid labels are "
                        f"0..{num_classes - 1}.")
    return data.reshape(-1, 3, 32, 32), labels


def check_files(name: str, root: Path, train: bool = True, test: bool = True, downloaded: bool = False) -> None:
    """Raise a UserError naming the batch files missing under root (before a run creates anything)."""
    spec = layout(name)
    folder = Path(root) / spec.folder
    files = (spec.train_files if train else ()) + ((spec.test_file,) if test else ())
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise UserError(f"{name} not found: looked for {', '.join(missing)} in {folder}. "
                        f"{how_to_get(name, Path(root), downloaded)}")


def read_split(name: str, root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of the training or the test split."""
    spec = layout(name)
    folder = Path(root) / spec.folder
    files = spec.train_files if train else (spec.test_file,)
    check_files(name, root, train=train, test=not train)
    parts = [_load_batch(folder / f, spec.label_key, spec.num_classes) for f in files]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
