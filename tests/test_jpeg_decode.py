"""data.decode=gpu against data.decode=cpu. The device path runs here on the CPU (decode_jpeg(device="cpu"), the
same libjpeg-turbo as the CPU path), so its batches must equal the CPU path's to the bit: the same windows, scales,
flips and colour noise, and the same test views. On a GPU only nvJPEG's IDCT rounding differs."""
import io

import pytest
import torch
import torchvision.io
from helpers.config import compose_config as composed
from helpers.imagenet import datamodule, run_hooks
from PIL import Image

from deepres.data import jpeg
from deepres.data.imagenet_fake import make_image, write_image_folder
from deepres.errors import UserError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Every kind of file: RGB, greyscale and CMYK JPEGs, PNGs named .JPEG, progressive and truncated JPEGs."""
    root = write_image_folder(tmp_path_factory.mktemp("imagenet"), classes=3, train=8, val=3)
    for split in ("train", "val"):
        progressive = root / split / "class002" / "002_00000.JPEG"  # an RGB one
        Image.open(progressive).save(progressive, "JPEG", progressive=True)
    cut = root / "train" / "class001" / "001_00004.JPEG"  # an RGB one
    cut.write_bytes(cut.read_bytes()[:-200])
    return root


def encoded(image: Image.Image, **save) -> torch.Tensor:
    out = io.BytesIO()
    image.save(out, **save)
    return torch.frombuffer(bytearray(out.getvalue()), dtype=torch.uint8)


def test_only_plain_colour_jpegs_go_to_the_device():
    rgb = make_image(__import__("numpy").random.default_rng(0), 70, 50, 0, 3)
    assert jpeg.colour_jpeg_size(encoded(rgb, format="JPEG")) == (50, 70)
    assert jpeg.colour_jpeg_size(encoded(rgb, format="JPEG", progressive=True)) == (50, 70)
    with_exif = encoded(rgb, format="JPEG", exif=Image.Exif().tobytes(), icc_profile=b"\0" * 3000)
    assert jpeg.colour_jpeg_size(with_exif) == (50, 70)
    for other in (encoded(rgb.convert("L"), format="JPEG"), encoded(rgb.convert("CMYK"), format="JPEG"),
                  encoded(rgb, format="PNG"), encoded(rgb, format="JPEG")[:-300], torch.zeros(100, dtype=torch.uint8)):
        assert jpeg.colour_jpeg_size(other) is None


def batches(dm, steps):
    out = []
    for batch in dm.train_dataloader():
        out.append(run_hooks(dm, batch))
        if len(out) == steps:
            return out


@pytest.mark.parametrize("workers", [0, 2])
def test_device_path_trains_on_the_cpu_paths_batches(folder, workers):
    cpu, device = (datamodule(folder, decode=d, num_workers=workers, bad_images="skip") for d in ("cpu", "gpu"))
    for dm in (cpu, device):
        dm.setup("fit")
    assert cpu.decoder is None and device.decoder.device == torch.device("cpu")
    for (x, y), (x_dev, y_dev) in zip(batches(cpu, 12), batches(device, 12)):  # two epochs of 24 images
        assert x.shape == (4, 3, 32, 32) and torch.equal(x, x_dev) and torch.equal(y, y_dev)
    # greyscale, CMYK and PNG files (3 in 4 of the generated), the truncated one: decoded on the CPU
    assert 2 * (18 + 1) <= device.decoder.cpu_decoded <= 2 * (18 + 1) + 2 * workers * 4


@pytest.mark.parametrize("mode", ["center", "ten_crop", "multi_scale"])
def test_device_path_evaluates_the_same_views(folder, mode):
    cpu, device = (datamodule(folder, decode=d, eval_mode=mode) for d in ("cpu", "gpu"))
    for dm in (cpu, device):
        dm.setup("validate")
    views = [[run_hooks(dm, b) for b in dm.val_dataloader()[-1]] for dm in (cpu, device)]
    assert len(views[0]) == len(views[1]) > 0
    for (x, y), (x_dev, y_dev) in zip(*views):
        assert torch.equal(y, y_dev)
        if mode == "multi_scale":  # one tensor per scale
            assert len(x) == len(x_dev) == 2 and all(torch.equal(a, b) for a, b in zip(x, x_dev))
        else:
            assert torch.equal(x, x_dev)
    assert device.decoder.cpu_decoded == 9 - 3  # the greyscale, CMYK and PNG files of val/


def test_an_image_the_device_refuses_is_decoded_on_the_cpu(folder, monkeypatch):
    """nvJPEG refuses some files that libjpeg-turbo reads (rare subsamplings, restart-marker damage)."""
    real = torchvision.io.decode_jpeg
    refused = {"batches": 0, "files": 0}

    def refuse_some(data, **kw):
        if isinstance(data, list):
            refused["batches"] += 1
        elif int(data.sum()) % 2:
            refused["files"] += 1
        else:
            return real(data, **kw)
        raise RuntimeError("nvjpegDecodeBatched failed: the image is not supported")

    cpu, device = (datamodule(folder, decode=d, bad_images="skip") for d in ("cpu", "gpu"))
    for dm in (cpu, device):
        dm.setup("fit")
    reference = batches(cpu, 12)
    monkeypatch.setattr(jpeg, "decode_jpeg", refuse_some)
    for (x, y), (x_dev, y_dev) in zip(reference, batches(device, 12)):
        assert torch.equal(x, x_dev) and torch.equal(y, y_dev)
    assert refused["batches"] >= 6 and refused["files"] >= 2
    assert device.decoder.cpu_decoded == 2 * (18 + 1) + refused["files"]  # the workers' and the refused


def test_unknown_decode_and_gpu_decode_off_cuda_are_user_errors(folder):
    with pytest.raises(UserError, match=r"data.decode='nvjpeg' is unknown; valid: cpu, gpu"):
        datamodule(folder, decode="nvjpeg")
    dm = datamodule(folder, decode="gpu")
    dm.trainer = type("T", (), {"strategy": type("S", (), {"root_device": torch.device("cpu")})()})()
    with pytest.raises(UserError, match=r"data.decode=gpu .* trains on cpu; use data.decode=cpu"):
        dm.setup("fit")


def test_decode_defaults_to_gpu_on_cuda_and_to_cpu_elsewhere(monkeypatch):
    imagenet = ("data=imagenet", "model=imagenet_resnet")
    assert composed(*imagenet).data.decode == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # only the defaults are read
    assert composed(*imagenet).data.decode == "gpu"
    assert composed(*imagenet, "trainer.accelerator=cpu").data.decode == "cpu"
