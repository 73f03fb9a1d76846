"""Issue 7.6: an output directory that cannot be written, or a disk that fills up, is a clear error; every file
already written stays whole."""
import csv
import errno
import json
import os
import resource
import signal
import subprocess
import time

import pytest
from helpers.train import FAST, run_train, train_cmd
from helpers.zygote import ZYGOTE

from deepres.errors import UserError
from deepres.runs.run_dir import RunDir


def test_unwritable_output_directory_is_refused_before_training(tmp_path, cifar10_root):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    proc = run_train(*FAST, f"data.root={cifar10_root}", f"hydra.run.dir={blocker / 'run'}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"cannot write the run directory {blocker / 'run'}" in proc.stderr


def test_too_little_free_space_is_refused(tmp_path):
    run = RunDir(tmp_path)
    run.check_free_space(1 << 20)
    with pytest.raises(UserError, match="MiB free under"):
        run.check_free_space(1 << 60)


def limit_file_size(max_bytes: int):
    """In the child: files may not grow past max_bytes, as on a full disk (EFBIG instead of ENOSPC)."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


@pytest.mark.slow
def test_full_disk_mid_run_is_a_clear_error_and_files_stay_whole(tmp_path, cifar10_root):
    from helpers.train import ROOT

    # depth 8: about 0.6 MB per checkpoint, so metrics.csv and status.json fit but no checkpoint does
    proc = subprocess.run(train_cmd(*FAST, "trainer.max_steps=30", f"data.root={cifar10_root}",
                                    f"hydra.run.dir={tmp_path}"), cwd=ROOT, capture_output=True, text=True,
                          preexec_fn=limit_file_size(200_000), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no space left to write" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "failed"
    assert list(csv.DictReader(open(tmp_path / "metrics.csv")))  # whole and readable
    assert not list((tmp_path / "checkpoints").glob("*.ckpt")) and not list((tmp_path / "checkpoints").glob(".*tmp"))


@pytest.fixture
def small_disk(tmp_path):
    """A 70 MiB file system of its own (tmpfs), filled on demand: the real ENOSPC of a full disk."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=70m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def fill(disk) -> None:
    with open(disk / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root, as CI has (SLURM's cluster too)")
def test_a_disk_filling_mid_run_is_one_paragraph_and_the_same_command_resumes_exactly(tmp_path, small_disk,
                                                                                       cifar10_root):
    args = [*[o for o in FAST if o != "logger=none"], "trainer.max_steps=30", f"data.root={cifar10_root}"]
    run_train(*args, f"hydra.run.dir={tmp_path / 'whole'}", cwd=tmp_path)
    run = small_disk / "run"
    proc = ZYGOTE.start(train_cmd(*args, f"hydra.run.dir={run}"), cwd=tmp_path, capture=True,
                        env={**os.environ, "WANDB_MODE": "offline"})
    deadline = time.time() + 300
    while not (run / "checkpoints" / "last.ckpt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    fill(small_disk)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-3000:]
    assert "Traceback" not in err and len((out + err).splitlines()) <= 10, (out + err)[-3000:]
    assert f"no space left to write in {run}" in err and "re-run the same command to resume" in err
    assert json.loads((run / "status.json").read_text())["status"] == "failed"
    (small_disk / "filler").unlink()
    run_train(*args, f"hydra.run.dir={run}", cwd=tmp_path)
    assert json.loads((run / "status.json").read_text())["status"] == "completed"
    assert (run / "metrics.csv").read_text() == (tmp_path / "whole" / "metrics.csv").read_text()
