"""MS COCO in its own layout, root/<set>/*.jpg and root/annotations/instances_<set>.json (train2017 and val2017;
the paper's are train2014 and val2014), read with json.load: data, never code.

Categories become labels 1..K in the order of their ids. Training leaves out crowd boxes, boxes without area and
the images left with no box (as torchvision's detection references do); evaluation keeps every image and box, crowd
boxes flagged. Every problem is a UserError naming the file, found by reading the sets before training."""
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from deepres.detection.voc import TOLERANCE, empty_target
from deepres.errors import UserError

IMAGE_FOLDER = "{set}"
ANNOTATION_FILE = "annotations/instances_{set}.json"
LAYOUT = ("COCO is read in its own layout: root/train2017/*.jpg, root/val2017/*.jpg and root/annotations/"
          "instances_{train,val}2017.json (data.image_folder and data.annotation_file name them from the set)")


@dataclass
class Categories:
    """COCO's categories in the order of their ids: label i + 1 is category ids[i], named names[i]."""

    ids: list[int]
    names: list[str]
    labels: dict[int, int] = field(init=False)  # category id -> label

    def __post_init__(self):
        self.labels = {category: i + 1 for i, category in enumerate(self.ids)}


def _load(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path} is missing: the annotations of a COCO set. {LAYOUT}.")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not JSON that parses ({err}); replace it with COCO's annotation file.") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations",
                                                                                      "categories")):
        raise UserError(f"{path} is not a COCO annotation file: it needs lists of images, annotations and "
                        "categories (COCO's instances_<set>.json).")
    return data


def _categories(data: dict, path: Path) -> Categories:
    try:
        ordered = sorted((int(c["id"]), str(c["name"])) for c in data["categories"])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path} has a category without an integer id and a name; replace it with COCO's "
                        "annotation file.") from None
    if not ordered:
        raise UserError(f"{path} lists no categories; replace it with COCO's annotation file.")
    return Categories([i for i, _ in ordered], [name for _, name in ordered])


def _box(annotation: dict, image: dict, categories: Categories, path: Path) -> tuple[list[float], int]:
    """(x1, y1, x2, y2) clipped to the image, and the label, of one annotation whose bbox is [x, y, w, h]."""
    what = f"{path}: annotation {annotation.get('id')} of image {image['file_name']}"
    category = annotation.get("category_id")
    if category not in categories.labels:
        raise UserError(f"{what} has category_id {category!r}, which is not one of the file's categories: "
                        f"{', '.join(map(str, categories.ids))}.")
    try:
        x, y, w, h = (float(v) for v in annotation["bbox"])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{what} has no bbox [x, y, width, height] of four numbers.") from None
    width, height = image["width"], image["height"]
    if w < 0 or h < 0:
        raise UserError(f"{what} has bbox [{x:g}, {y:g}, {w:g}, {h:g}], whose width or height is negative. Fix or "
                        "remove the box.")
    if x < -TOLERANCE or y < -TOLERANCE or x + w > width + TOLERANCE or y + h > height + TOLERANCE:
        raise UserError(f"{what} has bbox [{x:g}, {y:g}, {w:g}, {h:g}], which lies outside its image of {width} x "
                        f"{height} pixels (width x height). Fix the box or the image's size.")
    box = [max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)]
    return box, categories.labels[category]


def _images(data: dict, folder: Path, path: Path) -> dict[int, dict]:
    """The file's images by id, each with its file in `folder`."""
    if not folder.is_dir():
        raise UserError(f"{folder} is missing: it holds the images of {path.name}. {LAYOUT}.")
    try:
        images = {int(image["id"]): {"file_name": str(image["file_name"]), "width": float(image["width"]),
                                     "height": float(image["height"])} for image in data["images"]}
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path} has an image without an integer id, a file_name, a width and a height; replace it "
                        "with COCO's annotation file.") from None
    present = set(os.listdir(folder))
    missing = [image["file_name"] for image in images.values() if image["file_name"] not in present]
    if missing:
        raise UserError(f"{folder / missing[0]} is missing ({len(missing)} of the {len(images)} images of {path} "
                        f"are): restore the set's images in {folder}.")
    return images


def read_set(root: str | Path, name: str, train: bool, image_folder: str = IMAGE_FOLDER,
             annotation_file: str = ANNOTATION_FILE) -> tuple[list[str], list[dict], Categories]:
    """The image paths and targets of one set in the order of the image ids, and its categories. With `train`,
    crowd boxes and boxes without area are left out, and so are the images left with no box."""
    root = Path(root).expanduser()
    path = root / annotation_file.format(set=name)
    data = _load(path)
    categories = _categories(data, path)
    images = _images(data, root / image_folder.format(set=name), path)
    objects = defaultdict(list)
    for annotation in data["annotations"]:
        image = images.get(annotation.get("image_id"))
        if image is None:
            raise UserError(f"{path}: annotation {annotation.get('id')} is of image_id "
                            f"{annotation.get('image_id')!r}, which is not one of the file's images.")
        box, label = _box(annotation, image, categories, path)
        crowd = bool(annotation.get("iscrowd", 0))
        if not train or (not crowd and box[2] > box[0] and box[3] > box[1]):
            objects[annotation["image_id"]].append((box, label, crowd))
    paths, targets = [], []
    for image_id in sorted(images):
        boxes = objects[image_id]
        if train and not boxes:
            continue
        paths.append(str(root / image_folder.format(set=name) / images[image_id]["file_name"]))
        target = empty_target(str(image_id))
        if boxes:
            target.update(boxes=torch.tensor([b for b, _, _ in boxes], dtype=torch.float32),
                          labels=torch.tensor([label for _, label, _ in boxes]),
                          difficult=torch.zeros(len(boxes), dtype=torch.bool),
                          iscrowd=torch.tensor([crowd for _, _, crowd in boxes]))
        targets.append(target)
    return paths, targets, categories
