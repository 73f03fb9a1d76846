"""The launchers serve any Hydra app, not only this project's (tests/apps/foreign_app.py): a job that dies without a
result is FAILED with the scheduler's verdict and its callbacks fire once; on SLURM, resources left null fit the
partition and sbatch's refusals end in one paragraph that names the launcher key to change."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.slurm_cluster import cluster_answers

APPS = Path(__file__).parent / "apps"
needs_cluster = [pytest.mark.slurm, pytest.mark.skipif(not os.environ.get("CI") and not cluster_answers(),
                                                      reason="no SLURM cluster answers (make slurm-up starts one)")]


def on_cluster(test):
    for mark in needs_cluster:
        test = mark(test)
    return test


def run_app(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{APPS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, str(APPS / "foreign_app.py"), "-m", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                           "+hydra.callbacks.count._target_=foreign_app.JobCounter",
                           f"+hydra.callbacks.count.path={tmp_path / 'callbacks.txt'}", *overrides],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("launcher", [pytest.param(["hydra/launcher=deepres_local"], id="local"),
                                      pytest.param(["hydra/launcher=deepres_slurm", "hydra.launcher.cpus_per_task=1",
                                                    "hydra.launcher.mem_gb=1"], id="slurm", marks=needs_cluster)])
def test_a_job_that_dies_is_failed_with_its_reason_and_its_callbacks_fire_once(tmp_path, launcher):
    proc = run_app(tmp_path, "die=false,true", "+hydra.sweep.mode=750", *launcher)
    assert (tmp_path / "sweep").stat().st_mode & 0o777 == 0o750  # hydra.sweep.mode, as upstream applies it
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Error executing job with overrides: ['die=True']" in proc.stderr
    verdict = "ended FAILED without a result" if "slurm" in launcher[0] else "ended FINISHED without a result"
    assert re.search(rf"(local|slurm) job \S+ {verdict} \(log: \S+_log.err\)", proc.stderr), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    events = sorted((tmp_path / "callbacks.txt").read_text().split("\n")[:-1])
    assert events == ["end 0 COMPLETED", "end 1 FAILED", "start 0", "start 1"]


@pytest.mark.parametrize("overrides, key", [
    (["hydra.launcher.gpus_per_node=1"], "hydra.launcher.gpus_per_node"),  # found against sinfo before sbatch
    (["hydra.launcher.gres=gpu:1"], "hydra.launcher.gpus_per_node or hydra.launcher.gpus_per_task or "
                                    "hydra.launcher.gres"),                 # sbatch's own refusal
    (["hydra.launcher.mem_gb=100000"], "hydra.launcher.mem_gb"),
    (["hydra.launcher.cpus_per_task=64"], "hydra.launcher.cpus_per_task"),
    (["hydra.launcher.partition=nowhere"], "hydra.launcher.partition"),
])
@on_cluster
def test_an_sbatch_refusal_is_one_paragraph_naming_the_key_to_change(tmp_path, overrides, key):
    proc = run_app(tmp_path, "value=1,2", "hydra/launcher=deepres_slurm", *overrides)
    assert proc.returncode == 1
    message, *rest = proc.stderr.strip().split("\n\n")  # and Hydra's hint: HYDRA_FULL_ERROR=1 for a traceback
    assert "\n" not in message and message.startswith("SLURM refused the sweep's jobs: "), proc.stderr
    assert rest == ["Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace."]
    assert f"Change {key}" in message and "sbatch: error" not in message


@on_cluster
def test_resources_left_null_fit_the_partition(tmp_path):
    proc = run_app(tmp_path, "value=1", "hydra/launcher=deepres_slurm")  # no resource set: as on any partition
    assert proc.returncode == 0, proc.stderr[-3000:]
    nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%c %m"], capture_output=True, text=True).stdout.split()
    cpus, mem_gb = int(nodes[0]), int(nodes[1]) // 1024
    (script,) = (tmp_path / "sweep" / ".submitit").rglob("*_submission.sh")
    text = script.read_text()
    assert f"#SBATCH --cpus-per-task={cpus}\n" in text and f"#SBATCH --mem={mem_gb}GB\n" in text
    assert "gpus" not in text and "gres" not in text  # the CI cluster's nodes have none


@on_cluster
def test_a_controller_that_does_not_answer_is_named_not_a_launcher_key(tmp_path, monkeypatch):
    """The cluster's own slurm.conf, its controller's port moved to one where nothing listens: sinfo and sbatch
    cannot reach it, as when slurmctld is down."""
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf"))
    lines = [line for line in conf.read_text().splitlines() if not line.startswith("SlurmctldPort")]
    (tmp_path / "slurm.conf").write_text("\n".join([*lines, "SlurmctldPort=9"]) + "\n")
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "slurm.conf"))
    proc = run_app(tmp_path, "value=1,2", "hydra/launcher=deepres_slurm")
    assert proc.returncode == 1
    message = proc.stderr.strip().split("\n\n")[0]
    assert "\n" not in message and message.startswith("SLURM's controller does not answer (sinfo: "), proc.stderr
    assert "Unable to contact slurm controller" in message and "`make slurm-up`" in message
    assert "Change hydra.launcher" not in message and not (tmp_path / "sweep" / ".submitit").exists()
