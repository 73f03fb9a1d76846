"""Issue 7.7: concurrent sweeps under the same root never share or overwrite a run directory."""
import pytest
from helpers.train import FAST, ROOT, train_cmd
from helpers.zygote import ZYGOTE


@pytest.mark.slow
def test_two_sweeps_started_together_get_their_own_directories(tmp_path, cifar10_root):
    command = train_cmd("-m", "model.residual=true,false", *FAST, "trainer.max_steps=5", f"data.root={cifar10_root}")
    procs = [ZYGOTE.start(command, cwd=tmp_path, capture=True) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    sweeps = sorted((tmp_path / "multirun").iterdir())
    assert len(sweeps) == 2
    for sweep in sweeps:
        assert len(list(sweep.glob("*/status.json"))) == 2 and (sweep / "summary.csv").exists()


@pytest.mark.slow
def test_a_run_directory_in_use_is_refused_not_shared(tmp_path, cifar10_root):
    """Two sweeps forced into one directory: the second cannot enter a job the first is running."""
    command = train_cmd("-m", "model.residual=true", *FAST, "trainer.max_steps=400", f"data.root={cifar10_root}",
                        f"hydra.sweep.dir={tmp_path}")
    first = ZYGOTE.start(command, cwd=ROOT)
    try:
        job = next_job_dir(tmp_path, first)
        second = ZYGOTE.run(command, cwd=ROOT, timeout=600)
        said = second.stdout + second.stderr
        assert second.returncode == 1 and f"the run directory {job} is in use by pid {first.pid}" in said
    finally:
        first.kill()
        first.wait()


def next_job_dir(sweep, proc):
    import time

    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        found = [p.parent for p in sweep.glob("*/metrics.csv")]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError("the first sweep never started its job")
