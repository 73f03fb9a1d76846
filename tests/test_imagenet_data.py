"""The ImageNet data pipeline on a generated class-folder set of real image files (mixed sizes and modes)."""
import random
import shutil

import pytest
import torch
from helpers.imagenet import datamodule, run_hooks
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from deepres.data.imagenet import Shard, StreamLoader, TrainSamples
from deepres.data.imagenet_augment import ColourNormalize, Window, crop_batch, draw_window, scale_augment
from deepres.data.imagenet_fake import KINDS, write_image_folder
from deepres.data.imagenet_folder import class_names, read_rgb, scan
from deepres.errors import UserError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("imagenet"), classes=3, train=8, val=2)


@pytest.fixture
def copy(folder, tmp_path):
    """A copy of the generated set that a test may break."""
    return shutil.copytree(folder, tmp_path / "imagenet")


def test_every_kind_of_file_decodes_to_rgb(folder):
    files = sorted((folder / "train" / "class000").iterdir())
    kinds = [Image.open(f).format + "/" + Image.open(f).mode for f in files[:len(KINDS)]]
    assert kinds == ["JPEG/RGB", "JPEG/L", "JPEG/CMYK", "PNG/RGB"]  # all named .JPEG
    for f in files[:len(KINDS)]:
        image = read_rgb(str(f))
        reference = torch.from_numpy(__import__("numpy").array(Image.open(f).convert("RGB"))).permute(2, 0, 1)
        assert image.dtype == torch.uint8 and image.shape == reference.shape
        assert (image.float() - reference.float()).abs().mean() < 3  # the same pixels, up to IDCT rounding


def test_scan_lists_every_image_with_its_class(folder):
    classes = class_names(folder)
    train = scan(folder, "train", classes)
    assert classes == ["class000", "class001", "class002"] and len(train) == 24
    assert train.path(9).endswith("train/class001/001_00001.JPEG") and train.labels[9] == 1


def test_empty_class_folder_is_named(copy):
    for f in (copy / "train" / "class001").iterdir():
        f.unlink()
    with pytest.raises(UserError, match=r"1 class folder.*no images: class001"):
        scan(copy, "train", class_names(copy))


@pytest.mark.parametrize("change, message", [
    (lambda root: shutil.rmtree(root / "val" / "class002"), r"missing from val/: class002"),
    (lambda root: (root / "val" / "n0000").mkdir(), r"in val/ but not in train/: n0000"),
    (lambda root: shutil.rmtree(root / "val"), r"no val/ folder"),
])
def test_val_classes_must_match_train(copy, change, message):
    change(copy)
    with pytest.raises(UserError, match=message):
        datamodule(copy).setup("fit")


def test_missing_train_folder_explains_the_layout(tmp_path):
    with pytest.raises(UserError, match=r"no train/ folder.*root/train/<class>"):
        assert datamodule(tmp_path).num_classes


def smooth_image(height: int = 50, width: int = 70) -> torch.Tensor:
    i, j = torch.arange(float(height))[:, None], torch.arange(float(width))[None, :]
    channels = [128 + 100 * torch.sin(i / 6) * torch.cos(j / 5), 128 + 100 * torch.sin((i + j) / 9), 0 * i + 0 * j]
    return torch.stack(channels).round().to(torch.uint8)


def test_scale_augment_is_resize_then_crop_of_the_window():
    image = smooth_image()
    for seed in range(8):
        out = scale_augment(image, random.Random(seed), crop=32, scale=(36, 60), flip=False)
        # the same draws, done the slow way: resize the whole image, then crop
        rng = random.Random(seed)
        resized = TF.resize(image, rng.randint(36, 60), antialias=True)
        top, left = rng.randint(0, resized.shape[1] - 32), rng.randint(0, resized.shape[2] - 32)
        reference = resized[:, top:top + 32, left:left + 32].float()
        assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
        # the window is rounded to whole source pixels: off by less than a pixel, where 2 pixels make 10 or more
        assert (out.float() - reference).abs().mean() < 4


