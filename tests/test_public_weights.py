"""Public checkpoints in the paper's nets (model.weights, model.weights_format): torchvision's ResNets and the most
used CIFAR reproduction's (akamaster/pytorch_resnet_cifar10, whose option A pads zeros on both sides of the
identity), both built here from their authors' layouts (no download), give the same logits in our nets."""
import csv
import json

import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers.config import compose_config
from helpers.train import run_entry
from torch import nn

from deepres.data.cifar import Normalize
from deepres.errors import UserError
from deepres.models import CifarResNet, ImageNetResNet, build
from deepres.models.public_weights import load_weights


class TheirBlock(nn.Module):
    """The reproduction's BasicBlock with option A: F.pad(x[:, :, ::2, ::2], planes // 4 zeros on both sides)."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes // 4 if stride != 1 or in_planes != planes else 0

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad)) if self.pad else x
        return F.relu(out + shortcut)


class TheirResNet(nn.Module):
    """The reproduction's CIFAR ResNet (conv1, bn1, layer1-3, linear), as its resnet.py names the layers."""

    def __init__(self, n: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        widths, layers, in_planes = (16, 32, 64), [], 16
        for i, width in enumerate(widths):
            blocks = []
            for b in range(n):
                blocks.append(TheirBlock(in_planes, width, 2 if i > 0 and b == 0 else 1))
                in_planes = width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, 10)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(F.relu(self.bn1(self.conv1(x))))))
        return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))


def randomised(net: nn.Module) -> nn.Module:
    """Random weights and BN statistics (not the identity), in fp64 and eval mode."""
    torch.manual_seed(0)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5), module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 1.5), module.bias.uniform_(-0.5, 0.5)
    return net.double().eval()


@pytest.mark.parametrize("depth", [20, 32])
def test_a_cifar_reproduction_checkpoint_gives_the_same_logits(tmp_path, depth):
    theirs = randomised(TheirResNet((depth - 2) // 6))
    path = tmp_path / f"resnet{depth}.th"  # as the reproduction saves: DataParallel keys in {"state_dict": ...}
    torch.save({"state_dict": {f"module.{k}": v for k, v in theirs.state_dict().items()}, "best_prec1": 91.0}, path)
    ours = load_weights(CifarResNet(depth, shortcut="A").double().eval(), path, "akamaster")
    x = torch.randn(8, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("depth, factory, stride_on", [(18, torchvision.models.resnet18, "1x1"),
                                                       (50, torchvision.models.resnet50, "3x3")])
def test_a_torchvision_checkpoint_gives_the_same_logits(tmp_path, depth, factory, stride_on):
    theirs = randomised(factory())
    torch.save(theirs.state_dict(), tmp_path / "tv.pth")
    ours = load_weights(ImageNetResNet(depth, shortcut="B", stride_on=stride_on).double().eval(), tmp_path / "tv.pth",
                        "torchvision")
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), rtol=0, atol=1e-10)


def test_a_run_starts_from_model_weights_by_config_with_fixed_normalisation(tmp_path):
    theirs = randomised(TheirResNet(3)).float()
    torch.save({"state_dict": {f"module.{k}": v for k, v in theirs.state_dict().items()}}, tmp_path / "r20.th")
    cfg = compose_config(f"model.weights={tmp_path / 'r20.th'}", "model.weights_format=akamaster",
                         "data.normalization=fixed", "data.mean=[0.485,0.456,0.406]", "data.std=[0.229,0.224,0.225]")
    net = build(cfg.model, num_classes=10).eval()
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    x = Normalize(images, cfg.data.normalization, cfg.data.mean, cfg.data.std)(images)
    expected = (images.float() / 255 - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor(
        [0.229, 0.224, 0.225])[:, None, None]
    assert torch.allclose(x, expected)
    with torch.no_grad():
        assert torch.allclose(net(x), theirs.eval()(x), atol=1e-5)


def test_a_run_checkpoint_loads_as_deepres_weights(tmp_path):
    net = randomised(CifarResNet(8)).float()
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "global_step": 3}, tmp_path / "c")
    loaded = load_weights(CifarResNet(8).eval(), tmp_path / "c", "deepres")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))


