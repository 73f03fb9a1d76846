"""The prepared GPU check: every GPU figure the project needs, in one command of at most 8 minutes, into one folder:

    python benchmarks/gpu_check.py --out DIR [--dry] [--budget 470]     (make gpu-check [DRY=1])

Each part is a benchmark script (or the requires_cuda tests) in a process of its own with its own time budget, so a
hang or a crash costs its slot only; the parts run most valuable first and stop at the overall budget. DIR gets
report.md (the machine, torch, commit and command, then each part's table or failure), results.json (each part's
command, status, seconds and output) and steps.csv (the step-time rows). --dry runs every part with tiny settings
on the CPU, so that the script is tested where no GPU is (tests/test_gpu_check.py)."""
import argparse
import csv
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from gpu_bundle import BUNDLE, Runner, environment, fresh_process, machine_line

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


class Part(NamedTuple):
    name: str
    seconds: int  # its budget on the GPU
    args: list[str]  # benchmarks/<script> and its arguments on the GPU (report file arguments added)
    dry: list[str]  # the same part's tiny settings on the CPU


PARTS = [
    Part("steps-resnet20", 60, ["step_times.py", "--nets", "20", "--collector-off"],
         ["step_times.py", "--nets", "8", "--steps", "2", "--warmup", "1", "--batch", "8", "--images", "64",
          "--collector-off"]),
    Part("steps-resnet56", 60, ["step_times.py", "--nets", "56"],
         ["step_times.py", "--nets", "14", "--steps", "1", "--warmup", "1", "--batch", "8", "--images", "64"]),
    Part("steps-resnet110", 75, ["step_times.py", "--nets", "110", "--steps", "100", "--warmup", "20"],
         ["step_times.py", "--nets", "20", "--steps", "1", "--warmup", "1", "--batch", "8", "--images", "64"]),
    Part("packs", 90, ["packed.py", "--graph", "--steps", "100", "--packs", "1", "2", "4", "8", "16"],
         ["packed.py", "--graph", "--steps", "1", "--nets", "resnet20", "--packs", "1", "2", "--batch", "8",
          "--images", "64"]),
    Part("concurrent", 50, ["concurrent_runs.py", "--runs", "1", "4", "--compile", "step_graph", "--steps", "200"],
         ["concurrent_runs.py", "--nets", "resnet8", "--runs", "1", "2", "--compile", "step_graph", "--steps", "1",
          "--warmup", "1", "--batch", "8", "--images", "64"]),
    Part("imagenet", 90, ["imagenet_input.py", "--steps", "20", "--warmup", "5"],
         ["imagenet_input.py", "--nets", "18", "--inputs", "synthetic", "cpu", "--steps", "1", "--warmup", "1",
          "--batch", "2", "--workers", "1", "--images", "8"]),
    Part("detection", 60, ["detection.py", "--steps", "20", "--warmup", "5"], ["detection.py", "--dry"]),
    Part("memory-resnet1202", 45, ["throughput.py", "--nets", "resnet1202", "--configs", "defaults",
                                   "model.checkpoint_activations=true", "--steps", "5", "--warmup", "2"],
         ["throughput.py", "--nets", "resnet8", "--configs", "defaults", "model.checkpoint_activations=true",
          "--steps", "1", "--warmup", "1", "--batch", "8", "--images", "64"]),
    # tests/test_gpu.py holds the requires_cuda tests: collecting the whole suite would cost the part seconds
    Part("requires-cuda-tests", 60, ["-m", "pytest", "-q", "-m", "requires_cuda", "-p", "no:cacheprovider",
                                     "tests/test_gpu.py"],
         ["-m", "pytest", "-q", "-m", "requires_cuda", "-p", "no:cacheprovider", "tests/test_gpu.py"]),
]
BUDGET = 470  # seconds for all parts: the check must end within 8 minutes
DRY_BUDGET = 1200  # a CPU runs the tiny settings without per-part budgets


class Outcome(NamedTuple):
    name: str
    command: str
    status: str  # ok, failed (exit N), over N s, skipped (overall budget spent)
    seconds: float
    report: str  # the part's Markdown table, or the end of its output when it failed
    output: str


