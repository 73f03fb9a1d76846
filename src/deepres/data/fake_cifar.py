"""Small CIFAR-10/100 folders in the official python layout, with a learnable cue, for tests and smoke runs:

    python -m deepres.data.fake_cifar DIR [--per-batch 256 --test 320]    writes DIR/cifar-10-batches-py

Written as Python 2 pickles, like the official files: strings as BINSTRING opcodes (bytes that unpickle to str
only with encoding="latin1"), arrays reduced through numpy.core.multiarray."""
import argparse
import pickle
from pathlib import Path

import numpy as np


class _Py2Str(bytes):
    pass


class _Py2Pickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2str(self, obj: bytes) -> None:
        head = pickle.SHORT_BINSTRING + bytes([len(obj)]) if len(obj) < 256 else \
            pickle.BINSTRING + len(obj).to_bytes(4, "little")
        self.write(head + obj)
        self.memoize(obj)

    dispatch[_Py2Str] = save_py2str

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            from numpy._core.multiarray import _reconstruct

            state = (1, obj.shape, obj.dtype, False, _Py2Str(obj.tobytes()))
            return _reconstruct, (np.ndarray, (0,), _Py2Str(b"b")), state
        return NotImplemented


def py2_dump(obj, path: Path) -> None:
    def convert(x):
        if isinstance(x, str):
            return _Py2Str(x.encode())
        if isinstance(x, dict):
            return {convert(k): convert(v) for k, v in x.items()}
        if isinstance(x, list):
            return [convert(v) for v in x]
        return x

    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(convert(obj))


def _batch(rng: np.random.Generator, n: int, num_classes: int, label_key: str) -> dict:
    labels = rng.integers(0, num_classes, n)
    images = rng.integers(0, 256, (n, 3, 32, 32)).astype(np.uint8)
    for k in range(min(num_classes, 10)):  # a white 3x3 patch whose row says the class (mod 10)
        images[labels % 10 == k, :, 3 * k:3 * k + 3, 14:17] = 255
    return {"data": images.reshape(n, 3072), label_key: labels.tolist(), "filenames": [f"{i}.png" for i in range(n)]}


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def write_cifar10(root: Path, per_batch: int = 256, test: int = 320, seed: int = 0) -> Path:
    out = Path(root) / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(1, 6):
        py2_dump(_batch(rng, per_batch, 10, "labels"), out / f"data_batch_{i}")
    py2_dump(_batch(rng, test, 10, "labels"), out / "test_batch")
    py2_dump({"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": per_batch, "num_vis": 3072},
             out / "batches.meta")
    return Path(root)


def write_cifar100(root: Path, train: int = 500, test: int = 100, seed: int = 0) -> Path:
    out = Path(root) / "cifar-100-python"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, n in (("train", train), ("test", test)):
        py2_dump(_batch(rng, n, 100, "fine_labels"), out / name)
    return Path(root)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write a small generated CIFAR-10 in the official python layout.")
    parser.add_argument("root", type=Path, help="the data.root to write (DIR/cifar-10-batches-py)")
    parser.add_argument("--per-batch", type=int, default=256, help="images in each of the 5 training batches")
    parser.add_argument("--test", type=int, default=320, help="test images")
    args = parser.parse_args()
    print(write_cifar10(args.root, args.per_batch, args.test))
