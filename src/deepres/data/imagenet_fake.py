"""A small folder in ImageNet's layout, of real image files, for tests, the decode benchmark and smoke runs:

    python -m deepres.data.imagenet_fake OUT [--classes 3 --train 8 --val 2 --min-size 40 --max-size 90]

Files come in the sizes and modes ImageNet has: RGB, greyscale and CMYK JPEGs, and PNGs named .JPEG. The pixels are
a class colour plus noise (a net can learn them), or crops of a photograph (`photo`), whose JPEGs have the sizes and
decode times of real ones."""
import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

KINDS = ("RGB", "L", "CMYK", "PNG")  # the last: PNG data in a .JPEG file


def make_image(rng: np.random.Generator, width: int, height: int, label: int, classes: int,
               photo: Image.Image | None = None) -> Image.Image:
    """An RGB image: a random window of `photo` resized to width x height, or the class colour plus noise."""
    if photo is not None:
        side = rng.uniform(0.4, 1.0) * min(photo.size)
        aspect = width / height
        w, h = min(side * aspect, photo.width), min(side, photo.height)
        left, top = rng.uniform(0, photo.width - w), rng.uniform(0, photo.height - h)
        return photo.resize((width, height), Image.Resampling.BICUBIC, box=(left, top, left + w, top + h))
    colour = np.array(Image.new("HSV", (1, 1), (int(255 * label / classes), 200, 200)).convert("RGB"))[0, 0]
    noise = rng.normal(0, 40, (height, width, 3))
    return Image.fromarray(np.clip(colour + noise, 0, 255).astype(np.uint8), "RGB")


def write_image(path: Path, image: Image.Image, kind: str, quality: int = 90) -> None:
    if kind == "PNG":
        image.save(path, "PNG")
    else:
        image.convert(kind).save(path, "JPEG", quality=quality)


def write_image_folder(root: str | Path, classes: int = 3, train: int = 8, val: int = 2,
                       sizes: Sequence[int] = (40, 90), seed: int = 0, kinds: Sequence[str] = KINDS,
                       photo: Image.Image | None = None, quality: int = 90) -> Path:
    """root/{train,val}/class<i>/<i>_<n>.JPEG: `train` and `val` files per class, each side drawn from `sizes`
    (inclusive), kinds in turn. Returns root."""
    root, rng = Path(root), np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        for label in range(classes):
            folder = root / split / f"class{label:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(count):
                width, height = (int(s) for s in rng.integers(sizes[0], sizes[1], 2, endpoint=True))
                image = make_image(rng, width, height, label, classes, photo)
                write_image(folder / f"{label:03d}_{n:05d}.JPEG", image, kinds[n % len(kinds)], quality)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root")
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--train", type=int, default=8, help="images per class in train/")
    parser.add_argument("--val", type=int, default=2, help="images per class in val/")
    parser.add_argument("--min-size", type=int, default=40)
    parser.add_argument("--max-size", type=int, default=90)
    args = parser.parse_args()
    print(write_image_folder(args.root, args.classes, args.train, args.val, (args.min_size, args.max_size)))


if __name__ == "__main__":
    main()
