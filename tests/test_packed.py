"""Issue 10: packed runs. Runs that share an architecture train as one network of grouped layers and still end
exactly as if trained apart: same weights, momentum, schedule and metric rows, in single-run checkpoints."""
import csv
import json
import os
import signal
import time
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers.config import compose_config as _compose
from helpers.train import FAST, run_train, train_cmd
from helpers.wandb_records import summarize
from helpers.zygote import ZYGOTE

from deepres.models import CifarResNet, ImageNetResNet
from deepres.packing.members import freeze_member, member_state, packed_state
from deepres.packing.optimizer import PackedSGD
from deepres.packing.plan import pack_key
from deepres.report.runs import Run
from deepres.runs.metrics_csv import read_rows

SWEEP_FAST = [o for o in FAST if not o.startswith("model.depth")]  # for sweeps over the depth
# {ResNet seed 1, plain net seed 2}: a pack of twins that differ in both seed and shortcut
TWINS = ["hydra/sweeper=points", "hydra.sweeper._target_=hydra_plugins.deepres_points.PointsSweeper",
         "hydra.sweeper.points=[['model.residual=true','seed=1'],['model.residual=false','seed=2']]"]


@pytest.mark.parametrize("make, size", [
    (partial(CifarResNet, 20, shortcut="A"), 32), (partial(CifarResNet, 20, shortcut="B"), 32),
    (partial(CifarResNet, 8, shortcut="C"), 32), (partial(ImageNetResNet, 18, shortcut="A", num_classes=10), 32),
    (partial(ImageNetResNet, 50, shortcut="B", stride_on="3x3", num_classes=10), 32),
], ids=["cifar-A", "cifar-B", "cifar-C", "imagenet-18-A", "imagenet-50-B"])
def test_packed_net_computes_each_members_net(make, size):
    """The one block vocabulary with members=K: K nets side by side, plain beside residual, for every shortcut
    option and block."""
    torch.manual_seed(0)
    residual = [True, False, True]
    nets = [make(residual=r).double() for r in residual]  # fp64: equal up to 1e-16 rounding
    packed = make(residual=residual).double()
    packed.load_state_dict(packed_state([n.state_dict() for n in nets], packed.state_dict()))
    xs, ys = [torch.randn(8, 3, size, size, dtype=torch.float64) for _ in nets], torch.randint(0, 10, (8, 3))
    out = packed(torch.cat(xs, 1))
    F.cross_entropy(out.transpose(1, 2), ys, reduction="none").mean(0).sum().backward()
    grads = dict(packed.named_parameters())
    for k, net in enumerate(nets):
        single = net(xs[k])
        F.cross_entropy(single, ys[:, k]).backward()
        assert torch.allclose(out[:, k], single, atol=1e-12)
        state = member_state(packed.state_dict(), k, len(nets), list(net.state_dict()))
        assert state.keys() == net.state_dict().keys()  # a plain member has no shortcut keys
        assert all(torch.allclose(state[key].double(), value.double(), atol=1e-12)
                   for key, value in net.state_dict().items())
        for name, p in net.named_parameters():
            assert torch.allclose(grads[name].grad.unflatten(0, (3, -1))[k], p.grad, atol=1e-12), name
    freeze_member(packed, 1, 3)
    assert packed(torch.cat(xs, 1))[:, 1].abs().max() == 0


@pytest.mark.parametrize("residual", [True, False])
def test_a_pack_of_one_is_the_single_net(residual):
    """CifarResNet with one member flag is the ordinary net: the same modules, initial weights and outputs."""
    nets = []
    for flags in (residual, [residual]):
        torch.manual_seed(0)
        nets.append(CifarResNet(20, flags, "B").eval())
    single, one = nets
    assert str(single) == str(one) and single.members == one.members == 1
    assert all(torch.equal(a, b) for a, b in zip(single.state_dict().values(), one.state_dict().values(), strict=True))
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(single(x), one(x)) and single(x).shape == (2, 10)


