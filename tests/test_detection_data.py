"""The detection data: PASCAL VOC's devkit layout, COCO's layout, the generated folders, and the DataModule's
training stream (flips, resume) and test loader."""
import json
import shutil
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

from deepres.data.imagenet import StreamLoader
from deepres.detection.coco import read_set
from deepres.detection.datamodule import DetectionDataModule, TrainStream, collate, hflip, read_image
from deepres.detection.generated import COCO_CATEGORIES, colour, draw, main, write_coco, write_voc
from deepres.detection.voc import VOC_CLASSES, read_annotation, read_part, read_sets
from deepres.errors import UserError

SIZES = (64, 96)


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    return write_voc(tmp_path_factory.mktemp("voc"), images=10, sizes=SIZES)


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    return write_coco(tmp_path_factory.mktemp("coco"), images=10, sizes=SIZES)


@pytest.fixture
def voc_copy(voc_root, tmp_path):
    return shutil.copytree(voc_root, tmp_path / "voc")


@pytest.fixture
def coco_copy(coco_root, tmp_path):
    return shutil.copytree(coco_root, tmp_path / "coco")


def datamodule(root, name="voc", **kw) -> DetectionDataModule:
    sets = {} if name == "voc" else {"train_sets": "train2017", "test_set": "val2017"}
    return DetectionDataModule(name=name, root=str(root), **{"batch_size": 4, "eval_batch_size": 3, "num_workers": 0,
                                                            **sets, **kw})


def test_drawn_boxes_are_the_shapes_exact_pixels():
    """In the lossless drawing, each box's edge rows and columns hold the shape's colour and the ring of pixels
    just outside it holds none of it."""
    rng = np.random.default_rng(3)
    for n in range(6):
        labels = [(4 * n + i) % 20 for i in range(4)]
        image, shapes = draw(rng, 120, 100, labels)
        pixels = np.asarray(image).astype(int)
        assert len(shapes) == 4
        for label, ((x1, y1, x2, y2), area) in zip(labels, shapes):
            near = (np.abs(pixels - colour(label)) <= 36).all(-1)
            assert near[y1:y2, x1].any() and near[y1:y2, x2 - 1].any()
            assert near[y1, x1:x2].any() and near[y2 - 1, x1:x2].any()
            ring = np.zeros_like(near)
            ring[max(y1 - 1, 0):y2 + 1, max(x1 - 1, 0):x2 + 1] = True
            ring[y1:y2, x1:x2] = False
            assert near[ring].mean() < 0.01
            assert 0.7 * (x2 - x1) * (y2 - y1) <= area <= (x2 - x1) * (y2 - y1)  # ellipse or rectangle


