"""Small detection sets of real files in PASCAL VOC's and COCO's layouts, for tests and smoke runs:

    python -m deepres.detection.generated voc|coco DIR [--images N --seed S]

Each image is a noisy grey background with 2-4 filled rectangles and ellipses that do not touch; an object's class
is its shape's colour (distinct colours, so a small net learns them in a short run), its box the shape's exact
pixels. VOC: VOC2007 trainval (N images) and test (N), VOC2012 trainval (3N/2) and test (N/2, listed without
annotations), some objects difficult, all 20 classes in every labelled part when N >= 10. COCO: train2017 (N) and
val2017 (N/2) with five of COCO's categories under their real, non-contiguous ids; the first image of each set has
no object and the second only a crowd box, and more crowd boxes come at random."""
import argparse
import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from deepres.detection.voc import VOC_CLASSES

VOC_PARTS = {"VOC2007/trainval": 1.0, "VOC2007/test": 1.0, "VOC2012/trainval": 1.5, "VOC2012/test": 0.5}
COCO_CATEGORIES = ((1, "person", "person"), (3, "car", "vehicle"), (18, "dog", "animal"), (44, "bottle", "kitchen"),
                   (62, "chair", "furniture"))
COCO_SETS = {"train2017": 1.0, "val2017": 0.5}
SIZES = (200, 320)  # sides of the images, in pixels (inclusive)
DIFFICULT = 0.3  # the chance that an object of a class already seen (not difficult) in its part is difficult


def colour(label: int) -> np.ndarray:
    """Label l's colour (0-based): ten hues, bright for the first ten labels, dark for the next ten."""
    hue, value = int(255 * (label % 10) / 10), 240 if label % 20 < 10 else 130
    return np.array(Image.new("HSV", (1, 1), (hue, 255, value)).convert("RGB"))[0, 0].astype(np.float64)


def _place(rng: np.random.Generator, width: int, height: int, count: int) -> list[tuple[int, int, int, int]]:
    """Up to `count` windows (x, y, w, h) at least 2 pixels apart, each side 15-35% of the image's."""
    windows = []
    for _ in range(200 * count):
        if len(windows) == count:
            break
        w, h = int(rng.uniform(0.15, 0.35) * width), int(rng.uniform(0.15, 0.35) * height)
        x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        if all(x + w + 2 <= a or a + c + 2 <= x or y + h + 2 <= b or b + d + 2 <= y for a, b, c, d in windows):
            windows.append((x, y, w, h))
    return windows


def draw(rng: np.random.Generator, width: int, height: int, labels: Sequence[int]) -> tuple[Image.Image, list]:
    """An image with one shape of each label's colour, and each shape's box (x1, y1, x2, y2) and area in pixels."""
    pixels = np.clip(rng.normal(128, 25, (height, width, 3)), 0, 255)
    shapes = []
    for label, (x, y, w, h) in zip(labels, _place(rng, width, height, len(labels))):
        mask = Image.new("L", (width, height))
        paint = ImageDraw.Draw(mask).ellipse if rng.random() < 0.5 else ImageDraw.Draw(mask).rectangle
        paint((x, y, x + w - 1, y + h - 1), fill=1)
        inside = np.asarray(mask, dtype=bool)
        pixels[inside] = np.clip(colour(label) + rng.normal(0, 12, (int(inside.sum()), 3)), 0, 255)
        rows, cols = np.nonzero(inside)
        shapes.append(((int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1),
                       int(inside.sum())))
    return Image.fromarray(pixels.astype(np.uint8), "RGB"), shapes


def _size(rng: np.random.Generator, sizes: Sequence[int]) -> tuple[int, int]:
    width, height = rng.integers(sizes[0], sizes[1], 2, endpoint=True)
    return int(width), int(height)


