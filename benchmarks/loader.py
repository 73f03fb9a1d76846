"""The project's device-resident augmenting stream (data/gpu_augment.py) against the usual torchvision pipeline: a
DataLoader over CIFAR-10 as PIL images with RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize.

    python benchmarks/loader.py [--batches 100] [--workers 0 1 2] [--out FILE.md]

Both yield the same thing: normalised, augmented float batches of 128 on the training device. Reported: images/s
(median of 3 passes after a warm-up pass) and the CPU cores kept busy while producing them (CPU time of the process
and of the DataLoader's worker processes, over wall time)."""
import argparse
import os
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from common import SyntheticCifar, device, machine, median
from PIL import Image
from timing import sync
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

BATCH = 128


class PILCifar(Dataset):
    """What torchvision.datasets.CIFAR10 does per image: uint8 HWC array -> PIL image -> transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: list[float], std: list[float]):
        self.images, self.labels = images.permute(0, 2, 3, 1).cpu().numpy(), labels.cpu().numpy()
        self.transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                             transforms.ToTensor(), transforms.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def cpu_seconds(pids: list[int]) -> float:
    """CPU time so far of this process and of the given ones (the DataLoader's workers), from /proc."""
    ticks = 0
    for pid in ("self", *pids):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(batches: Iterator, count: int, passes: int = 3) -> tuple[float, float]:
    """(images/s, cores busy): the median of `passes` passes of `count` batches, each moved to the training device
    as training would, after a warm-up pass (which also starts the workers)."""
    dev = device()
    pids = [w.pid for w in getattr(batches, "_workers", [])]
    rates, cores = [], []
    for timed in [False] + [True] * passes:
        wall, cpu = time.perf_counter(), cpu_seconds(pids)
        for _ in range(count if timed else max(count // 4, 2)):
            x, y = next(batches)
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        sync()
        wall, cpu = time.perf_counter() - wall, cpu_seconds(pids) - cpu
        if timed:
            rates.append(count * BATCH / wall)
            cores.append(cpu / wall)
    return median(rates), median(cores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100, help="batches of 128 per timed pass (at most 110: "
                        "the passes stay within one epoch of the DataLoader)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2, os.cpu_count()])
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    args = parser.parse_args()
    data = SyntheticCifar()
    data.setup()
    x = data.train_images.double() / 255
    mean, std = x.mean((0, 2, 3)).tolist(), x.std((0, 2, 3)).tolist()
    rows = [("this project: device-resident stream (pad, crop, flip, normalise batch-wise)", "-",
             *measure(iter(data.stream()), args.batches))]
    dataset = PILCifar(data.train_images, data.train_labels, mean, std)
    for workers in sorted(set(args.workers)):
        loader = DataLoader(dataset, BATCH, shuffle=True, drop_last=True, num_workers=workers,
                            pin_memory=device().type == "cuda")
        rows.append(("torchvision DataLoader, PIL RandomCrop + RandomHorizontalFlip", str(workers),
                     *measure(iter(loader), args.batches)))
    best_loader = max(r[2] for r in rows[1:])
    lines = [f"Data loaders, batch {BATCH}, {device().type}: {machine()}", "",
             "| pipeline | workers | images/s | CPU cores busy | images/s vs best DataLoader |",
             "|---|---|---|---|---|"]
    lines += [f"| {name} | {workers} | {rate:,.0f} | {cores:.2f} | {rate / best_loader:.2f}x |"
              for name, workers, rate, cores in rows]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
