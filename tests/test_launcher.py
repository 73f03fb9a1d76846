"""The sweep launchers (hydra/launcher=slurm, hydra/launcher=local) without a cluster: the sbatch script a config
makes, the local launcher's limit on jobs at once, failed jobs recorded, and a real local sweep."""
import csv
import json

import pytest
from helpers.config import compose_config
from helpers.train import FAST, run_train
from hydra.core.utils import JobStatus
from hydra.utils import instantiate
from submitit.core.utils import UncompletedJobError

from deepres.runs.run_dir import RunDir


def _launcher(tmp_path, *overrides: str):
    cfg = compose_config(f"hydra.sweep.dir={tmp_path}", *overrides, hydra=True)
    return instantiate(cfg.hydra.launcher)


def test_slurm_launcher_asks_for_a_task_and_a_gpu_per_device_on_each_node(tmp_path):
    launcher = _launcher(tmp_path, "hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2", "trainer.devices=4",
                         "hydra.launcher.partition=gpu", "hydra.launcher.account=lab", "hydra.launcher.qos=high",
                         "hydra.launcher.constraint=a100", "hydra.launcher.timeout_min=240",
                         "hydra.launcher.setup=[module load cuda]",
                         "+hydra.launcher.additional_parameters.mail-type=END")
    assert type(launcher).__name__ == "SlurmLauncher"  # (Hydra re-imports plugins: compare names)
    script = launcher._executor()._executor._make_submission_file_text("python -m job", "uid")
    for flag in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu", "--account=lab",
                 "--qos=high", "--constraint=a100", "--time=240", "--signal=USR2@120", "--cpus-per-task=8",
                 "--mem=32GB", "--mail-type=END"):
        assert f"#SBATCH {flag}\n" in script, flag
    assert "\nmodule load cuda\n" in script and "\nsrun " in script
    default_setup = _launcher(tmp_path, "hydra/launcher=slurm").params["setup"]
    assert default_setup == ['if [ -n "$SLURM_CPUS_PER_TASK" ]; then export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK; fi']


def test_local_launcher_runs_at_most_array_parallelism_jobs_at_once(tmp_path):
    class Job:
        """Done at its fourth poll."""
        polls = 0

        def done(self) -> bool:
            self.polls += 1
            return self.polls > 3

        running = property(lambda self: self.polls <= 3)

    class Executor:
        def __init__(self):
            self.jobs, self.most_running = [], 0

        def submit(self, fn, *args):
            self.jobs.append(Job())
            self.most_running = max(self.most_running, sum(j.running for j in self.jobs))
            return self.jobs[-1]

    launcher = _launcher(tmp_path, "hydra/launcher=local", "hydra.launcher.array_parallelism=2")
    assert type(launcher).__name__ == "LocalLauncher"
    executor = Executor()
    assert len(launcher._submit(executor, [(print, ())] * 5)) == 5
    assert executor.most_running == 2


@pytest.mark.parametrize("recorded", [None, "running", "completed"])
def test_a_job_that_ended_without_a_result_is_marked_failed(tmp_path, recorded):
    class KilledJob:
        job_id, state = "7_1", "OUT_OF_MEMORY"
        paths = type("Paths", (), {"stderr": tmp_path / "7_1_0_log.err"})

        def results(self):
            raise UncompletedJobError("Job 7_1 has not produced any output")

    run = RunDir(tmp_path / "job")
    if recorded:
        run.write_status(status=recorded)
    launcher = _launcher(tmp_path, "hydra/launcher=slurm")
    launcher._job_dir = lambda overrides: run.path
    result = launcher._results(KilledJob(), [(["model.depth=8"], 3)])[3]
    assert result.status == JobStatus.COMPLETED and result.return_value is None  # the sweep goes on
    status = json.loads((run.path / "status.json").read_text())
    if recorded == "completed":
        assert status == {"status": "completed"}
    else:
        assert status["status"] == "failed" and "slurm job 7_1 ended OUT_OF_MEMORY" in status["reason"]


@pytest.mark.slow
def test_local_launcher_sweep_runs_each_job_in_its_own_process_and_not_twice(cifar10_root, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two CPU jobs side by side: one thread each
    args = ["-m", "model.residual=true,false", *FAST, "trainer.max_steps=10", f"data.root={cifar10_root}",
            f"hydra.sweep.dir={tmp_path}", "hydra/launcher=local", "hydra.launcher.gpus_per_node=0"]
    run_train(*args)
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert sorted(r["name"] for r in rows) == ["plain-8", "resnet-8"]
    assert {(r["status"], r["steps"]) for r in rows} == {("completed", "10")}
    logs = sorted((tmp_path / ".submitit").rglob("*_log.err"))
    assert len(logs) == 2 and all("max_steps=10` reached" in p.read_text() for p in logs)
    again = run_train(*args)  # a re-launched sweep submits no finished job
    assert again.stdout.count("(finished: skipped)") == 2
    assert sorted((tmp_path / ".submitit").rglob("*_log.err")) == logs