def command(part: Part, dry: bool, scratch: Path) -> list[str]:
    args = part.dry if dry else part.args
    if args[0].startswith("-"):  # python's own options: -m pytest ...
        return [sys.executable, *args]
    extra = ["--out", str(scratch / f"{part.name}.md")]
    extra += ["--json", str(scratch / f"{part.name}.json")] if args[0] == "step_times.py" else []
    return [sys.executable, str(HERE / args[0]), *args[1:], *extra]


def run_part(part: Part, dry: bool, scratch: Path, seconds: float, env: dict, run: Runner) -> Outcome:
    argv = command(part, dry, scratch)
    shown = shlex.join(argv)
    began = time.perf_counter()
    try:
        proc = run(argv, env, seconds)
        status, output = ("ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})",
                          proc.stdout + proc.stderr)
    except subprocess.TimeoutExpired as stopped:
        status = f"over {seconds:.0f} s"
        output = "".join(o.decode(errors="replace") if isinstance(o, bytes) else (o or "")
                         for o in (stopped.stdout, stopped.stderr))
    took = time.perf_counter() - began
    table = scratch / f"{part.name}.md"
    if status == "ok" and table.exists():
        report = table.read_text()
    else:
        report = "```\n" + "\n".join(output.strip().splitlines()[-25:]) + "\n```"
    return Outcome(part.name, shown, status, took, report, output[-20000:])


def check(out: Path, dry: bool, budget: float, parts: list[Part], run: Runner = fresh_process) -> list[Outcome]:
    """Run the parts in turn (each with `run`), most valuable first, until the budget is spent; write the report."""
    out.mkdir(parents=True, exist_ok=True)
    env = environment(BUNDLE)
    outcomes, deadline = [], time.perf_counter() + budget
    with tempfile.TemporaryDirectory() as scratch:
        for part in parts:
            left = deadline - time.perf_counter()
            if left < 5:
                outcomes.append(Outcome(part.name, "", "skipped (overall budget spent)", 0.0, "", ""))
                continue
            seconds = left if dry else min(part.seconds, left)
            outcomes.append(run_part(part, dry, Path(scratch), seconds, env, run))
            print(f"{part.name}: {outcomes[-1].status} in {outcomes[-1].seconds:.0f} s", flush=True)
        steps = [row for part in parts if (Path(scratch) / f"{part.name}.json").exists()
                 for row in json.loads((Path(scratch) / f"{part.name}.json").read_text())["rows"]]
    write(out, outcomes, steps, dry, machine_line(env, run))
    return outcomes


def write(out: Path, outcomes: list[Outcome], steps: list[dict], dry: bool, machine: str) -> None:
    invoked = shlex.join([Path(sys.executable).name, *sys.argv])
    head = [f"# GPU check{' (dry run: tiny settings on this machine, not measurements)' if dry else ''}", "",
            f"Machine: {machine}", "", f"Command: `{invoked}`", "",
            "| part | status | seconds |", "|---|---|---|"]
    head += [f"| {o.name} | {o.status} | {o.seconds:.0f} |" for o in outcomes]
    sections = [f"## {o.name}: {o.status}\n\n`{o.command}`\n\n{o.report}" for o in outcomes if o.command]
    (out / "report.md").write_text("\n".join(head) + "\n\n" + "\n\n".join(sections) + "\n")
    (out / "results.json").write_text(json.dumps({"command": invoked, "dry": dry,
                                                  "parts": [o._asdict() for o in outcomes]}, indent=1))
    if steps:
        with open(out / "steps.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(steps[0]))
            writer.writeheader()
            writer.writerows(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the report folder")
    parser.add_argument("--dry", action="store_true", help="every part with tiny settings, on the CPU")
    parser.add_argument("--budget", type=float, help=f"seconds for all parts together (default {BUDGET}, "
                                                     f"dry {DRY_BUDGET})")
    parser.add_argument("--parts", nargs="+", choices=[p.name for p in PARTS], help="default: all")
    args = parser.parse_args()
    parts = [p for p in PARTS if not args.parts or p.name in args.parts]
    budget = args.budget or (DRY_BUDGET if args.dry else BUDGET)
    outcomes = check(args.out, args.dry, budget, parts)
    print(f"report: {args.out / 'report.md'}")
    sys.exit(0 if all(o.status == "ok" for o in outcomes) else 1)


if __name__ == "__main__":
    main()
