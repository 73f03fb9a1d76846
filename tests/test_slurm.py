"""Sweeps on a real SLURM cluster through hydra/launcher=slurm: an array job per sweep, requeue on preemption and
near the time limit with an exact resume, a killed job marked failed while the sweep goes on, DDP over SLURM tasks.

Run by `make test` when a cluster answers (`make slurm-up` starts one on this machine); CI always starts one."""
import csv
import json
import os
import re
import shlex
import signal
import subprocess

import pytest
import torch
from helpers.ddp_reference import assert_matches
from helpers.detection import TINY, map50
from helpers.slurm_cluster import SLURM, array_tasks, cluster_answers, job_log, start_requeued, states, wait_for
from helpers.train import FAST, ROOT, run_train, train_cmd
from helpers.wandb_records import summarize
from omegaconf import OmegaConf

from deepres.detection.generated import write_voc
from deepres.runs.metrics_csv import read_rows

pytestmark = [pytest.mark.slurm,
              pytest.mark.skipif(not os.environ.get("CI") and not cluster_answers(),
                                 reason="no SLURM cluster answers (make slurm-up starts one)")]
LONG = [*FAST, "trainer.max_steps=100", "trainer.val_check_interval=20", "checkpoint.every_n_steps=20"]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    if not cluster_answers():
        pytest.fail("CI is set but no SLURM cluster answers: .ci/slurm-up.sh starts one")


def _summary(sweep_dir) -> dict[str, dict]:
    return {r["name"]: r for r in csv.DictReader(open(sweep_dir / "summary.csv"))}


def _job_dirs(sweep_dir) -> dict[str, object]:
    return {json.loads(p.read_text())["name"]: p.parent for p in sweep_dir.glob("*/status.json")}