def _voc_xml(image_id: str, width: int, height: int, objects: list[tuple[str, tuple, bool]]) -> ET.ElementTree:
    """An annotation as the devkit writes one: 1-based inclusive pixel coordinates."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    size = ET.SubElement(root, "size")
    for key, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    for name, (x1, y1, x2, y2), difficult in objects:
        obj = ET.SubElement(root, "object")
        for key, value in (("name", name), ("pose", "Unspecified"), ("truncated", 0), ("difficult", int(difficult))):
            ET.SubElement(obj, key).text = str(value)
        box = ET.SubElement(obj, "bndbox")
        for key, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(box, key).text = str(value)
    ET.indent(root)
    return ET.ElementTree(root)


def write_voc(root: str | Path, images: int = 10, seed: int = 0, sizes: Sequence[int] = SIZES,
              classes: int = len(VOC_CLASSES)) -> Path:
    """root/VOC2007 and root/VOC2012 in the devkit's layout (VOC_PARTS: images per part, as multiples of `images`),
    with objects of the first `classes` VOC classes (fewer classes, more objects of each: a short run learns them).
    Returns root."""
    root, rng = Path(root), np.random.default_rng(seed)
    serial = {"VOC2007": iter(range(1, 10**6)), "VOC2012": iter(range(1, 10**6))}
    for part, share in VOC_PARTS.items():
        year, split = part.split("/")
        folder = root / year
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        # each run of `classes` objects holds every class once
        drawn = np.concatenate([rng.permutation(classes) for _ in range(4 * images // 5 * 20 // classes + 1)])
        ids, made, plain = [], 0, set()  # plain: the classes with an object that is not difficult
        for _ in range(max(1, round(share * images))):
            number = next(serial[year])
            image_id = f"{number:06d}" if year == "VOC2007" else f"2008_{number:06d}"
            width, height = _size(rng, sizes)
            labels = drawn[made:made + int(rng.integers(2, 5))]
            image, shapes = draw(rng, width, height, labels)
            objects = []
            for label, (box, _) in zip(labels, shapes):
                objects.append((VOC_CLASSES[label], box, label in plain and rng.random() < DIFFICULT))
                plain.add(label)
            made += len(shapes)
            image.save(folder / "JPEGImages" / f"{image_id}.jpg", quality=90)
            if part != "VOC2012/test":
                _voc_xml(image_id, width, height, objects).write(folder / "Annotations" / f"{image_id}.xml")
            ids.append(image_id)
        (folder / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def _box_rle(box: tuple[int, ...], width: int, height: int) -> dict:
    """The box's mask as COCO's uncompressed RLE (column-major run lengths, starting with background)."""
    x1, y1, x2, y2 = box
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y1:y2, x1:x2] = 1
    flat = mask.ravel(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    return {"counts": np.diff(np.concatenate([[0], edges, [flat.size]])).tolist(), "size": [height, width]}


def write_coco(root: str | Path, images: int = 10, seed: int = 0, sizes: Sequence[int] = SIZES) -> Path:
    """root/{train2017,val2017}/*.jpg and root/annotations/instances_{train2017,val2017}.json (COCO_SETS: images per
    set, as multiples of `images`). Returns root."""
    root, rng = Path(root), np.random.default_rng(seed)
    categories = [{"id": i, "name": name, "supercategory": group} for i, name, group in COCO_CATEGORIES]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    number = 0
    for name, share in COCO_SETS.items():
        (root / name).mkdir(exist_ok=True)
        listed, annotations = [], []
        for n in range(max(2, round(share * images))):
            number += 1
            image_id = 1000 + 7 * number
            width, height = _size(rng, sizes)
            labels = rng.integers(0, len(COCO_CATEGORIES), (0, 1)[n] if n < 2 else int(rng.integers(2, 5)))
            image, shapes = draw(rng, width, height, labels)
            file_name = f"{image_id:012d}.jpg"
            image.save(root / name / file_name, quality=90)
            listed.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
            for label, (box, area) in zip(labels, shapes):
                crowd = n == 1 or (n > 1 and rng.random() < 0.1)
                x1, y1, x2, y2 = box
                # a crowd region is its box's mask; an object's outline is its box, its area its shape's pixels
                segmentation = _box_rle(box, width, height) if crowd else [[x1, y1, x2, y1, x2, y2, x1, y2]]
                area = (x2 - x1) * (y2 - y1) if crowd else area
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "category_id": COCO_CATEGORIES[label][0], "bbox": [x1, y1, x2 - x1, y2 - y1],
                                    "area": area, "iscrowd": int(crowd), "segmentation": segmentation})
        content = {"info": {"description": "generated by deepres.detection.generated"}, "images": listed,
                   "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{name}.json").write_text(json.dumps(content))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("layout", choices=("voc", "coco"))
    parser.add_argument("root")
    parser.add_argument("--images", type=int, default=10, help="VOC2007 trainval's or train2017's images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classes", type=int, default=len(VOC_CLASSES), help="VOC: objects of the first N classes")
    args = parser.parse_args()
    if args.layout == "voc":
        print(write_voc(args.root, args.images, args.seed, classes=args.classes))
    else:
        print(write_coco(args.root, args.images, args.seed))


if __name__ == "__main__":
    main()
