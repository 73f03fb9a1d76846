"""PASCAL VOC in the devkit's layout, root/VOC2007/{JPEGImages, Annotations, ImageSets/Main/<split>.txt} (VOC2012
alike), and the paper's sets: train on "07+12" to test on VOC 2007 test, on "07++12" to test on VOC 2012 test.

Annotations are read by xml.etree.ElementTree (expat, which resolves no external entity and refuses entity
expansion bombs). Every problem is a UserError naming the file, found by reading the sets before training."""
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import torch

from deepres.errors import UserError

# the devkit's order: label i + 1 is VOC_CLASSES[i] (0 is background)
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
VOC_SETS = {
    "07+12": ("VOC2007/trainval", "VOC2012/trainval"),
    "07++12": ("VOC2007/trainval", "VOC2007/test", "VOC2012/trainval"),
    "07test": ("VOC2007/test",),
    "12test": ("VOC2012/test",),  # scored by the evaluation server: images only
}
UNLABELLED = ("VOC2012/test",)
LAYOUT = ("PASCAL VOC is read in the devkit's layout: root/VOC2007/JPEGImages/<id>.jpg, root/VOC2007/Annotations/"
          "<id>.xml and root/VOC2007/ImageSets/Main/<split>.txt (one id a line), and root/VOC2012/... alike")
TOLERANCE = 1.0  # pixels a box may pass its image's edge (it is clipped there) before it is an error
_PART = re.compile(r"VOC\d{4}/\w+")


def parts(sets: str | Sequence[str], key: str) -> list[str]:
    """The "VOCyyyy/split" parts of `sets`: a name of VOC_SETS, or a list of parts (or of names)."""
    names = [sets] if isinstance(sets, str) else list(sets)
    found = []
    for name in names:
        if name in VOC_SETS:
            found += VOC_SETS[name]
        elif _PART.fullmatch(str(name)):
            found.append(name)
        else:
            raise UserError(f"{key}={name!r} is not a set of PASCAL VOC; valid: {', '.join(VOC_SETS)} (the paper's) "
                            "or a list of parts like [VOC2007/trainval, VOC2012/trainval].")
    return found


def empty_target(image_id: str) -> dict:
    return {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
            "difficult": torch.zeros(0, dtype=torch.bool), "iscrowd": torch.zeros(0, dtype=torch.bool),
            "image_id": image_id}


def _field(element: ET.Element, name: str, path: Path) -> str:
    text = element.findtext(name)
    if text is None or not text.strip():
        raise UserError(f"{path}: an <{element.tag}> element has no <{name}>, which every VOC annotation gives; "
                        "replace the file with the devkit's.")
    return text.strip()


def _number(element: ET.Element, name: str, path: Path) -> float:
    text = _field(element, name, path)
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{path} gives <{name}>{text}</{name}>, which is not a number; replace the file with the "
                        "devkit's.") from None


