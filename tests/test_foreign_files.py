"""Files from elsewhere are data, never code: public weights (model.weights), a colleague's run directory given to
src/evaluate.py or src/report.py, a run directory resumed, and a CIFAR folder given as data.root, each carrying a
pickle that would touch a marker file, are refused in one paragraph naming the file (exit 2) and the marker never
appears; a plain load of the same file does create it."""
import pickle
import shutil

import pytest
import torch
from helpers.poison import poisoned_batch, poisoned_checkpoint, runs_under_plain_load
from helpers.train import FAST, run_entry, run_train

from deepres.data.cifar_files import read_split
from deepres.data.fake_cifar import write_cifar10, write_cifar100
from deepres.errors import UserError
from deepres.models import CifarResNet


def plain_torch_load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def plain_unpickle(path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def assert_refused(proc, path, marker) -> None:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1, (proc.returncode, proc.stderr[-3000:])
    assert f"{path} was refused" in errors[0] and "nothing in it was run" in errors[0], errors[0]
    assert "Traceback" not in proc.stderr and not marker.exists()


@pytest.fixture(scope="module")
def weights_run(tmp_path_factory, cifar10_root):
    """A ResNet-20 run made of weights by src/evaluate.py (no training): what Fig. 7 and evaluate.py read."""
    folder = tmp_path_factory.mktemp("public")
    weights = folder / "w.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in CifarResNet(20).state_dict().items()}}, weights)
    proc = run_entry("evaluate.py", folder / "sweep" / "resnet-20", "model.depth=20", f"model.weights={weights}",
                     "model.weights_format=deepres", f"data.root={cifar10_root}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder / "sweep" / "resnet-20"


def test_public_weights_that_carry_code_are_refused(tmp_path):
    marker, weights = tmp_path / "ran", poisoned_checkpoint(tmp_path / "resnet20.th", tmp_path / "ran")
    proc = run_entry("evaluate.py", tmp_path / "public", "model.depth=20", f"model.weights={weights}",
                     "model.weights_format=akamaster")
    assert_refused(proc, f"model.weights={weights}", marker)
    assert not (tmp_path / "public").exists()
    assert runs_under_plain_load(weights, marker, plain_torch_load)


def test_a_run_directory_whose_checkpoint_carries_code_is_neither_evaluated_nor_reported(weights_run, tmp_path,
                                                                                      cifar10_root):
    run = tmp_path / "sweep" / "resnet-20"
    shutil.copytree(weights_run, run)
    marker, final = tmp_path / "ran", run / "checkpoints" / "final.ckpt"
    poisoned_checkpoint(final, marker)
    assert_refused(run_entry("evaluate.py", run, f"data.root={cifar10_root}"), final, marker)
    assert_refused(run_entry("report.py", tmp_path / "sweep", "fig7", "--data-root", cifar10_root), final, marker)
    assert runs_under_plain_load(final, marker, plain_torch_load)


def test_a_run_resumed_from_a_last_ckpt_that_carries_code_is_refused(tmp_path, cifar10_root):
    """A run directory from elsewhere resumed by re-running its command; its older previous.ckpt is good, but a
    refused file is not damage to work around: the run stops."""
    run, marker = tmp_path / "run", tmp_path / "ran"
    (run / "checkpoints").mkdir(parents=True)
    last = poisoned_checkpoint(run / "checkpoints" / "last.ckpt", marker)
    torch.save({"global_step": 0}, run / "checkpoints" / "previous.ckpt")
    proc = run_train(*FAST, "trainer.max_steps=10", f"data.root={cifar10_root}", f"hydra.run.dir={run}", check=False)
    assert_refused(proc, last, marker)
    assert runs_under_plain_load(last, marker, plain_torch_load)


def test_a_cifar_batch_that_carries_code_is_refused(tmp_path):
    root, marker = write_cifar10(tmp_path / "c10", per_batch=20, test=20), tmp_path / "ran"
    batch = poisoned_batch(root / "cifar-10-batches-py" / "data_batch_2", marker)
    proc = run_train(*FAST, "trainer.max_steps=10", f"data.root={root}", f"hydra.run.dir={tmp_path / 'run'}",
                     check=False)
    assert_refused(proc, batch, marker)
    assert "a CIFAR batch holds only dicts, lists, strings, numbers and numpy arrays" in proc.stderr
    root100 = write_cifar100(tmp_path / "c100", train=20, test=20)
    poisoned_batch(root100 / "cifar-100-python" / "test", marker)
    with pytest.raises(UserError, match="cifar-100-python/test was refused"):
        read_split("cifar100", root100, train=False)
    assert not marker.exists()
    assert runs_under_plain_load(batch, marker, plain_unpickle)
