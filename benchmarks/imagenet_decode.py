"""How many JPEGs per second the ImageNet pipeline decodes and augments, per CPU core and with DataLoader workers.

    python benchmarks/imagenet_decode.py [--folder DIR] [--images 200] [--workers 1 2] [--out FILE.md]

Without --folder it writes ImageNet-like files: 500x375 and 375x500 windows of a real photograph (matplotlib's
grace_hopper.jpg) with mild luminance grain, JPEG quality 95: about 110 KB each, like ImageNet's training JPEGs.
With --folder it reads the JPEGs under DIR (e.g. a few class folders of the real ImageNet train/).

Per core: one process, one thread, each path over the same files (3 passes, timed in chunks of 20 images):
  decode          torchvision.io.decode_image (libjpeg-turbo) -> uint8 RGB tensor
  train sample    decode + the paper's scale augmentation as the DataLoader workers run it (data.decode=cpu)
  gpu-path worker what a worker does for data.decode=gpu: read the file, parse its JPEG header, draw the window
  eval sample     decode + shorter side 256 + centre 224 crop
  PIL train       PIL open/convert + resize shorter side + crop + flip + to tensor (the usual torchvision recipe)
Workers: the training DataLoader (TrainSamples) with N worker processes, batch 64, images/s over all workers.
With CUDA, also the device's share of data.decode=gpu: decode (nvJPEG) + crop/resize/flip of batches of 256."""
import argparse
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import matplotlib.cbook
import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from deepres.data.imagenet import StreamLoader, TrainSamples
from deepres.data.imagenet_augment import center_view, crop_window, scale_augment
from deepres.data.imagenet_folder import class_names, read_rgb, scan
from deepres.data.jpeg import DeviceDecoder, collate, load, train_item


def write_photo_folder(root: Path, images: int, seed: int = 0) -> Path:
    """root/train/<2 classes>/*.JPEG (and a val/ of the same classes): ImageNet-like JPEGs of a real photograph."""
    photo = np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"), np.float32)
    rng = np.random.default_rng(seed)
    for split, count in (("train", images), ("val", 2)):
        for n in range(count):
            folder = root / split / f"class{n % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            w, h = (500, 375) if n % 2 else (375, 500)
            top, left = rng.integers(0, photo.shape[0] - h + 1), rng.integers(0, photo.shape[1] - w + 1)
            pixels = photo[top:top + h, left:left + w] + rng.normal(0, 8, (h, w, 1))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{n:05d}.JPEG", quality=95)
    return root


def pil_train(path: str, rng: random.Random) -> torch.Tensor:
    image = Image.open(path).convert("RGB")
    short = rng.randint(256, 480)
    image = TF.resize(image, short)
    top, left = rng.randint(0, image.height - 224), rng.randint(0, image.width - 224)
    image = image.crop((left, top, left + 224, top + 224))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return TF.pil_to_tensor(image)


def per_core(paths: list[str], chunk: int = 20, passes: int = 3) -> dict[str, tuple[float, float]]:
    """(best, median) images/s of each path in this process, on one thread, over chunks of `chunk` images: on a
    shared machine the best chunk is the uncontended speed of a core, the median what the others left of it."""
    torch.set_num_threads(1)
    rng = random.Random(0)
    paths_ = {
        "decode": read_rgb,
        "train sample": lambda p: scale_augment(read_rgb(p), rng, 224, (256, 480), True),
        "gpu-path worker": lambda p: train_item(load(p), rng, 224, (256, 480), True),
        "eval sample": lambda p: center_view(read_rgb(p), 256, 224),
        "PIL train": lambda p: pil_train(p, rng),
    }
    rates = {}
    for name, fn in paths_.items():
        times = []
        for _ in range(passes):
            for start in range(0, len(paths) - chunk + 1, chunk):
                begin = time.perf_counter()
                for p in paths[start:start + chunk]:
                    fn(p)
                times.append(time.perf_counter() - begin)
        rates[name] = (chunk / min(times), chunk / float(np.median(times)))
    return rates


