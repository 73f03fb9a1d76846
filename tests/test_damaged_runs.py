"""A killed run's records damaged afterwards (a copy cut short, a full disk elsewhere, garbage): re-running the same
command names the file, keeps it beside as NAME.damaged, and goes on from what the run still has: the checkpoint
before a damaged last.ckpt, a status.json rebuilt from the checkpoints and metrics.csv. A run restarts from iteration
0 only when asked (+resume=restart). Its wall time counts the part before a kill -9."""
import json
import shutil
import time

import pytest
import torch
from helpers.config import compose_config
from helpers.train import FAST, kill_at_first_checkpoint, run_train

from deepres.errors import UserError
from deepres.training.validate import validate

ARGS = [*FAST, "trainer.max_steps=40"]


@pytest.fixture(scope="module")
def whole(tmp_path_factory, cifar10_root):
    """The uninterrupted run, which each damaged one must end like."""
    run = tmp_path_factory.mktemp("whole")
    run_train(*ARGS, f"data.root={cifar10_root}", f"hydra.run.dir={run}")
    return run


@pytest.fixture(scope="module")
def killed(tmp_path_factory, cifar10_root):
    """The run killed -9 once it has last.ckpt and the previous.ckpt before it (each test damages a copy)."""
    run = tmp_path_factory.mktemp("killed") / "run"
    kill_at_first_checkpoint(*ARGS, f"data.root={cifar10_root}", f"hydra.run.dir={run}", run=run,
                             files=("last.ckpt", "previous.ckpt"))
    return run


def copy(run, tmp_path):
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def rerun(run, cifar10_root, *extra, check=True):
    proc = run_train(*ARGS, f"data.root={cifar10_root}", f"hydra.run.dir={run}", *extra, check=check)
    return proc, proc.stdout + proc.stderr


def cut_short(path) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return data[: len(data) // 2]


def step(path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def same_run(a, b) -> None:
    assert (a / "metrics.csv").read_text() == (b / "metrics.csv").read_text()
    wa, wb = (torch.load(r / "checkpoints" / "final.ckpt", map_location="cpu", weights_only=True)["state_dict"]
              for r in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_checkpoints_hold_only_what_a_weights_only_load_takes(whole, killed):
    """No global beyond torch's own allowlist: the project's checkpoints load as data, with nothing allowed extra."""
    for path in [whole / "checkpoints" / "final.ckpt", *(killed / "checkpoints").glob("*.ckpt")]:
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == [], path
    assert step(killed / "checkpoints" / "previous.ckpt") < step(killed / "checkpoints" / "last.ckpt")
    assert not (whole / "checkpoints" / "previous.ckpt").exists()  # final.ckpt ends the need for it


def test_a_damaged_last_ckpt_is_named_and_the_run_resumes_from_the_one_before(killed, whole, tmp_path, cifar10_root):
    run = copy(killed, tmp_path)
    last, previous = run / "checkpoints" / "last.ckpt", run / "checkpoints" / "previous.ckpt"
    before = step(previous)
    damaged = cut_short(last)
    _, out = rerun(run, cifar10_root)
    assert f"{last} is damaged (not a whole zip archive" in out
    assert f"set aside as last.ckpt.damaged, resuming from {previous} (iteration {before})" in out
    assert (run / "checkpoints" / "last.ckpt.damaged").read_bytes() == damaged
    same_run(whole, run)


def test_with_no_good_checkpoint_the_run_restarts_only_when_asked(killed, whole, tmp_path, cifar10_root):
    run = copy(killed, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    (run / "checkpoints" / "previous.ckpt").unlink(missing_ok=True)
    damaged = cut_short(last)
    for _ in range(2):  # and the same on a re-run: nothing was moved or restarted
        proc, out = rerun(run, cifar10_root, check=False)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, out[-3000:]
        assert f"{last} is damaged" in errors[0] and "+resume=restart" in errors[0]
        assert last.read_bytes() == damaged and json.loads((run / "status.json").read_text())["status"] == "failed"
    _, out = rerun(run, cifar10_root, "+resume=restart")
    assert f"{last} is damaged" in out and "the run restarts from iteration 0, as +resume=restart asks" in out
    assert "training to iteration 40 from the start" in out
    assert (run / "checkpoints" / "last.ckpt.damaged").read_bytes() == damaged
    same_run(whole, run)


def test_resume_takes_restart_alone():
    with pytest.raises(UserError, match="resume='again' is unknown; the one value is restart"):
        validate(compose_config("+resume=again"))


def test_a_damaged_status_of_a_completed_run_is_rebuilt_and_the_run_left_as_it_is(whole, tmp_path, cifar10_root):
    run = copy(whole, tmp_path)
    status = json.loads((run / "status.json").read_text())
    final, rows = (run / "checkpoints" / "final.ckpt").read_bytes(), (run / "metrics.csv").read_text()
    (run / "status.json").write_text('{"status": "comp')
    _, out = rerun(run, cifar10_root)
    assert f"{run / 'status.json'} is damaged (not JSON" in out and "the run completed at iteration 40" in out
    assert "training to iteration" not in out and "already finished" in out
    assert (run / "status.json.damaged").read_text() == '{"status": "comp'
    rebuilt = json.loads((run / "status.json").read_text())
    assert rebuilt.pop("rebuilt").startswith("status.json was damaged")
    assert rebuilt == {k: v for k, v in status.items() if k != "wall_time_s"}  # the wall time is lost, not invented
    assert (run / "checkpoints" / "final.ckpt").read_bytes() == final and (run / "metrics.csv").read_text() == rows


def test_a_damaged_status_of_a_killed_run_is_named_and_the_run_resumes(killed, whole, tmp_path, cifar10_root):
    run = copy(killed, tmp_path)
    (run / "status.json").write_bytes(b"\x00" * 64)
    _, out = rerun(run, cifar10_root)
    assert f"{run / 'status.json'} is damaged" in out and "resumes from its checkpoints" in out
    assert (run / "status.json.damaged").read_bytes() == b"\x00" * 64
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "completed" and "rebuilt" in status
    same_run(whole, run)


def test_the_wall_time_counts_the_part_before_a_kill(killed, tmp_path, cifar10_root):
    """status.json keeps the running total at each checkpoint, so the part before a kill -9 counts."""
    before = json.loads((killed / "status.json").read_text())
    assert before["status"] == "running" and before["wall_time_s"] > 0
    run = copy(killed, tmp_path)
    started = time.time()
    rerun(run, cifar10_root)
    resumed = time.time() - started
    total = json.loads((run / "status.json").read_text())["wall_time_s"]
    assert before["wall_time_s"] < total <= before["wall_time_s"] + resumed + 0.1
