"""The ImageNet nets of Table 1: shapes, layer counts, the paper's FLOPs, torchvision's parameter counts and weights."""
import pytest
import torch
import torchvision
from torch import nn

from deepres.errors import UserError
from deepres.models import ImageNetResNet
from deepres.models.blocks import Bottleneck, ZeroPadShortcut
from deepres.models.flops import PAPER_GFLOPS, meta_net, multiply_adds, parameters, table
from deepres.models.public_weights import from_torchvision

DEPTHS = (18, 34, 50, 101, 152)
TORCHVISION_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}


def weighted_layers(net: nn.Module) -> int:
    """Convs and FC layers on the main path (projection shortcuts are not counted as layers in the paper)."""
    shortcuts = {id(m) for block in net.modules() if getattr(block, "shortcut", None) is not None
                 for m in block.shortcut.modules()}
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in shortcuts for m in net.modules())


@pytest.mark.parametrize("depth", DEPTHS)
def test_every_depth_builds_has_its_layers_and_classifies(depth):
    net = ImageNetResNet(depth, num_classes=7).eval()
    assert weighted_layers(net) == depth
    with torch.no_grad():
        assert net(torch.randn(2, 3, 64, 64)).shape == (2, 7)
        assert net(torch.randn(1, 3, 48, 80)).shape == (1, 7)  # any size: fully convolutional


@pytest.mark.parametrize("depth, residual, shortcut", [(18, False, "B"), (34, False, "B"), (34, True, "A"),
                                                       (34, True, "C")])
def test_the_compared_variants_classify(depth, residual, shortcut):
    net = ImageNetResNet(depth, residual=residual, shortcut=shortcut, num_classes=5).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 32, 32)).shape == (1, 5)


@pytest.mark.parametrize("depth", DEPTHS)
def test_multiply_adds_match_table_1_within_3_percent(depth):
    assert multiply_adds(meta_net(depth)) / 1e9 == pytest.approx(PAPER_GFLOPS[depth], rel=0.03)


@pytest.mark.parametrize("depth", (50, 101, 152))
def test_stride_on_3x3_is_torchvisions_v1_5_with_more_flops_and_the_same_parameters(depth):
    paper, v15 = meta_net(depth, stride_on="1x1"), meta_net(depth, stride_on="3x3")
    assert parameters(paper) == parameters(v15) == TORCHVISION_PARAMS[depth]
    assert multiply_adds(v15) > 1.02 * multiply_adds(paper)
    first = v15.stages[1][0]
    assert (first.conv1.stride, first.conv2.stride) == ((1, 1), (2, 2))
    assert (paper.stages[1][0].conv1.stride, paper.stages[1][0].conv2.stride) == ((2, 2), (1, 1))


@pytest.mark.parametrize("depth", DEPTHS)
def test_shortcut_b_has_torchvisions_parameter_count(depth):
    with torch.device("meta"):
        assert parameters(getattr(torchvision.models, f"resnet{depth}")()) == TORCHVISION_PARAMS[depth]
    assert parameters(meta_net(depth, shortcut="B")) == TORCHVISION_PARAMS[depth]


@pytest.mark.parametrize("depth, stride_on", [(18, "1x1"), (50, "3x3")])
def test_torchvision_weights_load_into_the_matching_variant_and_give_its_outputs(depth, stride_on):
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, f"resnet{depth}")(num_classes=10).eval()
    for m in theirs.modules():  # non-trivial BN statistics, so that a misplaced tensor shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ours = ImageNetResNet(depth, shortcut="B", stride_on=stride_on, num_classes=10).eval()
    ours.load_state_dict(from_torchvision(theirs.state_dict()))  # strict: every tensor has its place
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


def test_plain_nets_have_no_shortcuts_and_option_a_parameters():
    for depth in (18, 34):
        plain = ImageNetResNet(depth, residual=False)
        assert all(getattr(m, "shortcut", None) is None for m in plain.modules())
        assert parameters(plain) == parameters(ImageNetResNet(depth, shortcut="A"))
        plain.load_state_dict(ImageNetResNet(depth, shortcut="A").state_dict())  # the same layers


def test_resnet_34_options_a_b_c():
    a, b, c = (ImageNetResNet(34, shortcut=s) for s in "ABC")
    def projections(net):
        return sum(isinstance(m.shortcut, nn.Sequential) for m in net.modules() if hasattr(m, "shortcut"))

    assert (projections(a), projections(b), projections(c)) == (0, 3, 16)
    assert sum(isinstance(m, ZeroPadShortcut) for m in a.modules()) == 3
    assert parameters(a) < parameters(b) < parameters(c)


def test_option_a_zero_pads_the_widening_bottleneck_shortcut():
    block = Bottleneck(64, 64, stride=1, shortcut="A", residual=True)
    assert isinstance(block.shortcut, ZeroPadShortcut)
    assert block(torch.randn(1, 64, 8, 8)).shape == (1, 256, 8, 8)


def test_model_table_lists_every_depth_beside_the_paper():
    text = table()
    for depth, gflops in PAPER_GFLOPS.items():
        assert f"| ResNet-{depth} | B |" in text and f"| {gflops} |" in text
    assert "| plain-18 |" in text and "| plain-34 |" in text and "| 3x3 |" in text


@pytest.mark.parametrize("depth", [20, 0, 200, "50", True])
def test_bad_depth_names_the_valid_ones(depth):
    with pytest.raises(UserError, match=r"18, 34, 50, 101, 152"):
        ImageNetResNet(depth)


def test_bad_stride_on_names_the_variants():
    with pytest.raises(UserError, match=r"'1x3'.*1x1.*3x3"):
        ImageNetResNet(50, stride_on="1x3")