def test_generated_voc_reads_back(voc_root):
    paths, targets = read_sets(voc_root, "07test", "data.test_set")
    xml = ET.parse(voc_root / "VOC2007" / "Annotations" / f"{targets[0]['image_id']}.xml").getroot()
    first = xml.find("object/bndbox")
    x1, y1, x2, y2 = targets[0]["boxes"][0].tolist()
    assert (x1 + 1, y1 + 1, x2, y2) == tuple(float(first.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
    assert targets[0]["labels"][0] == VOC_CLASSES.index(xml.findtext("object/name")) + 1
    assert paths[0].endswith(f"VOC2007/JPEGImages/{targets[0]['image_id']}.jpg")
    # the class is the colour: the middle of each box is the class's colour
    image, target = read_image(paths[0]), targets[0]
    for (x1, y1, x2, y2), label in zip(target["boxes"].int().tolist(), target["labels"].tolist()):
        middle = image[:, (y1 + y2) // 2, (x1 + x2) // 2].double().numpy()
        assert np.abs(middle - colour(label - 1)).max() < 60
    labels = torch.cat([t["labels"] for t in targets])
    assert set(labels.tolist()) == set(range(1, 21))  # every class in the test set
    difficult = torch.cat([t["difficult"] for t in targets])
    assert 0 < difficult.sum() < len(difficult) and not torch.cat([t["iscrowd"] for t in targets]).any()


def test_the_papers_sets_are_their_parts(voc_root):
    # generated: VOC2007 trainval 10, test 10; VOC2012 trainval 15, test 5 (listed without annotations)
    sizes = {name: len(datamodule(voc_root, train_sets=name)._set("train")) for name in ("07+12", "07++12")}
    assert sizes == {"07+12": 25, "07++12": 35}
    ids = datamodule(voc_root, train_sets="07++12", train_difficult=True)._set("train").image_ids.tolist()
    assert ids[0] == "000001" and ids[19] == "000020" and ids[20] == "2008_000001"
    test12 = datamodule(voc_root, test_set="12test")
    test = test12._set("test")
    assert len(test) == 5 and not test12.test_labelled and datamodule(voc_root).test_labelled
    assert all(len(test.target(i)["boxes"]) == 0 for i in range(5)) and test[0][0].shape[0] == 3
    assert test12.num_classes == 20 and test12.class_names[0] == "aeroplane"


def test_difficult_objects_are_left_out_of_training_only(voc_root):
    dm = datamodule(voc_root)
    train, with_difficult = dm._set("train"), datamodule(voc_root, train_difficult=True)._set("train")
    assert not train.fields["difficult"].any() and with_difficult.fields["difficult"].any()
    assert len(train.fields["labels"]) == len(with_difficult.fields["labels"]) - with_difficult.fields[
        "difficult"].sum()
    assert set(train.fields["labels"].tolist()) == set(range(1, 21))
    assert dm._set("test").fields["difficult"].any()


def write_xml(tmp_path, objects: str, size: str = "<width>100</width><height>80</height>"):
    path = tmp_path / "000042.xml"
    path.write_text(f"<annotation><filename>000042.jpg</filename><size>{size}<depth>3</depth></size>{objects}"
                    "</annotation>")
    return path


def box(name, xmin, ymin, xmax, ymax, difficult=0):
    return (f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin>"
            f"<ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")


def test_devkit_pixels_become_continuous_coordinates(tmp_path):
    """1-based inclusive (xmin, ymin, xmax, ymax) -> (xmin - 1, ymin - 1, xmax, ymax): a box over the whole image is
    (0, 0, W, H); a box passing the edge by a pixel is clipped."""
    path = write_xml(tmp_path, box("dog", 1, 1, 100, 80) + box("person", 48, 10, 52, 30, 1) +
                     box("tvmonitor", 0, 5, 101, 9))
    target = read_annotation(path)
    assert target["boxes"].tolist() == [[0, 0, 100, 80], [47, 9, 52, 30], [0, 4, 100, 9]]
    assert target["labels"].tolist() == [12, 15, 20] and target["difficult"].tolist() == [False, True, False]
    assert target["image_id"] == "000042" and target["boxes"].dtype == torch.float32
    assert target["labels"].dtype == torch.int64 and target["iscrowd"].tolist() == [False] * 3


@pytest.mark.parametrize("objects, size, message", [
    (box("dog", 10, 10, 120, 20), None, r"000042.xml: the dog box .* = \(10, 10, 120, 20\) lies outside its image "
                                        r"of 100 x 80"),
    (box("dog", 10, 10, 10, 20) + box("cat", 30, 10, 20, 20), None, r"000042.xml: the cat box .* is empty"),
    (box("unicorn", 1, 1, 5, 5), None, r"000042.xml has an object of class 'unicorn'.*aeroplane, bicycle.*tvmonitor"),
    (box("dog", 1, 1, "five", 5), None, r"000042.xml gives <xmax>five</xmax>"),
    ("", "", r"000042.xml: an <size> element has no <width>"),
], ids=["outside", "empty", "class", "number", "size"])
def test_bad_annotations_are_named(tmp_path, objects, size, message):
    path = write_xml(tmp_path, objects, *([] if size is None else [size]))
    with pytest.raises(UserError, match=message):
        read_annotation(path)


BOMB = ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY a "' + "a" * 10 + '">' +
        "".join(f'<!ENTITY {n} "{("&" + p + ";") * 10}">' for p, n in zip("abcdefgh", "bcdefghi")) +
        ']><annotation><filename>&i;</filename></annotation>')


def test_entity_bombs_and_external_entities_are_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret")
    outside = f'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file://{secret}">]>' \
              "<annotation><filename>&x;</filename><size><width>1</width><height>1</height></size></annotation>"
    for name, text in (("bomb.xml", BOMB), ("outside.xml", outside)):
        (tmp_path / name).write_text(text)
        with pytest.raises(UserError, match=rf"{name} is not an annotation that parses") as err:
            read_annotation(tmp_path / name)
        assert "secret" not in str(err.value)


def test_bad_voc_files_are_named(voc_copy):
    def error(**kw):
        with pytest.raises(UserError) as err:
            datamodule(voc_copy, **kw).check_files()
        return str(err.value)

    (voc_copy / "VOC2007" / "Annotations" / "000003.xml").write_text("<annotation><size>")
    assert "VOC2007/Annotations/000003.xml is not an annotation that parses" in error()
    (voc_copy / "VOC2007" / "Annotations" / "000003.xml").unlink()
    assert "VOC2007/Annotations/000003.xml is missing" in error()
    (voc_copy / "VOC2007" / "JPEGImages" / "000002.jpg").unlink()
    assert "VOC2007/JPEGImages/000002.jpg is missing (1 of the 10 images listed for VOC2007/trainval" in error()
    (voc_copy / "VOC2012" / "ImageSets" / "Main" / "trainval.txt").unlink()
    message = error(train_sets=["VOC2012/trainval"])
    assert "VOC2012/ImageSets/Main/trainval.txt is missing" in message and "root/VOC2007/JPEGImages/" in message
    shutil.rmtree(voc_copy / "VOC2012" / "JPEGImages")
    assert "VOC2012/JPEGImages is missing" in error(train_sets=["VOC2012/test"])
    with pytest.raises(UserError, match=r"data.train_sets='07\+13' is not a set of PASCAL VOC; valid: 07\+12, "):
        datamodule(voc_copy, train_sets="07+13")
    with pytest.raises(UserError, match=r"data.name='pascal' is not a detection data set; valid: voc"):
        datamodule(voc_copy, name="pascal")


def test_generated_coco_reads_back(coco_root):
    data = json.loads((coco_root / "annotations" / "instances_val2017.json").read_text())
    paths, targets, categories = read_set(coco_root, "val2017", train=False)
    assert categories.ids == [1, 3, 18, 44, 62] and categories.names == ["person", "car", "dog", "bottle", "chair"]
    assert categories.labels == {1: 1, 3: 2, 18: 3, 44: 4, 62: 5}
    assert [t["image_id"] for t in targets] == [str(i["id"]) for i in data["images"]] and len(paths) == 5
    assert len(targets[0]["boxes"]) == 0 and targets[1]["iscrowd"].tolist() == [True]
    first = next(a for a in data["annotations"] if a["image_id"] == data["images"][2]["id"])
    x, y, w, h = first["bbox"]
    assert targets[2]["boxes"][0].tolist() == [x, y, x + w, y + h]
    assert targets[2]["labels"][0] == categories.labels[first["category_id"]]
    assert sum(len(t["boxes"]) for t in targets) == len(data["annotations"])
    # training: no crowd box, and neither the image without boxes nor the one with only a crowd box
    train_paths, train, _ = read_set(coco_root, "val2017", train=True)
    assert [t["image_id"] for t in train] == [t["image_id"] for t in targets[2:]]
    assert sum(len(t["boxes"]) for t in train) == sum(int((~t["iscrowd"]).sum()) for t in targets)
    assert not any(t["iscrowd"].any() for t in train) and train_paths[0].endswith(data["images"][2]["file_name"])
    dm = datamodule(coco_root, name="coco")
    assert dm.num_classes == len(COCO_CATEGORIES) and dm.class_names[2] == "dog" and dm.test_labelled


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("change, message", [
    (lambda d: d["annotations"][3].update(bbox=[50, 10, 60, 10]),
     r"instances_val2017.json: annotation 4 of image 0+\d+.jpg has bbox \[50, 10, 60, 10\], which lies outside"),
    (lambda d: d["annotations"][3].update(category_id=2),
     r"instances_val2017.json: annotation 4 .* has category_id 2, which is not one of the file's categories: "
     r"1, 3, 18, 44, 62"),
    (lambda d: d["annotations"][3].update(image_id=5),
     r"instances_val2017.json: annotation 4 is of image_id 5, which is not one of the file's images"),
    (lambda d: d["images"][2].update(file_name="gone.jpg"), r"val2017/gone.jpg is missing \(1 of the 5 images"),
], ids=["outside", "category", "image", "file"])
def test_bad_coco_annotations_are_named(coco_copy, change, message):
    edit_json(coco_copy / "annotations" / "instances_val2017.json", change)
    with pytest.raises(UserError, match=message):
        datamodule(coco_copy, name="coco").check_files()


def test_bad_coco_files_are_named(coco_copy):
    annotations = coco_copy / "annotations" / "instances_val2017.json"
    annotations.write_text('{"images": [')
    with pytest.raises(UserError, match=r"instances_val2017.json is not JSON that parses"):
        datamodule(coco_copy, name="coco").check_files()
    annotations.unlink()
    with pytest.raises(UserError, match=r"instances_val2017.json is missing.*root/annotations/instances_"):
        assert datamodule(coco_copy, name="coco").num_classes
    shutil.rmtree(coco_copy / "train2017")
    with pytest.raises(UserError, match=r"train2017 is missing: it holds the images of instances_train2017.json"):
        datamodule(coco_copy, name="coco").check_files()


def test_unreadable_image_and_too_large_batch_are_named(voc_copy):
    (voc_copy / "VOC2007" / "JPEGImages" / "000001.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(UserError, match=r"cannot read the image .*VOC2007/JPEGImages/000001.jpg"):
        datamodule(voc_copy, train_sets=["VOC2007/trainval"])._set("train")[0]
    with pytest.raises(UserError, match=r"data.batch_size=26 is more than the 25 training images"):
        datamodule(voc_copy, batch_size=26).setup("fit")


def test_hflip_mirrors_the_image_and_its_boxes():
    image = torch.zeros(3, 20, 100, dtype=torch.uint8)
    image[:, 5:20, 10:30] = 200
    target = {"boxes": torch.tensor([[10.0, 5.0, 30.0, 20.0]]), "labels": torch.tensor([3]), "image_id": "1"}
    flipped, moved = hflip(image, target)
    assert moved["boxes"].tolist() == [[70.0, 5.0, 90.0, 20.0]] and moved["labels"].tolist() == [3]
    assert (flipped[:, 5:20, 70:90] == 200).all() and flipped.sum() == image.sum()
    assert target["boxes"].tolist() == [[10.0, 5.0, 30.0, 20.0]]  # the original is left alone
    again = hflip(flipped, moved)
    assert torch.equal(again[0], image) and torch.equal(again[1]["boxes"], target["boxes"])


def stream(dm, steps, world=1, rank=0, workers=0, start=0):
    train = TrainStream(dm._set("train"), dm.batch_size, rank, world, dm.seed, dm.flip)
    loader = StreamLoader(train, lambda: start, batch_size=dm.batch_size // world, num_workers=workers,
                          collate_fn=collate)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == steps:
            return batches


def same(a, b) -> bool:
    return (len(a[0]) == len(b[0]) and all(torch.equal(x, y) for x, y in zip(a[0], b[0])) and
            all(torch.equal(s["boxes"], t["boxes"]) and s["image_id"] == t["image_id"] for s, t in zip(a[1], b[1])))


def test_training_stream_is_the_same_for_any_workers_ranks_and_resumes(voc_root):
    dm = datamodule(voc_root)  # 25 training images, batch 4: epoch 0 is steps 0-5
    one = stream(dm, 8)
    assert [len(images) for images, _ in one] == [4] * 8 and isinstance(one[0][1][0]["boxes"], torch.Tensor)
    resumed = stream(dm, 3, start=5)
    ranks = [stream(dm, 8, world=2, rank=r) for r in (0, 1)]
    two_workers = stream(dm, 8, workers=2)
    assert all(same(resumed[k], one[5 + k]) for k in range(3))
    assert all(same(two_workers[k], one[k]) for k in range(8))
    assert all(same((ranks[0][k][0] + ranks[1][k][0], ranks[0][k][1] + ranks[1][k][1]), one[k]) for k in range(8))
    epoch0 = [t["image_id"] for _, targets in one[:6] for t in targets]
    assert len(set(epoch0)) == 24 and set(epoch0) <= set(dm._set("train").image_ids.tolist())
    # about half the images come mirrored, boxes and all; without data.flip none does
    train, mirrored = dm._set("train"), 0
    index = {image_id: i for i, image_id in enumerate(train.image_ids.tolist())}
    for images, targets in one:
        for image, target in zip(images, targets):
            plain = train[index[target["image_id"]]]
            mirror = hflip(*plain)
            got = ([image], [target])
            assert same(got, ([plain[0]], [plain[1]])) or same(got, ([mirror[0]], [mirror[1]]))
            mirrored += not torch.equal(image, plain[0])
    assert 8 <= mirrored <= 24
    unflipped = stream(datamodule(voc_root, flip=False), 2)
    assert all(torch.equal(image, train[index[t["image_id"]]][0]) for images, targets in unflipped
               for image, t in zip(images, targets))


def test_test_loader_reads_each_image_once_in_order(coco_root):
    dm = datamodule(coco_root, name="coco")
    dm.setup("validate")
    (loader,) = dm.val_dataloader()
    batches = list(loader)
    assert [len(images) for images, _ in batches] == [3, 2] and dm.eval_names == ["test"]
    ids = [t["image_id"] for _, targets in batches for t in targets]
    assert ids == dm._set("test").image_ids.tolist() and len(set(ids)) == 5
    image = batches[0][0][2]
    assert image.dtype == torch.uint8 and image.shape[0] == 3 and SIZES[0] <= image.shape[1] <= SIZES[1]


def test_the_entry_point_writes_both_layouts(tmp_path, monkeypatch, capsys):
    for layout in ("voc", "coco"):
        monkeypatch.setattr(sys, "argv", ["generated", layout, str(tmp_path / layout), "--images", "2"])
        main()
        assert capsys.readouterr().out.strip() == str(tmp_path / layout)
    assert len(list((tmp_path / "voc" / "VOC2012" / "JPEGImages").iterdir())) == 3 + 1
    assert len(json.loads((tmp_path / "coco" / "annotations" / "instances_train2017.json").read_text())["images"]) == 2


def test_a_generated_voc_folder_can_hold_fewer_classes(tmp_path):
    """--classes N: objects of the first N classes only, so a short run sees many of each."""
    root = write_voc(tmp_path, images=10, sizes=SIZES, classes=3)
    for part in ("VOC2007/trainval", "VOC2007/test", "VOC2012/trainval"):
        _, targets = read_part(root, part)
        assert {int(label) for t in targets for label in t["labels"]} == {1, 2, 3}
