"""Issue 18.2: model.bn_batch, BN statistics as the paper's two GPUs saw them (64 images of each batch of 128). The
reference is what data parallelism without SyncBatchNorm computes: one copy of the net per group of images, each
with torch's own BatchNorm2d, gradients summed and running averages averaged over the copies."""
import copy

import pytest
import torch
import torch.nn.functional as F
from helpers.config import compose_config
from helpers.train import FAST, run_train

from deepres.errors import UserError
from deepres.models import CifarResNet, build
from deepres.models.ghost_bn import GhostBatchNorm2d, ghost_batch_norm
from deepres.packing.members import member_state, packed_state
from deepres.runs.metrics_csv import read_rows
from deepres.training.validate import validate


def _replicas_step(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, groups: int):
    """One copy of `net` per group of images: (their outputs side by side, their summed gradients, their mean
    running averages)."""
    copies = [copy.deepcopy(net) for _ in range(groups)]
    outs = [c(xs) for c, xs in zip(copies, x.tensor_split(groups))]
    for out, ys in zip(outs, y.tensor_split(groups)):
        F.cross_entropy(out, ys, reduction="sum").backward()
    grads = {name: sum(dict(c.named_parameters())[name].grad for c in copies) for name, _ in net.named_parameters()}
    states = [c.state_dict() for c in copies]
    averages = {key: sum(s[key].double() for s in states) / groups for key in states[0]}
    return torch.cat(outs), grads, averages


@pytest.mark.parametrize("residual, groups", [(True, 2), (False, 4)])
def test_ghost_bn_computes_what_one_device_per_group_computes(residual, groups):
    torch.manual_seed(0)
    net = CifarResNet(8, residual).double()
    ghost = ghost_batch_norm(copy.deepcopy(net), 32 // groups)
    assert sum(isinstance(m, GhostBatchNorm2d) for m in ghost.modules()) == 7
    assert list(ghost.state_dict()) == list(net.state_dict())
    x, y = torch.randn(32, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (32,))
    outs, grads, averages = _replicas_step(net, x, y, groups)
    out = ghost(x)
    F.cross_entropy(out, y, reduction="sum").backward()
    assert torch.equal(out, outs)  # the same kernel on the same images
    for name, p in ghost.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], rtol=1e-12, atol=1e-12, msg=name)
    for key, value in ghost.state_dict().items():
        torch.testing.assert_close(value.double(), averages[key], rtol=1e-15, atol=0, msg=key)
    ghost.eval()  # evaluation: the running averages, as BatchNorm2d
    net.load_state_dict(ghost.state_dict())
    assert torch.equal(ghost(x), net.eval()(x))


def test_a_group_of_the_whole_batch_is_batchnorm2d_to_the_bit():
    torch.manual_seed(0)
    net = CifarResNet(8)
    ghost = ghost_batch_norm(copy.deepcopy(net), 32)
    x = torch.randn(32, 3, 32, 32)
    assert torch.equal(ghost(x), net(x))
    assert all(torch.equal(a, b) for a, b in zip(ghost.state_dict().values(), net.state_dict().values(), strict=True))


def test_a_pack_takes_each_members_ghost_statistics():
    """A pack's BN layer holds its members' channels side by side: the groups split images, never members."""
    torch.manual_seed(0)
    residual = [True, False]
    nets = [ghost_batch_norm(CifarResNet(8, r).double(), 8) for r in residual]
    packed = ghost_batch_norm(CifarResNet(8, residual).double(), 8)
    packed.load_state_dict(packed_state([n.state_dict() for n in nets], packed.state_dict()))
    xs = [torch.randn(16, 3, 32, 32, dtype=torch.float64) for _ in nets]
    out = packed(torch.cat(xs, 1))
    for k, net in enumerate(nets):
        torch.testing.assert_close(out[:, k], net(xs[k]), rtol=1e-12, atol=1e-12)
        state = member_state(packed.state_dict(), k, len(nets), list(net.state_dict()))
        for key, value in net.state_dict().items():
            torch.testing.assert_close(state[key].double(), value.double(), rtol=1e-12, atol=1e-12, msg=key)


def test_activation_checkpointing_recomputes_ghost_bn_exactly():
    """The recomputation in backward sees the same groups and leaves the running averages as one forward does."""
    torch.manual_seed(0)
    plain = ghost_batch_norm(CifarResNet(8).double(), 8)
    recomputed = copy.deepcopy(plain)
    recomputed.checkpoint_activations = True
    x, y = torch.randn(32, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (32,))
    for net in (plain, recomputed):
        F.cross_entropy(net(x), y).backward()
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(plain.parameters(), recomputed.parameters(), strict=True))
    assert all(torch.equal(s, t) for s, t in zip(plain.state_dict().values(), recomputed.state_dict().values(),
                                                 strict=True))


