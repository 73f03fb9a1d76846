"""The sweep launchers (hydra/launcher=slurm, hydra/launcher=local) without a cluster: the sbatch script a config
makes, the local launcher's limit on jobs at once, failed jobs recorded, and a real local sweep."""
import csv
import json

import pytest
from helpers.config import compose_config, hydra_context
from helpers.train import FAST, ROOT, run_train
from hydra.core.utils import JobStatus
from hydra.utils import instantiate
from submitit.core.utils import UncompletedJobError

from deepres.runs.run_dir import RunDir
from hydra_plugins.deepres_launchers.slurm_fit import Nodes, fit


def _launcher(tmp_path, *overrides: str):
    cfg = compose_config(f"hydra.sweep.dir={tmp_path}", *overrides, hydra=True)
    return instantiate(cfg.hydra.launcher)


def test_slurm_launcher_asks_for_a_task_and_a_gpu_per_device_and_their_share_of_a_node(tmp_path):
    launcher = _launcher(tmp_path, "hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2", "trainer.devices=4",
                         "hydra.launcher.partition=gpu", "hydra.launcher.account=lab", "hydra.launcher.qos=high",
                         "hydra.launcher.constraint=a100", "hydra.launcher.timeout_min=240",
                         "hydra.launcher.setup=[module load cuda]",
                         "+hydra.launcher.additional_parameters.mail-type=END")
    assert type(launcher).__name__ == "SlurmLauncher"  # (Hydra re-imports plugins: compare names)
    node = Nodes("gpu", cpus=64, mem_mb=512 * 1024, gpus=8)  # as sinfo describes a node of 8 GPUs
    fitted = fit(launcher.params, node)
    assert fitted == {"gpus_per_node": 4, "cpus_per_task": 8, "mem_gb": 256}  # half the GPUs: half the node
    script = launcher.executor(**fitted)._executor._make_submission_file_text("python -m job", "uid")
    for flag in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu", "--account=lab",
                 "--qos=high", "--constraint=a100", "--time=240", "--signal=USR2@120", "--cpus-per-task=8",
                 "--mem=256GB", "--mail-type=END"):
        assert f"#SBATCH {flag}\n" in script, flag
    assert "\nmodule load cuda\n" in script and "\nsrun " in script
    assert fit(launcher.params, Nodes("cpu", cpus=2, mem_mb=21694, gpus=0)) == {  # a node without GPUs: all of it
        "gpus_per_node": None, "cpus_per_task": 1, "mem_gb": 21}  # (split between the 4 tasks: 2 // 4 -> 1)
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
    assert len(launcher.submit(executor, [(print, ())] * 5)) == 5
    assert executor.most_running == 2


@pytest.mark.parametrize("recorded", [None, "running", "completed"])
def test_a_job_that_ended_without_a_result_is_failed_and_its_run_marked_so(tmp_path, recorded):
    class KilledJob:
        job_id, state = "7_1", "OUT_OF_MEMORY"
        paths = type("Paths", (), {"stderr": tmp_path / "7_1_0_log.err"})

        def results(self):
            raise UncompletedJobError("Job 7_1 has not produced any output")

    launcher = _launcher(tmp_path, "hydra/launcher=slurm")
    cfg = compose_config(f"hydra.sweep.dir={tmp_path}", "hydra/launcher=slurm", hydra=True)
    launcher.setup(hydra_context=hydra_context(cfg), task_function=print, config=cfg)
    run = RunDir(launcher.job_config(["model.depth=8"], 3, "7_1").hydra.runtime.output_dir)
    if recorded:
        run.write_status(status=recorded)
    result = launcher.returns(KilledJob(), [(["model.depth=8"], 3)])[3]
    assert result.status == JobStatus.FAILED and "slurm job 7_1 ended OUT_OF_MEMORY" in str(result._return_value)
    status = json.loads((run.path / "status.json").read_text())  # the project's callback, fired by the launcher
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
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "tests" / "apps"))  # its JobCounter callback, in the jobs
    again = run_train(*args, "+hydra.callbacks.count._target_=foreign_app.JobCounter",  # a re-launched sweep's jobs
                      f"+hydra.callbacks.count.path={tmp_path / 'callbacks.txt'}")   # find their runs finished
    events = sorted((tmp_path / "callbacks.txt").read_text().split("\n")[:-1])
    assert events == ["end 0 COMPLETED", "end 1 COMPLETED", "start 0", "start 1"]  # once per job, skipped or not
    relaunched = sorted(set((tmp_path / ".submitit").rglob("*_log.err")) - set(logs))
    outputs = [p.read_text() + p.with_suffix(".out").read_text() for p in relaunched]
    assert len(outputs) == 2 and all("already finished" in out and "reached" not in out for out in outputs)
    assert [r["steps"] for r in csv.DictReader(open(tmp_path / "summary.csv"))] == ["10", "10"]
    assert "completed" in again.stdout
