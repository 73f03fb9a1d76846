"""model.compile=step_graph: the whole iteration (batch, forward, backward, optimiser step, sums) as one captured CUDA
graph. On a CPU the same body runs eagerly: a run with the setting computes what the run without it computes, its
rows, weights and checkpoints, alone and in a pack, resumed or not."""

import pytest
import torch
from helpers.train import FAST, kill_at_first_checkpoint, run_train

SETTING = ["model.compile=step_graph", "optimizer.fused=true"]
ARGS = [*FAST, "trainer.max_steps=30"]


def final(run) -> dict:
    return torch.load(run / "checkpoints" / "final.ckpt", map_location="cpu", weights_only=False)


def same_run(a, b) -> None:
    assert (a / "metrics.csv").read_text() == (b / "metrics.csv").read_text()
    ca, cb = final(a), final(b)
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    assert all(torch.equal(ca["state_dict"][k], cb["state_dict"][k]) for k in ca["state_dict"])
    (ga,), (gb,) = (c["optimizer_states"][0]["param_groups"] for c in (ca, cb))
    assert ga.keys() == gb.keys() and all(ga[k] == gb[k] for k in ga if k != "lr")
    assert isinstance(gb["lr"], float) and gb["lr"] == pytest.approx(ga["lr"], rel=1e-7)  # a number, the lr in fp32


@pytest.mark.slow
def test_a_captured_step_computes_what_the_eager_step_computes(cifar10_root, tmp_path):
    data = f"data.root={cifar10_root}"
    run_train(*ARGS, data, "optimizer.fused=true", f"hydra.run.dir={tmp_path / 'eager'}")
    run_train(*ARGS, data, *SETTING, f"hydra.run.dir={tmp_path / 'graph'}")
    same_run(tmp_path / "eager", tmp_path / "graph")
    # a pack: PackedSGD's per-member learning rates are read in place too
    pack = ["-m", *ARGS, data, "model.residual=true,false", "seed=1", "hydra/launcher=packed",
            "hydra.launcher.gpus_per_node=0"]
    run_train(*pack, "optimizer.fused=true", f"hydra.sweep.dir={tmp_path / 'pack'}", cwd=tmp_path)
    run_train(*pack, *SETTING, f"hydra.sweep.dir={tmp_path / 'pack_graph'}", cwd=tmp_path)
    for residual in ("true", "false"):
        same_run(next((tmp_path / "pack").glob(f"*residual={residual}*")),
                 next((tmp_path / "pack_graph").glob(f"*residual={residual}*")))


@pytest.mark.slow
def test_a_captured_step_resumes_exactly(cifar10_root, tmp_path):
    args = [*ARGS, *SETTING, "trainer.max_steps=60", f"data.root={cifar10_root}"]
    run_train(*args, f"hydra.run.dir={tmp_path / 'whole'}")
    killed = tmp_path / "killed"
    kill_at_first_checkpoint(*args, f"hydra.run.dir={killed}", run=killed)
    run_train(*args, f"hydra.run.dir={killed}")
    same_run(tmp_path / "whole", killed)


@pytest.mark.parametrize("overrides, message", [
    (["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu"], "on 2 processes"),
    (["data=imagenet", "model=imagenet_resnet", "model.depth=18"], "data=imagenet"),
])
def test_a_captured_step_is_refused_where_it_cannot_run(cifar10_root, tmp_path, overrides, message):
    proc = run_train(*FAST, *SETTING, *overrides, f"data.root={cifar10_root}", f"hydra.run.dir={tmp_path}",
                     check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "model.compile=step_graph" in proc.stderr and message in proc.stderr
