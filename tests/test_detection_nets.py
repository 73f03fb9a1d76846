"""The detection nets (section 4.3, Appendix A): torchvision's ResNets and VGG-16, saved here from their own randomly
initialised models (no download), split into a stride-16 trunk and a per-region head that compute what the
classifiers' conv1..layer3 / layer4 + pool (features[:30] / fc6, fc7) compute; BN frozen, early stages not trained;
Faster R-CNN on them trains (4 losses, gradients where they belong) and detects inside the image."""
import pytest
import torch
import torchvision
from helpers.poison import poisoned_checkpoint, runs_under_plain_load
from omegaconf import ListConfig
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from deepres.detection.backbones import resnet_backbone, vgg16_backbone
from deepres.detection.faster_rcnn import RoIPooler, build_detector, training_targets
from deepres.detection.weights import imagenet_resnet, imagenet_vgg16
from deepres.errors import RefusedFile, UserError
from deepres.models import ImageNetResNet

SMALL = {"min_size": 128, "max_size": 128, "box_batch_size_per_image": 8}  # conv5_x on 8 RoIs, not 128


def randomised(net: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics and affine maps (not the identity), so a lost or reset statistic shows."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.5, 0.5)
    return net


def count(net: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in net.modules())


@pytest.mark.parametrize("depth", [50, 101])
def test_a_torchvision_resnet_splits_into_conv1_to_layer3_and_layer4_with_its_pool(tmp_path, depth):
    theirs = randomised(getattr(torchvision.models, f"resnet{depth}")()).double().eval()
    path = tmp_path / f"resnet{depth}.pth"
    torch.save(theirs.state_dict(), path)
    backbone = resnet_backbone(imagenet_resnet(depth, stride_on="3x3", weights=path, weights_format="torchvision"))
    trunk, head = backbone.trunk.double().eval(), backbone.head.double().eval()
    assert (trunk.out_channels, head.out_channels, backbone.roi_size) == (1024, 2048, 14)
    assert count(trunk, nn.BatchNorm2d) + count(head, nn.BatchNorm2d) == 0
    assert count(trunk, FrozenBatchNorm2d) + count(head, FrozenBatchNorm2d) == count(theirs, nn.BatchNorm2d)
    x, regions = torch.randn(2, 3, 96, 64, dtype=torch.float64), torch.randn(3, 1024, 14, 14, dtype=torch.float64)
    with torch.no_grad():
        shared = trunk(x)
        expected = theirs.layer3(theirs.layer2(theirs.layer1(theirs.maxpool(theirs.relu(theirs.bn1(theirs.conv1(x)))))))
        assert shared.shape[-2:] == (6, 4)  # stride 16
        torch.testing.assert_close(shared, expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(head(regions), theirs.avgpool(theirs.layer4(regions)).flatten(1), rtol=0, atol=1e-5)


def test_a_deepres_imagenet_checkpoint_starts_the_trunk(tmp_path):
    ours = randomised(ImageNetResNet(18, residual=False, shortcut="A"), seed=1).eval()
    path = tmp_path / "final.ckpt"  # as a run saves it: the task's "net." prefix, beside the run's bookkeeping
    torch.save({"state_dict": {f"net.{k}": v for k, v in ours.state_dict().items()}, "global_step": 600000}, path)
    trunk = resnet_backbone(imagenet_resnet(18, residual=False, shortcut="A", weights=path)).trunk.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(trunk(x), ours.stages[:3](ours.stem(x)), rtol=0, atol=1e-5)


def test_torchvisions_vgg16_splits_into_its_13_convs_and_fc6_fc7(tmp_path):
    torch.manual_seed(0)
    theirs = torchvision.models.vgg16().eval()
    path = tmp_path / "vgg16.pth"
    torch.save(theirs.state_dict(), path)
    backbone = vgg16_backbone(imagenet_vgg16(path))
    trunk, head = backbone.trunk.eval(), backbone.head.eval()
    assert (trunk.out_channels, head.out_channels, backbone.roi_size) == (512, 4096, 7)
    assert count(trunk, nn.Conv2d) == 13 and count(trunk, nn.MaxPool2d) == 4
    x, regions = torch.randn(1, 3, 96, 64), torch.randn(2, 512, 7, 7)
    with torch.no_grad():
        shared = trunk(x)
        assert shared.shape[-2:] == (6, 4)  # stride 16
        torch.testing.assert_close(shared, theirs.features[:30](x), rtol=0, atol=1e-5)
        torch.testing.assert_close(head(regions), theirs.classifier[:-1](regions.flatten(1)), rtol=0, atol=1e-5)
    assert [n for n, p in trunk.named_parameters() if not p.requires_grad] == [
        f"conv{s}_x.{i}.{w}" for s, i in ((1, 0), (1, 2), (2, 5), (2, 7)) for w in ("weight", "bias")]


@pytest.mark.parametrize("residual", [True, False], ids=["resnet-18", "plain-18"])
def test_a_training_step_updates_what_it_should_and_nothing_else(residual):
    torch.manual_seed(0)
    net = randomised(imagenet_resnet(18, residual=residual, shortcut="A"))
    bn_count = count(net, nn.BatchNorm2d)
    detector = build_detector(resnet_backbone(net), num_classes=3, **SMALL).train()
    assert count(detector, nn.BatchNorm2d) == 0 and count(detector, FrozenBatchNorm2d) == bn_count
    before = {k: v.clone() for k, v in detector.state_dict().items()}
    images = [torch.randint(0, 256, (3, 100, 120), dtype=torch.uint8), torch.rand(3, 90, 110)]
    # the difficult box is degenerate, which torchvision refuses: the detector must not hand it over
    targets = [{"boxes": torch.tensor([[10.0, 10, 60, 50], [50, 50, 40, 95]]), "labels": torch.tensor([1, 2]),
                "difficult": torch.tensor([False, True]), "iscrowd": torch.zeros(2, dtype=torch.bool),
                "image_id": "000005"},
               {"boxes": torch.tensor([[0.0, 5, 70, 88]]), "labels": torch.tensor([3]),
                "difficult": torch.tensor([False]), "iscrowd": torch.tensor([False]), "image_id": "000007"}]
    losses = detector(images, targets)
    assert sorted(losses) == ["loss_box_reg", "loss_classifier", "loss_objectness", "loss_rpn_box_reg"]
    optimizer = torch.optim.SGD([p for p in detector.parameters() if p.requires_grad], lr=0.1)
    sum(losses.values()).backward()
    optimizer.step()
    frozen = ("backbone.conv1.", "backbone.conv2_x.")
    for name, p in detector.named_parameters():
        assert p.requires_grad != name.startswith(frozen), name
        if name.startswith(frozen):
            assert p.grad is None, name
        elif name.startswith(("backbone.", "roi_heads.box_head.", "rpn.head.conv.")):
            assert p.grad.abs().sum() > 0, name  # trained conv layers of the nets get a gradient
    after = detector.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    frozen_bn = {f"{name}.{field}" for name, m in detector.named_modules() if isinstance(m, FrozenBatchNorm2d)
                 for field in ("weight", "bias", "running_mean", "running_var")}
    assert len(frozen_bn) == 4 * bn_count and not changed & frozen_bn, sorted(changed & frozen_bn)
    assert "backbone.conv3_x.0.conv1.weight" in changed and "backbone.conv1.0.weight" not in changed


def test_evaluation_detects_inside_the_image_from_at_most_300_proposals():
    torch.manual_seed(0)
    detector = build_detector(resnet_backbone(imagenet_resnet(18)), num_classes=3, min_size=384, max_size=384).eval()
    with torch.no_grad():
        images, _ = detector.transform([torch.rand(3, 384, 384)])
        proposals, _ = detector.rpn(images, {"0": detector.backbone(images.tensors)})
    assert len(proposals[0]) == 300  # of 608 left by NMS at 0.7

    few = build_detector(resnet_backbone(imagenet_resnet(18)), num_classes=3, min_size=128, max_size=160,
                         rpn_post_nms_top_n_test=12).eval()
    with torch.no_grad():
        (found,) = few([torch.randint(0, 256, (3, 90, 117), dtype=torch.uint8)])
    assert sorted(found) == ["boxes", "labels", "scores"] and 0 < len(found["boxes"]) <= 100
    boxes = found["boxes"]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 117).all() and (boxes[:, 3] <= 90).all()
    assert (boxes[:, 2:] >= boxes[:, :2]).all() and (found["scores"] >= 0.05).all()
    assert set(found["labels"].tolist()) <= {1, 2, 3}


def test_under_bf16_autocast_the_convolutions_run_in_bf16_and_the_boxes_in_float32():
    """bf16-mixed (the CUDA default) on the trunk and head only: anchors, box deltas and NMS in float32, where a
    bf16 box edge of 512-1024 pixels would land on every 4th pixel; RoI max pooling takes the float32 map."""
    torch.manual_seed(0)
    detector = build_detector(resnet_backbone(imagenet_resnet(18)), num_classes=3, **SMALL)
    seen = {}

    def record(name: str):
        def hook(module, inputs, out) -> None:
            seen.setdefault(name, out.dtype)
        return hook

    detector.backbone.register_forward_hook(record("trunk"))
    detector.backbone.conv4_x[0].conv1.register_forward_hook(record("conv4_x"))  # a conv (frozen BN: float32)
    image = torch.randint(0, 256, (3, 100, 120), dtype=torch.uint8)
    target = {"boxes": torch.tensor([[10.0, 10, 60, 70]]), "labels": torch.tensor([2])}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = detector([image], [target])
        (found,) = detector.eval()([image])
    assert seen == {"conv4_x": torch.bfloat16, "trunk": torch.float32}
    assert all(loss.dtype == torch.float32 for loss in losses.values()) and found["boxes"].dtype == torch.float32
    detector([image])  # outside autocast: float32 throughout
    assert detector.backbone.precision is None


def test_difficult_and_crowd_boxes_are_left_out_of_training():
    target = {"boxes": torch.arange(12.0).view(3, 4), "labels": torch.tensor([1, 2, 3]),
              "difficult": torch.tensor([False, True, False]), "iscrowd": torch.tensor([False, False, True])}
    (kept,) = training_targets([target])
    assert sorted(kept) == ["boxes", "labels"]
    assert kept["labels"].tolist() == [1] and kept["boxes"].tolist() == [[0.0, 1, 2, 3]]


def test_max_roi_pooling_reads_the_cells_of_the_box_at_stride_16():
    features = torch.zeros(1, 1, 6, 6)
    features[0, 0, 3, 3] = 100.0  # pixels [48, 64): outside a box ending at 40, which covers cells 0..2
    features[0, 0, 1, 2] = 7.0
    box = [torch.tensor([[0.0, 0, 40, 40]])]
    pooled = RoIPooler(1)({"0": features}, box, [(96, 96)])
    assert pooled.item() == 7.0
    assert RoIPooler(14).output_size == (14, 14)
    aligned = RoIPooler(1, "align")({"0": features}, box, [(96, 96)])
    assert 0 < aligned.item() < 7.0  # an average, not a max
    with pytest.raises(UserError, match=r"model.pooling='avg' is not an RoI pooling; valid: max .*align"):
        RoIPooler(7, "avg")


@pytest.mark.parametrize("frozen_stages, trained", [(0, 4), (2, 2), (4, 0)])
def test_frozen_stages_are_the_first_stages_of_the_trunk(frozen_stages, trained):
    trunk = resnet_backbone(ImageNetResNet(18), frozen_stages).trunk
    stages = [all(p.requires_grad for p in stage.parameters()) for stage in trunk.children()]
    assert stages == [False] * frozen_stages + [True] * trained


def test_a_bad_number_of_frozen_stages_is_one_paragraph():
    with pytest.raises(UserError, match=r"model.frozen_stages=5 .* valid: 0 to 4 .*conv1, conv2_x, conv3_x, conv4_x"):
        resnet_backbone(ImageNetResNet(18), 5)


def test_weights_that_do_not_fit_are_one_paragraph(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(UserError) as resnet:
        imagenet_resnet(34, weights=path, weights_format="torchvision")
    with pytest.raises(UserError) as vgg:
        imagenet_vgg16(path)
    with pytest.raises(UserError) as strides:
        imagenet_resnet(50, weights=path, weights_format="torchvision")
    for err in (resnet, vgg, strides):
        message = str(err.value)
        assert "\n" not in message and f"model.weights={path} (model.weights_format=torchvision)" in message
    assert "does not fit this net (ImageNetResNet" in str(resnet.value)
    assert "does not fit torchvision's VGG-16" in str(vgg.value) and "missing: features.0.weight" in str(vgg.value)
    assert "needs model.stride_on=3x3" in str(strides.value)
    with pytest.raises(UserError, match=r"model.weights_format='timm' is not .* valid: deepres, torchvision\.$"):
        imagenet_resnet(18, weights=path, weights_format="timm")
    with pytest.raises(UserError, match=r"model.weights_format='deepres' is not a format of VGG-16 weights"):
        imagenet_vgg16(path, weights_format="deepres")


def test_several_shorter_sides_from_a_config_are_drawn_per_image():
    detector = build_detector(resnet_backbone(ImageNetResNet(18)), num_classes=20, min_size=ListConfig([480, 600]))
    assert detector.transform.min_size == (480, 600) and detector.transform.max_size == 1000
    assert detector.roi_heads.box_predictor.cls_score.out_features == 21  # K + 1
    assert detector.roi_heads.box_predictor.bbox_pred.out_features == 84  # per class


def test_weights_that_carry_code_are_refused(tmp_path):
    marker = tmp_path / "ran"
    weights = poisoned_checkpoint(tmp_path / "weights.pth", marker)
    for load in (lambda: imagenet_resnet(18, weights=weights), lambda: imagenet_vgg16(weights)):
        with pytest.raises(RefusedFile, match=rf"model.weights={weights} was refused: .* nothing in it was run"):
            load()
        assert not marker.exists()
    assert runs_under_plain_load(weights, marker, lambda p: torch.load(p, weights_only=False))
