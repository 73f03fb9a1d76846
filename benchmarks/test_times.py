"""Wall time of each test file, from a pytest JUnit XML report: where the suite's time goes.

    .venv/bin/python -m pytest -q --junitxml=/tmp/suite.xml
    .venv/bin/python benchmarks/test_times.py /tmp/suite.xml --out benchmarks/results/test_times.md

A test's time is its setup, call and teardown (pytest's JUnit default), so a session fixture counts in the first
test that needs it; the files are listed slowest first, with their test count and outcome counts.
"""
import argparse
import os
import platform
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path


def per_file(report: Path) -> dict[str, dict[str, float]]:
    files: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for case in ET.parse(report).iter("testcase"):
        name = case.get("classname", "").split(".")[0] + ".py"
        outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        files[name]["seconds"] += float(case.get("time", 0))
        files[name]["tests"] += 1
        files[name][outcome] += 1
    return files


def table(files: dict[str, dict[str, float]]) -> str:
    rows = ["| test file | tests | seconds | not passed |", "|---|---:|---:|---|"]
    for name, f in sorted(files.items(), key=lambda item: -item[1]["seconds"]):
        other = ", ".join(f"{int(f[k])} {k}" for k in ("failure", "error", "skipped") if f[k])
        rows.append(f"| {name} | {int(f['tests'])} | {f['seconds']:.0f} | {other} |")
    total = sum(f["seconds"] for f in files.values())
    rows.append(f"| all | {int(sum(f['tests'] for f in files.values()))} | {total:.0f} | |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="pytest --junitxml file")
    parser.add_argument("--out", type=Path, help="write the table there too (markdown)")
    args = parser.parse_args()
    machine = f"{os.cpu_count()} cores, Python {platform.python_version()}"
    text = f"{machine}, from {args.report.name}\n\n{table(per_file(args.report))}\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
