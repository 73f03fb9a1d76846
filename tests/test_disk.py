"""Issue 7.6: an output directory that cannot be written, or a disk that fills up, is a clear error; every file
already written stays whole."""
import csv
import json
import resource
import signal

import pytest
from helpers.train import FAST, run_train

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


def test_full_disk_mid_run_is_a_clear_error_and_files_stay_whole(tmp_path, cifar10_root):
    import subprocess

    from helpers.train import ROOT, train_cmd

    # depth 8: about 0.6 MB per checkpoint, so metrics.csv and status.json fit but no checkpoint does
    proc = subprocess.run(train_cmd(*FAST, "trainer.max_steps=30", f"data.root={cifar10_root}",
                                    f"hydra.run.dir={tmp_path}"), cwd=ROOT, capture_output=True, text=True,
                          preexec_fn=limit_file_size(200_000), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no space left to write" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "failed"
    assert list(csv.DictReader(open(tmp_path / "metrics.csv")))  # whole and readable
    assert not list((tmp_path / "checkpoints").glob("*.ckpt")) and not list((tmp_path / "checkpoints").glob(".*tmp"))