@pytest.mark.parametrize("content, fmt, message", [
    (None, "deepres", r"model.weights=\S+: no such file"),
    (b"not a checkpoint", "deepres", r"is not a readable PyTorch checkpoint"),
    ({"step": 1}, "deepres", r"holds no state dict"),
    ("resnet18", "torchvision", r"does not fit this net \(CifarResNet"),
    ("resnet18", "timm", r"model.weights_format='timm' is unknown; valid: deepres, torchvision, akamaster"),
])
def test_a_bad_checkpoint_is_one_paragraph(tmp_path, content, fmt, message):
    path = tmp_path / "weights.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "resnet18":
        torch.save(torchvision.models.resnet18().state_dict(), path)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(UserError, match=message) as err:
        load_weights(CifarResNet(20), path, fmt)
    assert "\n" not in str(err.value)


FIXED = ["data.normalization=fixed", "data.mean=[0.485,0.456,0.406]", "data.std=[0.229,0.224,0.225]"]


class GeneratedCIFAR10(torchvision.datasets.CIFAR10):
    """torchvision's reader; the generated files have md5s of their own (None: torchvision checks they exist)."""

    train_list = [[name, None] for name, _ in torchvision.datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in torchvision.datasets.CIFAR10.test_list]
    meta = {**torchvision.datasets.CIFAR10.meta, "md5": None}


def _their_test_set(root) -> tuple[torch.Tensor, torch.Tensor]:
    """The test batch as the reproduction reads it: torchvision's CIFAR10, ToTensor, Normalize(its mean and std)."""
    test = GeneratedCIFAR10(str(root), train=False)
    x = torch.tensor(test.data).permute(0, 3, 1, 2).double() / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    return (x - mean[:, None, None].double()) / std[:, None, None].double(), torch.tensor(test.targets)


def _their_response_stds(net: nn.Module, x: torch.Tensor) -> list[float]:
    """The std of the output of every BN after a 3x3 conv, in network order: the stem's, then each block's two."""
    layers = [net.bn1] + [bn for layer in (net.layer1, net.layer2, net.layer3) for b in layer for bn in (b.bn1, b.bn2)]
    outputs = []
    handles = [bn.register_forward_hook(lambda m, i, o: outputs.append(o.std(unbiased=False).item())) for bn in layers]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    return outputs


@pytest.mark.slow
def test_public_weights_become_runs_that_evaluate_and_report_fig7_as_their_nets(cifar10_root, tmp_path):
    """src/evaluate.py makes a run of each checkpoint (the reproduction's layout) and tests it as its authors' net
    does; Fig. 7 of those runs is their nets' responses (a std over all channels: the channel permutation of option
    A's two paddings does not change it)."""
    x, y = _their_test_set(cifar10_root)
    theirs, report = {}, tmp_path / "public"
    for depth in (20, 56):
        theirs[depth] = randomised(TheirResNet((depth - 2) // 6))
        weights = tmp_path / f"resnet{depth}.th"
        torch.save({"state_dict": {f"module.{k}": v.float() for k, v in theirs[depth].state_dict().items()}}, weights)
        proc = run_entry("evaluate.py", str(report / f"resnet-{depth}"), f"model.depth={depth}",
                              f"model.weights={weights}", "model.weights_format=akamaster", *FIXED,
                              f"data.root={cifar10_root}")
        assert proc.returncode == 0, proc.stderr[-2000:]
        with torch.no_grad():
            error = 100.0 * (theirs[depth](x).argmax(1) != y).double().mean().item()
        result = json.loads((report / f"resnet-{depth}" / "eval_center.json").read_text())
        assert result["step"] == 0 and abs(result["test/error"] - error) < 1e-3, (result, error)
        assert f"top-1 error {error:.2f}%" in proc.stdout
    proc = run_entry("report.py", str(report), "fig7", "--data-root", str(cifar10_root))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.DictReader(open(report / "fig7.csv")))
    assert {r["net"] for r in rows} == {"ResNet-20", "ResNet-56"}
    for depth, net in theirs.items():
        ours = [float(r["std"]) for r in rows if r["net"] == f"ResNet-{depth}"]
        expected = _their_response_stds(net, x)
        assert len(ours) == len(expected) == depth - 1
        assert all(abs(a - b) <= 1e-4 * b for a, b in zip(ours, expected)), (ours, expected)


@pytest.mark.parametrize("args, message", [
    (["model.weights=/no/such.th", "model.weights_format=akamaster"], "model.weights=/no/such.th: no such file"),
    (["model.weights=x.th", "model.dept=20"], "Could not override 'model.dept'"),
], ids=["missing-file", "unknown-key"])
def test_weights_that_cannot_become_a_run_are_one_paragraph_and_leave_no_directory(tmp_path, args, message):
    proc = run_entry("evaluate.py", tmp_path / "public", *args)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "public").exists()