def test_scale_augment_flips_half_the_time(folder):
    image = read_rgb(str(folder / "train" / "class000" / "000_00000.JPEG"))
    flips = 0
    for seed in range(40):
        plain = scale_augment(image, random.Random(seed), 32, (36, 60), flip=False)
        flipped = scale_augment(image, random.Random(seed), 32, (36, 60), flip=True)
        flips += not torch.equal(plain, flipped)
        assert torch.equal(flipped, plain) or torch.equal(flipped, plain.flip(-1))
    assert 10 <= flips <= 30


def test_a_batch_of_crops_is_torchvisions_crop_of_each_image_in_float():
    """The GPU path's batched crops (data.decode=gpu) against torchvision's resized_crop of each image by the float
    path torchvision takes for uint8 on CUDA (here forced on the CPU): the same pixels to the bit."""
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen) for h, w in
              ((40, 50), (64, 36), (32, 32), (90, 45))]
    windows = [draw_window(*image.shape[-2:], rng, 32, (32, 60), True) for image in images]
    windows[2] = Window(0, 0, 32, True)  # a window of the crop's size: copied, not resized
    reference = []
    for image, w in zip(images, windows):
        out = TF.resized_crop(image.float(), w.top, w.left, w.size, w.size, [32, 32], antialias=True)
        reference.append((out.flip(-1) if w.flip else out).round().to(torch.uint8))
    assert any(w.flip for w in windows) and not all(w.flip for w in windows)
    assert torch.equal(crop_batch(images, windows, 32), torch.stack(reference))


def stream_batches(dm, steps, world=1, rank=0, workers=0, start=0):
    stream = TrainSamples(dm.train, dm.batch_size, rank, world, 0,
                         lambda image, rng: scale_augment(image, rng, 32, (36, 60), True))
    loader = StreamLoader(stream, lambda: start, batch_size=dm.batch_size // world, num_workers=workers)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == steps:
            return batches


def test_training_stream_is_the_same_for_any_workers_ranks_and_resumes(folder):
    dm = datamodule(folder)
    dm.setup("fit")
    one = stream_batches(dm, 8)
    assert [int(b[3][0]) for b in one] == list(range(8)) and all(b[0].shape == (4, 3, 32, 32) for b in one)
    two_workers = stream_batches(dm, 8, workers=2)
    ranks = [stream_batches(dm, 8, world=2, rank=r) for r in (0, 1)]
    resumed = stream_batches(dm, 3, start=5)
    for k in range(8):
        assert torch.equal(two_workers[k][0], one[k][0]) and torch.equal(two_workers[k][1], one[k][1])
        assert torch.equal(torch.cat([ranks[0][k][0], ranks[1][k][0]]), one[k][0])
    for k in range(3):
        assert torch.equal(resumed[k][0], one[5 + k][0])
    # 24 images, batch 4: epoch 0 is steps 0-5, each image once; epoch 1 is another order
    epoch0 = torch.cat([b[1] for b in one[:6]])
    assert sorted(epoch0.tolist()) == sorted(dm.train.labels.tolist())


def test_colour_noise_is_alexnets_pca_offset():
    norm = ColourNormalize(mean=(0.5, 0.5, 0.5), std=None, lighting=0.1)
    images = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    normal = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    out = norm(images, normal)
    offset = 0.1 * 0.2175 * torch.tensor([-0.5675, -0.5808, -0.5836])  # alpha_1 * lambda_1 * p_1
    torch.testing.assert_close(out[0, :, 0, 0], 0.5 + offset)
    torch.testing.assert_close(out[1], torch.full((3, 4, 4), 0.5))
    std = ColourNormalize(mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0), lighting=0.0)(images)
    torch.testing.assert_close(std[0, :, 0, 0], torch.tensor([2.0, 1.0, 0.5]))