def read_annotation(path: str | Path) -> dict:
    """The target of one annotation XML: boxes (xmin - 1, ymin - 1, xmax, ymax) from the devkit's 1-based
    inclusive pixels, labels 1..20 by VOC_CLASSES, the difficult flags; image_id is the file's stem."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise UserError(f"{path} is not an annotation that parses ({err}); replace it with the devkit's "
                        "(annotations are plain XML, without entity declarations).") from None
    size = root.find("size")
    if size is None:
        raise UserError(f"{path} has no <size> (the image's width and height), which every VOC annotation gives; "
                        "replace the file with the devkit's.")
    width, height = _number(size, "width", path), _number(size, "height", path)
    boxes, labels, difficult = [], [], []
    for obj in root.findall("object"):
        name = _field(obj, "name", path)
        if name not in VOC_CLASSES:
            raise UserError(f"{path} has an object of class {name!r}, which is not one of PASCAL VOC's 20: "
                            f"{', '.join(VOC_CLASSES)}.")
        box = obj.find("bndbox")
        if box is None:
            raise UserError(f"{path} has an object ({name}) without <bndbox>; replace the file with the devkit's.")
        xmin, ymin, xmax, ymax = (_number(box, key, path) for key in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append(_inside((xmin - 1, ymin - 1, xmax, ymax), width, height,
                             f"{path}: the {name} box (xmin, ymin, xmax, ymax) = ({xmin:g}, {ymin:g}, {xmax:g}, "
                             f"{ymax:g})"))
        labels.append(VOC_CLASSES.index(name) + 1)
        difficult.append(obj.findtext("difficult", "0").strip() == "1")
    target = empty_target(path.stem)
    if boxes:
        target.update(boxes=torch.tensor(boxes, dtype=torch.float32), labels=torch.tensor(labels),
                      difficult=torch.tensor(difficult), iscrowd=torch.zeros(len(boxes), dtype=torch.bool))
    return target


def _inside(box: tuple[float, ...], width: float, height: float, what: str) -> tuple[float, ...]:
    """The box (x1, y1, x2, y2) clipped to the image; a UserError saying `what` it is when it is empty or passes the
    image's edge by more than TOLERANCE."""
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        raise UserError(f"{what} is empty: its right and bottom edges must lie beyond its left and top ones. Fix or "
                        "remove the box.")
    if x1 < -TOLERANCE or y1 < -TOLERANCE or x2 > width + TOLERANCE or y2 > height + TOLERANCE:
        raise UserError(f"{what} lies outside its image of {width:g} x {height:g} pixels (width x height). Fix the "
                        "box or the image's size.")
    return max(x1, 0.0), max(y1, 0.0), min(x2, width), min(y2, height)


def _folder(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise UserError(f"{path} is missing: it holds {what}. {LAYOUT}.")
    return path


def split_ids(root: str | Path, part: str) -> list[str]:
    """The image ids listed in root/VOCyyyy/ImageSets/Main/<split>.txt for part "VOCyyyy/split"."""
    year, split = part.split("/")
    listing = Path(root).expanduser() / year / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        raise UserError(f"{listing} is missing: it lists the images of {part}. {LAYOUT}.")
    ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    if not ids:
        raise UserError(f"{listing} lists no images; it should list {part}'s image ids, one a line. {LAYOUT}.")
    return ids


def read_part(root: str | Path, part: str) -> tuple[list[str], list[dict]]:
    """The JPEG paths and targets of one part, in its list's order (an unlabelled part's targets have no boxes)."""
    folder = Path(root).expanduser() / part.split("/")[0]
    ids = split_ids(root, part)
    images = _folder(folder / "JPEGImages", f"{part}'s images")
    jpegs = set(os.listdir(images))
    missing = [i for i in ids if f"{i}.jpg" not in jpegs]
    if missing:
        raise UserError(f"{images / (missing[0] + '.jpg')} is missing ({len(missing)} of the {len(ids)} images "
                        f"listed for {part} are): restore the devkit's JPEGImages/, or list only the images present "
                        f"in ImageSets/Main/{part.split('/')[1]}.txt.")
    paths = [str(images / f"{i}.jpg") for i in ids]
    if part in UNLABELLED:
        return paths, [empty_target(i) for i in ids]
    annotations = _folder(folder / "Annotations", f"{part}'s annotations")
    xmls = set(os.listdir(annotations))
    for i in ids:
        if f"{i}.xml" not in xmls:
            raise UserError(f"{annotations / (i + '.xml')} is missing: the annotation of an image listed for {part}. "
                            f"{LAYOUT}.")
    return paths, [read_annotation(annotations / f"{i}.xml") for i in ids]


def read_sets(root: str | Path, sets: str | Sequence[str], key: str) -> tuple[list[str], list[dict]]:
    """The JPEG paths and targets of every part of `sets` (see `parts`), one after the other."""
    paths, targets = [], []
    for part in parts(sets, key):
        more_paths, more_targets = read_part(root, part)
        paths += more_paths
        targets += more_targets
    return paths, targets