def test_ghost_bn_compiles_to_one_graph_that_computes_the_eager_layer():
    torch.manual_seed(0)
    eager = GhostBatchNorm2d(16, 8)
    compiled = torch.compile(copy.deepcopy(eager), fullgraph=True)  # no graph break in the groups' loop
    x = torch.randn(32, 16, 8, 8)
    for _ in range(2):
        torch.testing.assert_close(compiled(x), eager(x))
    assert all(torch.allclose(a.float(), b.float(), atol=1e-6)
               for a, b in zip(compiled.state_dict().values(), eager.state_dict().values(), strict=True))


def test_the_paper_recipes_bn_batch_is_64_on_cifar_and_the_batch_on_imagenet():
    cfg = compose_config()
    assert (cfg.model.bn_batch, cfg.data.batch_size) == (64, 128)
    net = build(cfg.model, 10)
    assert {m.group for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {64}
    cfg = compose_config("data=imagenet", "model=imagenet_resnet")
    assert cfg.model.bn_batch is None
    assert all(type(m) is torch.nn.BatchNorm2d for m in build(cfg.model, 1000).modules()
               if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("overrides, expected", [
    (["model.bn_batch=48"], "model.bn_batch=48 does not divide the batch of 128 images (data.batch_size=128)"),
    (["model.bn_batch=0"], "model.bn_batch=0 must be a whole number of images"),
    (["trainer=ddp", "trainer.devices=4"],  # 4 processes of 32 images: a group of 64 would span two
     "model.bn_batch=64 is more images than each process trains on (32: data.batch_size=128 over 4 processes)"),
], ids=["indivisible", "zero", "spans-processes"])
def test_a_bn_batch_that_does_not_split_the_batch_is_a_user_error(overrides, expected):
    with pytest.raises(UserError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        validate(compose_config(*overrides))


def test_bn_batch_may_cover_a_smaller_batch_and_divide_each_process_share():
    validate(compose_config("data.batch_size=32"))  # one process: statistics over its whole batch of 32
    validate(compose_config("trainer=ddp", "trainer.devices=2"))  # 2 processes of 64: the paper's setup


@pytest.mark.slow
def test_bn_batch_equal_to_the_batch_trains_as_plain_bn_to_the_bit(cifar10_root, tmp_path):
    args = [*FAST, "trainer.max_steps=20", f"data.root={cifar10_root}"]
    runs = {}
    for bn_batch in ("32", "null"):
        runs[bn_batch] = tmp_path / bn_batch
        run_train(*args, f"model.bn_batch={bn_batch}", f"hydra.run.dir={runs[bn_batch]}")
    assert (runs["32"] / "metrics.csv").read_text() == (runs["null"] / "metrics.csv").read_text()
    a, b = (torch.load(r / "checkpoints" / "final.ckpt", map_location="cpu", weights_only=False)["state_dict"]
            for r in runs.values())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_ddp_takes_ghost_statistics_in_each_process_and_keeps_one_set_of_averages(cifar10_root, tmp_path):
    """2 processes of 16 images, groups of 8 (sync_batchnorm stays at ddp.yaml's true: ghost BN turns it off) end
    as one process with the same four groups: weights and running averages, to float rounding."""
    args = [*FAST, "trainer.max_steps=6", "trainer.log_every_n_steps=2", "model.bn_batch=8",
            f"data.root={cifar10_root}"]
    run_train(*args, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", f"hydra.run.dir={tmp_path / 'ddp'}")
    run_train(*args, f"hydra.run.dir={tmp_path / 'one'}")
    a, b = (torch.load(tmp_path / r / "checkpoints" / "final.ckpt", map_location="cpu", weights_only=False)[
        "state_dict"] for r in ("ddp", "one"))
    assert any("running_mean" in k for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    losses = [[r["train/loss"] for r in read_rows(tmp_path / d / "metrics.csv") if "train/loss" in r]
              for d in ("ddp", "one")]
    assert [len(rows) for rows in losses] == [3, 3]  # 6 iterations, a row every 2: in both runs
    assert all(abs(p - q) < 1e-4 for p, q in zip(*losses, strict=True))