@pytest.mark.parametrize("nesterov", [False, True])
def test_packed_sgd_steps_each_member_as_torch_sgd_with_its_own_lr(nesterov):
    torch.manual_seed(0)
    lrs, hyper = [0.1, 0.01, 0.5], dict(momentum=0.9, weight_decay=1e-4, nesterov=nesterov)
    packed = [torch.nn.Parameter(torch.randn(3 * 4, 2, 3, 3)), torch.nn.Parameter(torch.randn(3 * 5))]
    singles = [[torch.nn.Parameter(p.detach().unflatten(0, (3, -1))[k].clone()) for p in packed] for k in range(3)]
    packed_sgd = PackedSGD(packed, lrs, **hyper)
    single_sgds = [torch.optim.SGD(params, lr=lr, **hyper) for params, lr in zip(singles, lrs)]
    for _ in range(3):
        grads = [torch.randn_like(p) for p in packed]
        for p, g in zip(packed, grads):
            p.grad = g.clone()
        packed_sgd.step()
        for k, (params, sgd) in enumerate(zip(singles, single_sgds)):
            for p, g in zip(params, grads):
                p.grad = g.unflatten(0, (3, -1))[k].clone()
            sgd.step()
    for k, params in enumerate(singles):
        for p, single in zip(packed, params):
            assert torch.allclose(p.detach().unflatten(0, (3, -1))[k], single.detach(), atol=1e-6)


def test_pack_key_groups_runs_that_differ_only_in_seed_shortcut_switch_and_lr():
    key = pack_key(_compose("model.depth=56"))
    assert key is not None
    assert pack_key(_compose("model.depth=56", "seed=3", "model.residual=false", "optimizer.lr=0.01")) == key
    for other in ("model.depth=20", "data.batch_size=64", "model.shortcut=B", "trainer.max_steps=100"):
        assert pack_key(_compose("model.depth=56", other)) != key, other
    assert pack_key(_compose("model.depth=56", "model.checkpoint_activations=true")) is None
    assert pack_key(_compose("data=imagenet", "model=imagenet_resnet", "model.depth=18")) is None


def _sweep(tmp_path: Path, name: str, launcher: str, *overrides: str, check: bool = True):
    gpus = [] if launcher == "basic" else ["hydra.launcher.gpus_per_node=0"]
    proc = run_train("-m", *overrides, f"hydra.sweep.dir={tmp_path / name}", f"hydra/launcher={launcher}", *gpus,
                     check=check, cwd=tmp_path)
    return tmp_path / name, proc


def _runs(sweep: Path) -> dict[str, Path]:
    return {p.parent.name: p.parent for p in sweep.glob("*/status.json")}


def _checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "final.ckpt", map_location="cpu", weights_only=False)