def test_colour_constants_reach_the_batches_device_once():
    """On a GPU, moving the constants (mean, PCA) to the device at every batch is a blocking copy per step."""
    norm = ColourNormalize(mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0), lighting=0.1)
    images, normal = torch.zeros((2, 3, 4, 4), dtype=torch.uint8), torch.randn(2, 3)
    norm(images, normal)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        norm(images, normal)
    conversions = [e.name for e in prof.events() if e.cpu_parent is None and e.name in ("aten::to", "aten::_to_copy")]
    assert conversions == ["aten::to"]  # images.float(), nothing else


@pytest.mark.parametrize("mode, shape", [("center", (3, 3, 32, 32)), ("ten_crop", (3, 10, 3, 32, 32)),
                                         ("multi_scale", None)])
def test_eval_views(folder, mode, shape):
    dm = datamodule(folder, eval_mode=mode)
    dm.setup("validate")
    batches = [run_hooks(dm, b) for b in dm.val_dataloader()[-1]]
    x, y = batches[0]
    if shape:
        assert x.shape == shape and x.dtype == torch.float32
    else:  # one image per batch, one (1, 2, 3, H, W) tensor per scale: the image and its mirror image
        assert len(batches) == 6 and len(x) == 2 and min(x[0].shape[-2:]) == 32 and min(x[1].shape[-2:]) == 40
        torch.testing.assert_close(x[0][0, 1], x[0][0, 0].flip(-1))
    assert torch.cat([b[1] for b in batches]).tolist() == [0, 0, 1, 1, 2, 2]


def test_shards_evaluate_every_image_once():
    images = list(range(7))
    shards = [list(Shard(images, rank, 3)) for rank in range(3)]
    assert sorted(sum(shards, [])) == images and [len(Shard(images, r, 3)) for r in range(3)] == [3, 2, 2]


def break_one(root, split="train", name="001_00001.JPEG"):
    victim = root / split / "class001" / name
    victim.write_bytes(b"not an image at all")
    return victim


def test_unreadable_training_image_fails_naming_it(copy):
    victim = break_one(copy)
    dm = datamodule(copy)
    dm.setup("fit")
    with pytest.raises(UserError, match=rf"cannot read the image {victim}.*data.bad_images=skip"):
        for batch in stream_batches(dm, 6):
            run_hooks(dm, batch)


def test_skip_replaces_unreadable_training_images_and_counts_them(copy):
    victim = break_one(copy, name="001_00007.JPEG")  # the last of its class: the next file is class 2's first
    dm = datamodule(copy, bad_images="skip")
    dm.setup("fit")
    labels = []
    for batch in stream_batches(dm, 12):  # two epochs: the file comes twice, is counted once
        x, y = run_hooks(dm, batch)
        assert x.shape == (4, 3, 32, 32)
        labels += y.tolist()
    assert list(dm.skipped) == [str(victim)]
    assert [labels.count(c) for c in range(3)] == [16, 14, 18]  # the stand-in comes with its own label


def test_skip_leaves_unreadable_val_images_out(copy):
    break_one(copy, "val")
    dm = datamodule(copy, bad_images="skip")
    dm.setup("validate")
    labels = torch.cat([run_hooks(dm, b)[1] for b in dm.val_dataloader()[-1]])
    assert labels.tolist() == [0, 0, 1, 2, 2] and len(dm.skipped) == 1


@pytest.mark.parametrize("kw, message", [
    ({"bad_images": "ignore"}, r"data.bad_images='ignore'.*fail, skip"),
    ({"eval_mode": "five_crop"}, r"eval.mode='five_crop'.*center, ten_crop, multi_scale"),
    ({"scale": (30, 60)}, r"data.scale=\[30, 60\].*crop=32"),
])
def test_bad_settings_are_user_errors(folder, kw, message):
    with pytest.raises(UserError, match=message):
        datamodule(folder, **kw)


def test_global_batch_must_split_over_the_processes(folder):
    dm = datamodule(folder, batch_size=6)
    dm.trainer = type("T", (), {"global_rank": 0, "world_size": 4})()
    with pytest.raises(UserError, match=r"data.batch_size=6 is the global batch.*4 processes"):
        dm._shard()
