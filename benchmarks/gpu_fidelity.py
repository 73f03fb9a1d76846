"""The paper's full CIFAR-10 schedule on one GPU, within 9 minutes: ResNet-20, plain-20, ResNet-56 and plain-56, 64k
iterations each in the default precision (bf16 autocast on CUDA), and ResNet-20 once more in fp32 (the paper's), as
the packed launcher trains them (three packs side by side), on the CIFAR-10 copy:

    python benchmarks/gpu_fidelity.py --out DIR [--budget 510] [--dry] [key=value ...]     (make gpu-fidelity)

Runs that do not finish in the budget are interrupted (they stop at a checkpoint, resumable) and reported as
far as they got. DIR gets report.md (each run's steps, final test error, wall time, beside the paper's), results.json
and each run's metrics.csv. The runs use model.compile=step_graph; if that sweep fails at once, it is run again
with model.compile=false. --dry: 4 iterations of each on generated data, on the CPU (every part of the path: training,
evaluation, checkpoints, report)."""
import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpu_bundle import BUNDLE, ROOT, cifar_root, environment, machine_line

sys.path.insert(0, str(ROOT / "src"))  # where the project is not installed (a lent GPU machine)
from deepres.runs.metrics_csv import read_rows  # noqa: E402

# He et al. 2016, Table 6: CIFAR-10 test error (%)
PAPER = {"resnet-20": 8.75, "resnet-56": 6.97, "plain-20": None, "plain-56": None}
FP32 = "trainer.precision=32-true"  # the fifth run of sweeps/fidelity.yaml: ResNet-20 as the paper trained it
SWEEP = ["+sweep=fidelity", "hydra/launcher=packed", "logger=none", "trainer.enable_progress_bar=false"]
DRY = ["trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.log_every_n_steps=1",
       "data.batch_size=8", "data.eval_batch_size=500", "hydra.launcher.gpus_per_node=0"]
BUDGET = 510  # seconds: the command must end within 9 minutes, data building and reporting included
GRACE = 30  # seconds from the stop to the kill: on a GPU an iteration or an evaluation takes well under one


def sweep(sweep_dir: Path, overrides: list[str], env: dict, seconds: float, grace: float = GRACE
          ) -> tuple[int | None, float]:
    """Train the sweep; stop it when `seconds` run out. (exit status or None when stopped, seconds taken).

    The stop is SIGTERM to all the sweep's processes: each run finishes its iteration, saves last.ckpt and
    records itself interrupted (submitit's local controllers forward it and wait; Hydra's process just ends)."""
    argv = [sys.executable, str(ROOT / "src" / "train.py"), "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    began = time.perf_counter()
    with open(sweep_dir.parent / f"{sweep_dir.name}.log", "w") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            return proc.wait(timeout=max(1.0, seconds)), time.perf_counter() - began
        except subprocess.TimeoutExpired:
            subprocess.run(["pkill", "-TERM", "-s", str(proc.pid)], check=False)
            if not session_ended(proc, grace):
                subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)], check=False)
            proc.wait()
            return None, time.perf_counter() - began


def session_ended(leader: subprocess.Popen, seconds: float) -> bool:
    """Whether every process of the leader's session has exited within `seconds`. The leader is reaped as soon as
    it exits: unreaped, it stays in the session as a zombie, which pgrep lists, and the whole grace would pass."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        leader.poll()
        if subprocess.run(["pgrep", "-s", str(leader.pid)], capture_output=True).returncode == 1:
            return True
        time.sleep(0.2)
    return False


def runs(sweep_dir: Path) -> list[dict]:
    """Each run's status.json, with, for a run stopped early, how far its metrics.csv got: the last row's step and
    the last test error."""
    out = []
    for status_file in sorted(sweep_dir.glob("*/status.json")):
        run = {**json.loads(status_file.read_text()), "dir": str(status_file.parent)}
        run["label"] = run.get("name", status_file.parent.name) + ("-fp32" if FP32 in run.get("overrides", "") else "")
        rows = read_rows(status_file.parent / "metrics.csv") if (status_file.parent / "metrics.csv").exists() else []
        tested = [row for row in rows if "test/error" in row]
        run.setdefault("steps", rows[-1]["step"] if rows else 0)
        if tested:
            run.setdefault("test/error", tested[-1]["test/error"])
        out.append(run)
    return out


def report(out: Path, results: list[dict], command: str, attempts: list[dict], machine: str) -> None:
    lines = ["# GPU fidelity: the paper's CIFAR-10 schedule", "", f"Machine: {machine}", "",
             f"Command: `{command}`", "", "Sweeps: " + "; ".join(
                 f"`{a['compile']}` exit {a['exit']} after {a['seconds']:.0f} s" for a in attempts), "",
             "| run | status | iterations | test error (%) | paper (%) | train error (%) | wall (s) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        paper = PAPER.get(r["name"])
        lines.append(f"| {r['label']} | {r.get('status')} | {r.get('steps')} | {r.get('test/error', '-')} | "
                     f"{paper if paper is not None else '-'} | {r.get('train/error', '-')} | "
                     f"{r.get('wall_time_s', '-')} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"command": command, "attempts": attempts, "runs": results},
                                                 indent=1))
    for r in results:
        if (Path(r["dir"]) / "metrics.csv").exists():
            shutil.copy2(Path(r["dir"]) / "metrics.csv", out / f"{r['label']}.metrics.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", type=float, default=BUDGET, help="seconds for the whole command")
    parser.add_argument("--dry", action="store_true", help="4 iterations on generated data, on the CPU")
    parser.add_argument("--grace", type=float, default=GRACE, help="seconds from the stop to the kill")
    parser.add_argument("overrides", nargs="*", help="more overrides for every run (key=value)")
    args = parser.parse_args()
    deadline = time.perf_counter() + args.budget
    args.out.mkdir(parents=True, exist_ok=True)
    env = environment(BUNDLE)
    work = Path(tempfile.mkdtemp(prefix="deepres-fidelity-"))
    if args.dry:
        from deepres.data.fake_cifar import write_cifar10
        data = write_cifar10(work / "cifar10", test=64)  # as make smoke-fig6: evaluations are a fraction of a run
    else:
        data = cifar_root(BUNDLE)
    overrides = [*SWEEP, f"data.root={data}", *(DRY if args.dry else []), *args.overrides]
    attempts, results = [], []
    for compile in ("model.compile=step_graph", "model.compile=false"):
        sweep_dir = work / compile.split("=")[1]
        status, seconds = sweep(sweep_dir, [*overrides, compile], env, deadline - time.perf_counter() - 20,
                                args.grace)
        attempts.append({"compile": compile, "exit": status, "seconds": seconds, "log": str(sweep_dir) + ".log"})
        results = runs(sweep_dir)
        if status is None or status == 0 or seconds > 90:
            break  # finished, interrupted, or failed after training a while: nothing to gain from the fallback
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    report(args.out, results, command, attempts, machine_line(env))
    log = Path(attempts[-1]["log"])
    if log.exists():
        (args.out / "sweep.log").write_text("\n".join(log.read_text().splitlines()[-200:]) + "\n")
    print((args.out / "report.md").read_text())
    sys.exit(0 if results and attempts[-1]["exit"] in (0, None) else 1)


if __name__ == "__main__":
    main()