def _relative(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    a, b = (torch.cat([t.double().flatten() for t in ts]) for ts in (a, b))
    return ((a - b).norm() / b.norm()).item()


def _distances(a: Path, b: Path) -> tuple[float, float]:
    """Relative distances of two runs' final weights (and BN statistics) and momentum."""
    a, b = _checkpoint(a), _checkpoint(b)
    floats = [k for k, v in b["state_dict"].items() if v.is_floating_point()]
    sa, sb = a["optimizer_states"][0], b["optimizer_states"][0]
    momentum = [[s["state"][i]["momentum_buffer"] for i in sb["state"]] for s in (sa, sb)]
    return _relative([a["state_dict"][k] for k in floats], [b["state_dict"][k] for k in floats]), _relative(*momentum)


def _assert_same_run(packed: Path, alone: Path, tolerance: float, momentum_tolerance: float) -> None:
    """Same weights, BN statistics and metric rows (to a relative `tolerance`), momentum (to its own); the same
    schedule state; checkpoints of the same format."""
    a, b = _checkpoint(packed), _checkpoint(alone)
    assert a.keys() == b.keys() and list(a["state_dict"]) == list(b["state_dict"])
    weights, momentum = _distances(packed, alone)
    assert weights < tolerance and momentum < momentum_tolerance, (weights, momentum)
    sa, sb = a["optimizer_states"][0], b["optimizer_states"][0]
    assert sa["param_groups"] == sb["param_groups"] and sa["state"].keys() == sb["state"].keys()
    assert a["schedule"] == b["schedule"] and a["global_step"] == b["global_step"]
    rows_a, rows_b = read_rows(packed / "metrics.csv"), read_rows(alone / "metrics.csv")
    assert [r.keys() for r in rows_a] == [r.keys() for r in rows_b]
    for ra, rb in zip(rows_a, rows_b):
        assert all(abs(ra[k] - rb[k]) <= 100 * tolerance * max(1.0, abs(rb[k])) for k in rb), (ra, rb)


@pytest.mark.slow
@pytest.mark.parametrize("precision, depth, batch, steps, tolerance, momentum_tolerance",
                         [("32-true", 20, 32, 4, 1e-4, 0.1), ("64-true", 8, 16, 36, 1e-9, 1e-6)])
def test_a_pack_of_twins_ends_as_the_twins_trained_apart(cifar10_root, tmp_path, precision, depth, batch, steps,
                                                         tolerance, momentum_tolerance):
    """Grouped convolutions round differently from single ones, and early training on the generated data amplifies
    rounding strongly: after 4 fp32 iterations the single ResNet-20's own momentum is 0.93 (relative) from its fp64
    twin's, and as far (0.4) from the same run's with channels-last convolutions, another exact computation. So fp32
    is compared over a few iterations, within 1e-4 (weights) and 0.1 (momentum) or twice the distance of the
    channels-last twins, whichever is larger (the size of fp32 rounding on this CPU), and fp64 (the same
    computation with 1e-16 rounding) over dozens, on ResNet-8 (the same layers, fewer of them), within fixed
    bounds. Both nets warm up (the 110-layer rule, applied from the net's depth here) until their own training error
    falls below 85%: one leaves the warm-up before the other."""
    args = [f"data.batch_size={batch}", "trainer.enable_progress_bar=false", "logger=none", f"model.depth={depth}",
            f"trainer.max_steps={steps}", "trainer.log_every_n_steps=2", f"trainer.precision={precision}",
            f"schedule.warmup_from_depth={depth}", "schedule.warmup_until_error=85", "schedule.milestones=[0.9,0.95]",
            f"data.root={cifar10_root}", *TWINS]
    packed, _ = _sweep(tmp_path, "packed", "packed", *args)
    alone, _ = _sweep(tmp_path, "alone", "basic", *args)
    runs = _runs(packed)
    assert runs.keys() == _runs(alone).keys() and len(runs) == 2
    if precision == "32-true":  # the rounding scale: the same runs with channels-last convolutions
        other, _ = _sweep(tmp_path, "nhwc", "basic", *args, "model.channels_last=true")
        noise = {name.replace("model.channels_last=true,", ""): _distances(run, alone / name.replace(
            "model.channels_last=true,", "")) for name, run in _runs(other).items()}
    for name, run in runs.items():
        status = json.loads((run / "status.json").read_text())
        assert status["status"] == "completed" and sorted(status["pack"]) == sorted(runs)
        bounds = (tolerance, momentum_tolerance)
        if precision == "32-true":
            bounds = tuple(max(bound, 2 * rounding) for bound, rounding in zip(bounds, noise[name]))
        _assert_same_run(run, alone / name, *bounds)
    if steps > 20:  # the pack trained its members on different learning rates at once
        lrs = [[row["lr"] for row in read_rows(run / "metrics.csv") if "lr" in row] for run in runs.values()]
        assert any(a != b for a, b in zip(*lrs))
    for run in runs.values():  # the checkpoint loads into the ordinary single net, and tests as the pack did
        trained = Run(run)
        net, data = trained.trained_net(10), trained.datamodule()
        data.setup()
        with torch.no_grad():
            wrong = sum((net(x).argmax(1) != y).sum().item() for x, y in data.val_dataloader()[-1])
        assert 100.0 * wrong / 320 == read_rows(run / "metrics.csv")[-1]["test/error"]


@pytest.mark.slow
def test_a_diverging_member_fails_alone(cifar10_root, tmp_path):
    args = [*FAST, "trainer.max_steps=24", "trainer.val_check_interval=12", "trainer.precision=64-true",
            f"data.root={cifar10_root}", "seed=1"]
    packed, proc = _sweep(tmp_path, "packed", "packed", *args, "optimizer.lr=0.1,1e6", check=False)
    assert proc.returncode == 1  # a job of the sweep failed
    rows = {r["job"]: r for r in csv.DictReader(open(packed / "summary.csv"))}
    failed = next(r for job, r in rows.items() if "lr=1000000.0" in job)
    assert failed["status"] == "failed" and "training diverged: the loss became NaN or infinite" in failed["reason"]
    survivor = next(job for job in rows if "lr=0.1" in job)
    assert rows[survivor]["status"] == "completed" and rows[survivor]["steps"] == "24"
    alone, _ = _sweep(tmp_path, "alone", "basic", *args, "optimizer.lr=0.1")
    _assert_same_run(packed / survivor, alone / survivor, 1e-9, 1e-6)


@pytest.mark.slow
def test_a_sweep_packs_the_runs_that_may_share_a_network(cifar10_root, tmp_path):
    overrides = [o for o in SWEEP_FAST if o != "logger=none"]  # W&B on: one W&B run per member
    sweep, proc = _sweep(tmp_path, "grid", "packed", *overrides, "model.depth=8,14", "seed=1,2", "trainer.max_steps=6",
                         f"data.root={cifar10_root}", "hydra.launcher.max_pack_size=8")
    assert proc.stdout.count("packed as one job") == 2
    packs = {}
    for name, run in _runs(sweep).items():
        packs.setdefault(tuple(sorted(json.loads((run / "status.json").read_text())["pack"])), []).append(name)
    assert len(packs) == 2 and all(sorted(pack) == sorted(members) for pack, members in packs.items())
    assert {"model.depth=8" in m for members in packs.values() for m in members} == {True, False}
    for depth_runs in packs.values():
        assert len({m.split("model.depth=")[1].split(",")[0] for m in depth_runs}) == 1
    files = sorted(sweep.rglob("run-*.wandb"))
    assert len(files) == 4 and len({f.parents[2] for f in files}) == 4
    for f in files:
        run = summarize(f)
        assert run["name"] in ("resnet-8", "resnet-14") and run["group"] == "grid"
        losses = [m["train/loss"] for m in read_rows(f.parents[2] / "metrics.csv") if "train/loss" in m]
        assert [h["train/loss"] for h in run["history"] if "train/loss" in h] == losses
    alone, proc = _sweep(tmp_path, "alone", "packed", *SWEEP_FAST, "model.depth=8", "seed=1,2",
                         "trainer.max_steps=2", f"data.root={cifar10_root}", "hydra.launcher.max_pack_size=1")
    assert "packed as one job" not in proc.stdout
    assert all("pack" not in json.loads((run / "status.json").read_text()) for run in _runs(alone).values())


@pytest.mark.slow
def test_a_killed_pack_resumes_like_an_uninterrupted_one(cifar10_root, tmp_path):
    args = [*FAST, "trainer.max_steps=60", "checkpoint.every_n_steps=10", f"data.root={cifar10_root}",
            "model.residual=true,false", "seed=1"]
    whole, _ = _sweep(tmp_path, "whole", "packed", *args)
    killed = tmp_path / "killed"
    proc = ZYGOTE.start(train_cmd("-m", *args, f"hydra.sweep.dir={killed}", "hydra/launcher=packed",
                                  "hydra.launcher.gpus_per_node=0"), cwd=tmp_path, start_new_session=True,
                        env={**os.environ, "WANDB_MODE": "offline"})
    deadline = time.time() + 300
    while len(list(killed.glob("*/checkpoints/last.ckpt"))) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its job: the local launcher runs the pack in a child
    proc.wait()
    assert not list(killed.glob("*/checkpoints/final.ckpt")), "the pack finished before it could be killed"
    _sweep(tmp_path, "killed", "packed", *args)
    for name, run in _runs(whole).items():
        assert (killed / name / "metrics.csv").read_text() == (run / "metrics.csv").read_text()
        a, b = _checkpoint(run)["state_dict"], _checkpoint(killed / name)["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in a)
