"""Public checkpoints in the paper's nets (model.weights, model.weights_format): torchvision's ResNets and the most
used CIFAR reproduction's (akamaster/pytorch_resnet_cifar10, whose option A pads zeros on both sides of the
identity), both built here from their authors' layouts (no download), give the same logits in our nets."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers.config import compose_config
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
