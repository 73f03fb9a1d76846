"""Wall time of each test file, from pytest JUnit XML reports: where the suite's time goes, and what a change saved.

    .venv/bin/python -m pytest -q --junitxml=/tmp/suite.xml          (make test ARGS=--junitxml=/tmp/suite.xml)
    .venv/bin/python benchmarks/test_times.py /tmp/suite.xml [--before /tmp/old.xml] \
        --out benchmarks/results/test_times.md

A test's time is its setup, call and teardown (pytest's JUnit default), so a session fixture counts in the first
test that needs it; the files are listed slowest first, with their test count and outcome counts. Under xdist the
files' seconds add up to more than the run's wall time (its workers run side by side): both are printed.
"""
import argparse
import os
import platform
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

OUTCOMES = ("failure", "error", "skipped")


def per_file(report: Path) -> tuple[dict[str, dict[str, float]], float]:
    """({test file: {seconds, tests, passed, failure, error, skipped}}, the run's wall time in seconds)."""
    files: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    root = ET.parse(report).getroot()
    for case in root.iter("testcase"):
        parts = case.get("classname", "").split(".")  # tests.test_x[.TestClass]
        name = next((p for p in parts if p.startswith("test_")), parts[0]) + ".py"
        outcome = next((child.tag for child in case if child.tag in OUTCOMES), "passed")
        files[name]["seconds"] += float(case.get("time", 0))
        files[name]["tests"] += 1
        files[name][outcome] += 1
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    return files, float(suite.get("time", 0))


def table(files: dict[str, dict[str, float]], before: dict[str, dict[str, float]] | None = None) -> str:
    was = ["seconds before"] if before is not None else []
    rows = ["| " + " | ".join(["test file", "tests", *was, "seconds", "not passed"]) + " |",
            "|---|---:|" + "---:|" * len(was) + "---:|---|"]
    for name in sorted(set(files) | set(before or {}), key=lambda n: -files.get(n, {}).get("seconds", 0)):
        f = files.get(name, defaultdict(float))
        other = ", ".join(f"{int(f[k])} {k}" for k in OUTCOMES if f[k])
        old = [f"{before[name]['seconds']:.0f}" if name in before else "-"] if before is not None else []
        rows.append("| " + " | ".join([name, f"{int(f['tests'])}", *old, f"{f['seconds']:.0f}", other]) + " |")
    old = [f"{sum(f['seconds'] for f in before.values()):.0f}"] if before is not None else []
    rows.append("| " + " | ".join(["all", f"{int(sum(f['tests'] for f in files.values()))}", *old,
                                   f"{sum(f['seconds'] for f in files.values()):.0f}", ""]) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="pytest --junitxml file")
    parser.add_argument("--before", type=Path, help="an earlier run's --junitxml file, to compare with")
    parser.add_argument("--out", type=Path, help="write the table there too (markdown)")
    args = parser.parse_args()
    files, wall = per_file(args.report)
    lines = [f"{os.cpu_count()} cores, Python {platform.python_version()}; wall time of the run: {wall:.0f} s"
             f" ({args.report.name})"]
    before = None
    if args.before:
        before, before_wall = per_file(args.before)
        lines.append(f"before: {before_wall:.0f} s ({args.before.name})")
    text = "\n".join(lines) + f"\n\n{table(files, before)}\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
