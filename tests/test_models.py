import pytest
import torch
import torch.nn.functional as F

from deepres.errors import UserError
from deepres.models import CifarResNet
from deepres.models.blocks import BasicBlock, ZeroPadShortcut

# the nets' exact parameter counts (Table 6's nets),, option A (plain nets equal) and option B.
PARAMS_A = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}
PARAMS_B = {20: 272_474, 32: 466_906, 44: 661_338, 56: 855_770, 110: 1_730_714, 1202: 19_424_026}


def count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("depth", sorted(PARAMS_A))
def test_parameter_counts_match_the_paper(depth):
    assert count(CifarResNet(depth, residual=True, shortcut="A")) == PARAMS_A[depth]
    assert count(CifarResNet(depth, residual=True, shortcut="B")) == PARAMS_B[depth]
    assert count(CifarResNet(depth, residual=False)) == PARAMS_A[depth]


def test_option_c_projects_every_shortcut():
    net = CifarResNet(20, shortcut="C")
    projections = [m for m in net.modules() if isinstance(m, torch.nn.Sequential) and len(m) == 2
                   and isinstance(m[0], torch.nn.Conv2d) and m[0].kernel_size == (1, 1)]
    assert len(projections) == 9  # every block of 3 stages x 3 blocks
    assert count(net) > PARAMS_B[20]


@pytest.mark.parametrize("residual", [True, False])
def test_forward_shape_and_layer_count(residual):
    net = CifarResNet(32, residual=residual, num_classes=100)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    weighted = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
                and not (isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1))]
    assert len(weighted) == 32


def block_io(net: torch.nn.Module, x: torch.Tensor) -> list[tuple[BasicBlock, torch.Tensor, torch.Tensor]]:
    """(block, its input, its output) of every basic block of net in eval mode, in forward order."""
    seen = []
    hooks = [m.register_forward_hook(lambda m, args, out: seen.append((m, args[0], out)))
             for m in net.modules() if isinstance(m, BasicBlock)]
    with torch.no_grad():
        net.eval()(x)
    for hook in hooks:
        hook.remove()
    return seen


def test_plain_net_has_no_shortcut_and_differs_from_resnet():
    """Each plain block is its residual branch alone, relu(bn2(conv2(relu(bn1(conv1(x)))))) by hand from its own
    layers; the same weights in the ResNet give other outputs (its blocks add x)."""
    torch.manual_seed(0)
    resnet = CifarResNet(20, residual=True)
    plain = CifarResNet(20, residual=False)
    plain.load_state_dict(resnet.state_dict())  # identical layers: the same weights load into both
    x = torch.randn(4, 3, 32, 32)
    blocks = block_io(plain, x)
    assert len(blocks) == 9 and all(b.shortcut is None for b, _, _ in blocks)
    for b, inp, out in blocks:
        assert torch.equal(out, F.relu(b.bn2(b.conv2(F.relu(b.bn1(b.conv1(inp)))))))
    assert not torch.allclose(resnet.eval()(x), plain.eval()(x))


def test_option_a_subsamples_and_zero_pads():
    x = torch.arange(2 * 16 * 8 * 8, dtype=torch.float32).reshape(2, 16, 8, 8)
    y = ZeroPadShortcut(16, 32, stride=2)(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert not y[:, 16:].any()


@pytest.mark.parametrize("members", [1, 3])
def test_option_a_keeps_the_memory_format_of_each_member(members):
    """channels_last in, channels_last out (a layout copy in every downsampling block otherwise), with each member's
    channels padded inside its own group."""
    x = torch.randn(2, members * 16, 8, 8)
    pad = ZeroPadShortcut(16, 32, stride=2, members=members)
    nchw, nhwc = pad(x), pad(x.contiguous(memory_format=torch.channels_last))
    assert nchw.is_contiguous() and nhwc.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(nchw, nhwc) and nchw.shape == (2, members * 32, 4, 4)
    for k in range(members):
        assert torch.equal(nchw[:, 32 * k:32 * k + 16], x[:, 16 * k:16 * k + 16, ::2, ::2])
        assert not nchw[:, 32 * k + 16:32 * k + 32].any()


def test_he_init_and_bn_after_every_conv():
    net = CifarResNet(20)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(convs) == len(bns) == 19
    fan_out = 16 * 9
    assert abs(convs[0].weight.std().item() - (2 / fan_out) ** 0.5) < 0.05
    assert all(bool((bn.weight == 1).all()) and not bn.bias.any() for bn in bns)


@pytest.mark.parametrize("depth", [21, 0, 2, 19, "20"])
def test_bad_depth_names_the_valid_ones(depth):
    with pytest.raises(UserError, match=r"6n\+2.*20, 32, 44, 56, 110, 1202"):
        CifarResNet(depth)


def test_unknown_shortcut_lists_the_options():
    with pytest.raises(UserError, match="'D'.*A .*B .*C "):
        CifarResNet(20, shortcut="D")
