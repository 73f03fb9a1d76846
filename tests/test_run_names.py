"""A run's directory name: one spelling per run however its values were given, and names over the file system's
limit shortened with a stable hash, so that the same command finds its run again (skip when finished)."""
import json

import pytest
from helpers.train import FAST, run_train

from deepres.config import NAME_MAX, run_dirname


def test_booleans_have_one_spelling_and_no_overrides_is_default():
    assert run_dirname("model.depth=20,model.residual=True") == "model.depth=20,model.residual=true"
    assert run_dirname("model.residual=False,seed=1") == run_dirname("model.residual=false,seed=1")
    assert run_dirname("") == "default"
    assert run_dirname("name=Trueish,x=[True,False]") == "name=Trueish,x=[True,False]"  # only whole values


def test_long_names_are_cut_with_a_hash_of_the_whole():
    overrides = ",".join(f"model.key_number_{i}=value_{i}" for i in range(15))
    name = run_dirname(overrides)
    assert len(name.encode()) <= NAME_MAX and name.startswith("model.key_number_0=value_0")
    assert name == run_dirname(overrides) and name != run_dirname(overrides.replace("value_14", "value_15"))


@pytest.mark.slow
def test_a_run_is_found_again_however_its_booleans_were_spelled(tmp_path, cifar10_root):
    sweep = ["-m", *FAST, "trainer.max_steps=2", f"data.root={cifar10_root}", f"hydra.sweep.dir={tmp_path}"]
    run_train(*sweep, "model.residual=true,false", cwd=tmp_path)
    assert sorted(p.name.split("model.residual=")[1].split(",")[0] for p in tmp_path.glob("*residual*")) == [
        "false", "true"]
    proc = run_train(*sweep, "model.residual=True", cwd=tmp_path)  # as a sweep file or a single run spells it
    assert "already finished" in proc.stdout + proc.stderr and len(list(tmp_path.glob("*residual*"))) == 2


def test_fifteen_overrides_train_and_are_found_again(tmp_path, cifar10_root):
    many = [*FAST, "trainer.max_steps=2", "optimizer.momentum=0.9", "optimizer.weight_decay=0.0001",
            "data.padding=4", "data.flip=true", "data.split_seed=0", "schedule.gamma=0.1", "seed=0"]
    args = [*many, f"data.root={cifar10_root}", f"hydra.sweep.dir={tmp_path}"]
    run_train("-m", *args, cwd=tmp_path)
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(run.name.encode()) <= NAME_MAX and "..." in run.name
    assert json.loads((run / "status.json").read_text())["status"] == "completed"
    proc = run_train("-m", *args, cwd=tmp_path)
    assert "already finished" in proc.stdout + proc.stderr