def with_workers(root: Path, workers: int, batches: int = 12, batch: int = 64) -> float:
    """Images/s of the training DataLoader with `workers` processes, after one warm-up batch per worker."""
    folder = scan(root, "train", class_names(root))
    augment = partial(scale_augment, crop=224, scale=(256, 480), flip=True)
    loader = StreamLoader(TrainSamples(folder, batch, 0, 1, 0, augment), lambda: 0, batch_size=batch,
                          num_workers=workers)
    it = iter(loader)
    for _ in range(workers):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch / (time.perf_counter() - start)


def on_device(paths: list[str], batch: int = 256, passes: int = 5) -> float:
    """Images/s of the device's share of data.decode=gpu (decode + crop/resize/flip, to a uint8 batch) on CUDA,
    over batches of `batch` files read beforehand (best of `passes`)."""
    device = torch.device("cuda")
    decoder = DeviceDecoder(device, lambda image, item: crop_window(image, item.window, 224))
    rng = random.Random(0)
    files = [collate([(train_item(load(paths[(start + i) % len(paths)]), rng, 224, (256, 480), True), 0, "")
                      for i in range(batch)])[0] for start in range(0, batch * 2, batch)]
    torch.stack(decoder(files[0]))  # warm-up: nvJPEG's handles and buffers
    times = []
    for _ in range(passes):
        torch.cuda.synchronize()
        begin = time.perf_counter()
        for f in files:
            torch.stack(decoder(f))
        torch.cuda.synchronize()
        times.append(time.perf_counter() - begin)
    return len(files) * batch / min(times)


def describe(paths: list[str]) -> str:
    sizes = [os.path.getsize(p) for p in paths]
    shapes = [Image.open(p).size for p in paths[::max(1, len(paths) // 50)]]
    return (f"{len(paths)} JPEGs, mean {np.mean(sizes) / 1e3:.0f} KB, mean {np.mean([s[0] for s in shapes]):.0f}x"
            f"{np.mean([s[1] for s in shapes]):.0f} pixels")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", help="a folder in ImageNet's layout (root/train/<class>/*.JPEG)")
    parser.add_argument("--images", type=int, default=200, help="files to write when no --folder is given")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--out", help="also write the results as Markdown to this file")
    args = parser.parse_args()
    root = Path(args.folder) if args.folder else write_photo_folder(Path(tempfile.mkdtemp()), args.images)
    folder = scan(root, "train", class_names(root))
    paths = [folder.path(i) for i in range(len(folder))]
    load = os.getloadavg()[0]
    rates = per_core(paths)
    workers = {w: with_workers(root, w) for w in args.workers}
    device = on_device(paths) if torch.cuda.is_available() else None
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# ImageNet decode throughput", "",
        f"- command: `python benchmarks/imagenet_decode.py {' '.join(sys.argv[1:])}` (commit {commit})",
        f"- machine: {cpu}, {os.cpu_count()} cores, load average {load:.1f} at the start; torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}",
        f"- files: {describe(paths)}" + ("" if args.folder else " (windows of a real photograph, see the script)"),
        "", "| path | images/s per core: best chunk | median chunk |", "|---|---|---|",
        *(f"| {name} | {best:.0f} | {median:.0f} |" for name, (best, median) in rates.items()),
        "", "| training DataLoader workers | images/s in all |", "|---|---|",
        *(f"| {w} | {rate:.0f} |" for w, rate in workers.items()),
        "", "data.decode=gpu, the device's share (decode + crop/resize/flip, batches of 256): " + (
            f"{device:.0f} images/s on {torch.cuda.get_device_name()}" if device else "no CUDA device here"),
    ]
    if load > 0.5 * os.cpu_count():
        lines += ["", f"The machine was shared (load {load:.1f} on {os.cpu_count()} cores): the workers rows, which "
                  "need free cores, are lower bounds; the best-chunk rates are a core's own speed."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
