import numpy as np
import pytest
import torch
from torchvision import transforms

from deepres.data.gpu_augment import TrainBatches, resident

N = 4000
CPU = torch.device("cpu")


def random_crop_flip(x: torch.Tensor, padding: int, flip: bool, seed: int, channels_last: bool = False):
    """One batch of the training stream over the images x (all of them, in order of the epoch's draw)."""
    images = resident(x, lambda im: im, padding, CPU, channels_last)
    return TrainBatches(images, torch.arange(len(x)), len(x), padding, flip, seed, lambda: 0).batch(0)


def position_image() -> torch.Tensor:
    """A 1x8x8 image whose pixel values are 1 + their index, so a crop tells its offset and flip."""
    return (torch.arange(64, dtype=torch.float32) + 1).reshape(1, 8, 8)


def decode(crop: torch.Tensor) -> tuple[int, int, bool]:
    """(row offset, col offset, mirrored) of an 8x8 crop of the position image zero-padded by 2.

    A crop holds padded[ro + i, co + j], or padded[ro + i, co + 7 - j] when mirrored."""
    values = crop[0]
    rows, cols = torch.nonzero(values, as_tuple=True)
    i, j = rows[0].item(), cols[0].item()  # the first visible pixel; at least 6 visible columns follow it
    v = int(values[i, j].item()) - 1
    r, c = divmod(v, 8)
    mirrored = bool(values[i, j + 1] < values[i, j])
    return r + 2 - i, (c + 2 - 7 + j) if mirrored else (c + 2 - j), mirrored


def histograms(samples: list[tuple[int, int, bool]]) -> tuple[np.ndarray, float]:
    grid = np.zeros((5, 5))
    for r, c, _ in samples:
        grid[r, c] += 1
    return grid / len(samples), float(np.mean([f for *_, f in samples]))


def test_crops_and_flips_match_torchvision():
    image = position_image()
    reference = transforms.Compose([transforms.RandomCrop(8, padding=2), transforms.RandomHorizontalFlip()])
    torch.manual_seed(0)
    ours, _ = random_crop_flip(image.expand(N, 1, 8, 8), 2, True, seed=1)
    theirs = [decode(reference(image)) for _ in range(N)]
    our_grid, our_flip = histograms([decode(c) for c in ours])
    their_grid, their_flip = histograms(theirs)
    # 25 offsets, each with probability 1/25; flips with probability 1/2: both agree within sampling noise
    assert np.abs(our_grid - 1 / 25).max() < 0.012 and np.abs(their_grid - 1 / 25).max() < 0.012
    assert np.abs(our_grid - their_grid).max() < 0.016
    assert abs(our_flip - 0.5) < 0.03 and abs(their_flip - 0.5) < 0.03


def test_each_image_draws_independently():
    crops, _ = random_crop_flip(position_image().expand(N, 1, 8, 8), 2, True, seed=5)
    draws = [decode(c) for c in crops]
    pairs = np.array([[a[0] * 5 + a[1], b[0] * 5 + b[1]] for a, b in zip(draws[::2], draws[1::2])])
    assert np.corrcoef(pairs.T)[0, 1] < 0.1
    assert len(set(draws)) == 50  # every offset, flipped or not


def test_crop_keeps_pixels_and_padding_is_zero():
    x = torch.rand(16, 3, 32, 32) + 1
    out, index = random_crop_flip(x, 4, False, seed=0)
    for i in range(16):
        inside = out[i][out[i] > 0]
        assert inside.numel() >= 3 * 28 * 28
        assert torch.isin(inside, x[index[i]]).all()


def test_channels_last_batches_are_the_same_crops_laid_out_channels_last():
    x = torch.rand(16, 3, 32, 32)
    nchw, nhwc = random_crop_flip(x, 4, True, seed=3), random_crop_flip(x, 4, True, seed=3, channels_last=True)
    assert nchw[0].is_contiguous() and nhwc[0].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(nchw[0], nhwc[0]) and torch.equal(nchw[1], nhwc[1])


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_batch_is_two_kernels(channels_last):
    """The crops of a batch are one gather (its labels another): no padding, normalising or index arithmetic per
    batch, which on a GPU would be a kernel launch each."""
    s = stream(channels_last=channels_last)
    s.batch(0)  # the epoch's draws
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        s.batch(1)
    computing = [e.name for e in prof.events() if e.cpu_parent is None and e.name not in VIEWS]
    assert computing == ["aten::index", "aten::index"], computing


VIEWS = {"aten::select", "aten::slice", "aten::unsqueeze", "aten::permute"}


def stream(n=100, batch=32, seed=0, start=0, channels_last=False):
    images = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 3, 32, 32).contiguous()
    padded = resident(images, lambda im: im.float(), 4, CPU, channels_last)
    return TrainBatches(padded, torch.arange(n), batch, 4, True, seed, lambda: start)


def test_stream_covers_each_epoch_once_and_is_a_function_of_the_step():
    s = stream()
    it = iter(s)
    labels = torch.cat([next(it)[1] for _ in range(3)])
    assert len(set(labels.tolist())) == 96  # 3 batches of 32 from 100 images, no repeats in an epoch
    resumed = next(iter(stream(start=2)))
    fresh = s.batch(2)
    assert torch.equal(resumed[0], fresh[0]) and torch.equal(resumed[1], fresh[1])
    assert not torch.equal(stream(seed=1).batch(2)[1], fresh[1])
    assert not torch.equal(s.batch(3)[1][:32], s.batch(0)[1])  # a new order in the next epoch