def _start_sweep(sweep_dir, *overrides: str, launcher: tuple[str, ...] = tuple(SLURM)) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.Popen(train_cmd("-m", *overrides, f"hydra.sweep.dir={sweep_dir}", *launcher), cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _interrupt_at_first_checkpoint(sweep: subprocess.Popen | None, sweep_dir, interrupts: dict) -> dict[str, str]:
    """Call interrupts[key](SLURM id of the job) as soon as the job whose directory name holds `key` has saved its
    first last.ckpt, while it still runs (80 iterations to go), and the sweep's process (if any) too. Returns
    {key: SLURM id}."""
    ids = {}

    def all_interrupted() -> bool:
        assert sweep is None or sweep.poll() is None, f"the sweep ended early: {sweep.communicate()[1][-3000:]}"
        for key in set(interrupts) - set(ids):
            for ckpt in sweep_dir.glob(f"*{key}*/checkpoints/last.ckpt"):
                assert not (ckpt.parent / "final.ckpt").exists(), f"{ckpt.parents[1].name} ended too early"
                ids[key] = OmegaConf.load(ckpt.parents[1] / ".hydra" / "hydra.yaml").hydra.job.id
                interrupts[key](ids[key])
        return len(ids) == len(interrupts)

    wait_for("the jobs' first checkpoints", all_interrupted)
    return ids


def test_2x2_sweep_is_one_array_job_and_is_summarised(cifar10_root, tmp_path):
    run_train("-m", *FAST, "model.depth=8,14", "model.residual=true,false", "trainer.max_steps=20",
              f"data.root={cifar10_root}", f"hydra.sweep.dir={tmp_path}", *SLURM)
    jobs = array_tasks(tmp_path)
    assert len(jobs) == 4 and len({j.split("_")[0] for j in jobs}) == 1
    assert [states(j) for j in jobs] == [["COMPLETED"]] * 4
    summary = _summary(tmp_path)
    assert sorted(summary) == ["plain-14", "plain-8", "resnet-14", "resnet-8"]
    for name, run in _job_dirs(tmp_path).items():
        rows = read_rows(run / "metrics.csv")
        assert [r["step"] for r in rows if "train/loss" in r] == [5, 10, 15, 20]
        assert [r["step"] for r in rows if "test/error" in r] == [10, 20]
        assert summary[name]["status"] == "completed" and summary[name]["steps"] == "20"
        assert float(summary[name]["test/error"]) == rows[-1]["test/error"]


def test_preempted_and_timed_out_jobs_are_requeued_and_resume_exactly(cifar10_root, tmp_path, monkeypatch):
    args = ["model.residual=true,false", *LONG, f"data.root={cifar10_root}"]
    sweep = _start_sweep(tmp_path / "slurm", *args, "hydra.launcher.timeout_min=5")
    jobs = _interrupt_at_first_checkpoint(sweep, tmp_path / "slurm", {
        "model.residual=true": lambda job: subprocess.run(["scontrol", "requeue", job], check=True),  # preemption
        "model.residual=false": lambda job: subprocess.run(["scancel", "--signal=USR2", job], check=True),  # time limit
    })
    for job in jobs.values():
        start_requeued(job)
    _, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, err[-3000:]
    assert "this job is timed-out" in job_log(tmp_path / "slurm", jobs["model.residual=false"])

    monkeypatch.setenv("OMP_NUM_THREADS", "1")                                 # as in the jobs: the same sums
    run_train("-m", *args, f"hydra.sweep.dir={tmp_path / 'whole'}")             # the same jobs, uninterrupted
    whole, resumed = _job_dirs(tmp_path / "whole"), _job_dirs(tmp_path / "slurm")
    for job, name in zip(jobs.values(), ("resnet-8", "plain-8")):
        assert states(job)[0] == "REQUEUED" and states(job)[-1] == "COMPLETED"
        assert "Restored all states from the checkpoint" in job_log(tmp_path / "slurm", job)
        assert (resumed[name] / "metrics.csv").read_text() == (whole[name] / "metrics.csv").read_text()
        weights = [torch.load(d[name] / "checkpoints" / "final.ckpt", weights_only=False)["state_dict"]
                   for d in (whole, resumed)]
        assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert {r["status"] for r in _summary(tmp_path / "slurm").values()} == {"completed"}


def test_a_killed_job_is_marked_failed_and_a_relaunch_finishes_the_sweep(cifar10_root, tmp_path):
    args = ["model.residual=true,false", *LONG, f"data.root={cifar10_root}"]
    sweep = _start_sweep(tmp_path, *args)
    def oom_kill(job: str) -> None:                                            # the kernel's out-of-memory kill
        os.kill(int((_job_dirs(tmp_path)["plain-8"] / ".lock").read_text().split()[1]), signal.SIGKILL)

    killed = _interrupt_at_first_checkpoint(sweep, tmp_path, {"model.residual=false": oom_kill})["model.residual=false"]
    _, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 1 and f"slurm job {killed} ended FAILED" in err, err[-3000:]
    summary = _summary(tmp_path)
    assert summary["resnet-8"]["status"] == "completed"
    assert summary["plain-8"]["status"] == "failed"
    assert f"slurm job {killed} ended FAILED" in summary["plain-8"]["reason"]

    jobs = array_tasks(tmp_path)
    run_train("-m", *args, f"hydra.sweep.dir={tmp_path}", *SLURM)              # the same command again
    summary = _summary(tmp_path)
    assert {(r["status"], r["steps"]) for r in summary.values()} == {("completed", "100")}
    logs = [job_log(tmp_path, job) for job in set(array_tasks(tmp_path)) - set(jobs)]
    assert sorted("already finished" in log for log in logs) == [False, True]  # the finished run: not trained again
    assert sorted("Restored all states from the checkpoint" in log for log in logs) == [False, True]
    rows = read_rows(_job_dirs(tmp_path)["plain-8"] / "metrics.csv")
    assert [r["step"] for r in rows if "train/loss" in r] == list(range(5, 101, 5))
    assert [r["step"] for r in rows if "test/error" in r] == [20, 40, 60, 80, 100]


def test_ddp_job_runs_one_process_per_slurm_task(cifar10_root, tmp_path):
    overrides = [*FAST, "trainer.max_steps=1", "trainer.log_every_n_steps=1", f"data.root={cifar10_root}"]
    run_train("-m", "trainer=ddp", "trainer.devices=2", "model.bn_batch=16", *overrides,
              f"hydra.sweep.dir={tmp_path}", *SLURM)
    (job,) = array_tasks(tmp_path)
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in job_log(tmp_path, job)
    (run,) = _job_dirs(tmp_path).values()
    assert_matches(run, 2, *overrides)


def test_a_detection_job_trains_over_ddp_and_logs_to_wandb_what_one_process_scores(tmp_path):
    """Faster R-CNN is a run on SLURM like a classifier: trainer=ddp over the job's two tasks, W&B offline beside
    metrics.csv, and the VOC 2007 mAP the two ranks gather (each scores half the test images) is the mAP one process
    scores from the run's final.ckpt."""
    voc = write_voc(tmp_path / "voc", images=10, classes=1)
    overrides = [*(o for o in TINY if o != "logger=none"), "trainer.max_steps=4", "trainer.val_check_interval=4",
                 "model.min_size=192", "model.max_size=256", f"data.root={voc}"]
    run_train("-m", "trainer=ddp", "trainer.devices=2", *overrides, f"hydra.sweep.dir={tmp_path / 'sweep'}", *SLURM,
              "hydra.launcher.mem_gb=2", timeout=600)
    (job,) = array_tasks(tmp_path / "sweep")
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in job_log(tmp_path / "sweep", job)
    (run,) = _job_dirs(tmp_path / "sweep").values()
    assert json.loads((run / "status.json").read_text())["status"] == "completed"
    rows = read_rows(run / "metrics.csv")
    assert [r["step"] for r in rows if "train/loss" in r] == [2, 4] and rows[-1]["step"] == 4
    (wandb_file,) = run.rglob("run-*.wandb")
    logged = {h["_step"]: h for h in summarize(wandb_file)["history"] if "test/mAP50" in h}
    assert logged[4]["test/mAP50"] == pytest.approx(rows[-1]["test/mAP50"], rel=1e-6)
    # one image a batch, as each rank had: a batch pads its images to its largest, which moves the features at edges
    alone = map50(*overrides, "data.eval_batch_size=1", checkpoint=run / "checkpoints" / "final.ckpt")
    assert rows[-1]["test/mAP50"] == pytest.approx(alone, abs=1e-4) and alone > 0, alone


def test_a_pack_is_a_task_of_the_sweeps_array_job_and_resumes_when_requeued(cifar10_root, tmp_path, monkeypatch):
    """Four runs, packs of at most three: one array job of two tasks (a pack of three, a run alone). The pack is
    requeued at its first checkpoint and its runs end as those of an uninterrupted pack."""
    args = ["model.residual=true,false", "seed=1,2", *LONG, f"data.root={cifar10_root}",
            "hydra.launcher.max_pack_size=3"]
    packed_slurm = tuple("hydra/launcher=packed_slurm" if o == "hydra/launcher=slurm" else o for o in SLURM)
    sweep = _start_sweep(tmp_path / "slurm", *args, launcher=packed_slurm)
    requeue = lambda job: subprocess.run(["scontrol", "requeue", job], check=True)  # noqa: E731
    (pack,) = _interrupt_at_first_checkpoint(sweep, tmp_path / "slurm",
                                             {"model.residual=true,seed=1": requeue}).values()
    start_requeued(pack)
    _, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, err[-3000:]
    tasks = array_tasks(tmp_path / "slurm")
    assert len(tasks) == 2 and len({t.split("_")[0] for t in tasks}) == 1 and pack in tasks
    assert states(pack)[0] == "REQUEUED" and states(pack)[-1] == "COMPLETED"
    packs = [json.loads(p.read_text()).get("pack") for p in (tmp_path / "slurm").glob("*/status.json")]
    assert sorted(len(p) if p else 1 for p in packs) == [1, 3, 3, 3]

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as in the jobs: the same sums
    run_train("-m", *args, f"hydra.sweep.dir={tmp_path / 'whole'}", "hydra/launcher=packed",
              "hydra.launcher.gpus_per_node=0", "trainer.accelerator=cpu")
    for status in (tmp_path / "whole").glob("*/status.json"):
        whole, requeued = status.parent, tmp_path / "slurm" / status.parent.name
        assert (requeued / "metrics.csv").read_text() == (whole / "metrics.csv").read_text()
        weights = [torch.load(d / "checkpoints" / "final.ckpt", weights_only=False)["state_dict"]
                   for d in (whole, requeued)]
        assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_detached_sweep_outlives_its_shell_and_the_same_command_reattaches(cifar10_root, tmp_path):
    command = train_cmd("-m", "optimizer.lr=0.1,1000000", *LONG, f"data.root={cifar10_root}",
                        f"hydra.sweep.dir={tmp_path}", *SLURM, "hydra.launcher.detach=true")  # lr 1e6: fails inside
    env = {**os.environ, "WANDB_MODE": "offline"}
    shell = subprocess.Popen(["bash", "-c", f"{shlex.join(command)}; echo exit $?; sleep 600"], cwd=ROOT, env=env,
                             text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    seen = []
    for line in shell.stdout:  # until the sweep is submitted (or the command failed) ...
        seen.append(line)
        if line.startswith(("detached:", "exit ")):
            break
    os.killpg(shell.pid, signal.SIGKILL)  # ... then its shell dies, as with its SSH session
    shell.wait()
    array = re.match(r"detached: SLURM job (\d+) runs the sweep's 2 job\(s\); job (\d+) ends the sweep", seen[-1])
    assert array, "".join(seen)[-3000:]
    submitted = array_tasks(tmp_path)
    assert len(submitted) == 3  # the two jobs in one array, and the job that ends the sweep

    jobs = _interrupt_at_first_checkpoint(None, tmp_path, {
        "lr=0.1": lambda job: subprocess.run(["scontrol", "requeue", job], check=True)})
    start_requeued(jobs["lr=0.1"])
    other = run_train(*[a for a in command[2:] if not a.startswith("optimizer.lr=")], "optimizer.lr=0.1", check=False)
    assert other.returncode == 2 and "holds a detached sweep of other jobs" in other.stderr  # nothing submitted

    attached = run_train(*command[2:], check=False)  # the same command: it waits for the jobs, then the summary
    assert attached.returncode == 1, attached.stderr[-3000:]
    assert "attached to the detached sweep" in attached.stdout + attached.stderr
    assert array_tasks(tmp_path) == submitted  # nothing submitted twice
    rows = {re.search(r"optimizer.lr=(\S+)", r["overrides"]).group(1): r
            for r in csv.DictReader(open(tmp_path / "summary.csv"))}
    assert (rows["0.1"]["status"], rows["0.1"]["steps"]) == ("completed", "100")
    assert rows["1000000"]["status"] == "failed" and "training diverged" in rows["1000000"]["reason"]
    assert states(jobs["lr=0.1"])[0] == "REQUEUED" and states(jobs["lr=0.1"])[-1] == "COMPLETED"
    assert states(array.group(2)) == ["COMPLETED"]  # the end job wrote the summary too
