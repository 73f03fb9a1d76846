"""Tables 2, 3, 4 and 6 as Markdown: our test error beside the paper's, the difference, and the parameter count of the
net we trained. Ours is each completed run's final iterate (its last evaluation, as the paper reports), never its
best evaluation; a net that ran with several seeds reads as the paper prints its ResNet-110, "best (mean ± std)"
over the seeds (sample std), e.g. 6.43 (6.61±0.16), with their number in the seeds column."""
from collections.abc import Callable
from statistics import mean, stdev

from deepres.report.paper import TABLE_2, TABLE_3, TABLE_4, TABLE_6, PaperRow
from deepres.report.runs import Net, Run, Sweep

# ImageNet's test protocols (src/evaluate.py RUN eval.mode=MODE writes eval_MODE.json): Tables 2, 3 and Table 4
PROTOCOLS = {"ten_crop": "10-crop", "multi_scale": "multi-scale"}


def _stat(values: list[float]) -> str:
    return f"{min(values):.2f} ({mean(values):.2f}±{stdev(values):.2f})" if len(values) > 1 else f"{values[0]:.2f}"


def _params(run: Run, data_root: str | None) -> str:
    num_classes = run.datamodule(data_root).num_classes
    count = sum(p.numel() for p in run.build_net(num_classes, device="meta").parameters())
    return f"{count:,} ({count / 1e6:.2f}M)"


def _errors(runs: list[Run], key: str, protocol: str | None) -> list[float]:
    values = [run.evaluation(protocol).get(key) if protocol else run.final(key) for run in runs]
    return [v for v in values if v is not None]


def comparison(sweep: Sweep, title: str, rows: list[PaperRow], keep: Callable[[Net], bool], what: str,
               imagenet: bool, data_root: str | None = None, mode: str = "ten_crop") -> str:
    """One row per net of the paper's table, then any other net `keep` accepts that the sweep ran; ImageNet errors
    under the paper's test protocol `mode` once every run has been evaluated so."""
    groups = sweep.select(keep, what)
    paper = {row.net: row for row in rows}
    nets = list(paper) + [net for net in groups if net not in paper]
    completed = {net: [r for r in runs if r.status == "completed"] for net, runs in groups.items()}
    done = [run for runs in completed.values() for run in runs]
    protocol = mode if imagenet and done and all(run.evaluation(mode) for run in done) else None
    metrics = [("test/error", "top-1 error %")] + ([("test/top5_error", "top-5 error %")] if imagenet else [])
    header = ["net", "params (ours)"] + ([] if imagenet else ["params (paper)"]) + ["iterations", "seeds"]
    for _, name in metrics:
        header += [f"{name} (ours)", "paper", "ours − paper"]
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for net in nets:
        runs, row = completed.get(net, []), paper.get(net)
        cells = [net.label(shortcut=imagenet and net.residual),
                 _params(runs[0], data_root) if runs else "—"] + ([] if imagenet else [row.params if row else "—"])
        cells += [str(max(r.steps for r in runs)), str(len(runs))] if runs else ["—", "0"]
        for key, _ in metrics:
            ours = _errors(runs, key, protocol) if runs else []
            theirs = (row.error if key == "test/error" else row.top5) if row else None
            printed = row.printed if row and row.printed and key == "test/error" else None
            cells += [_stat(ours) if ours else ("not completed" if net in groups else "not run"),
                      printed or (f"{theirs:.2f}" if theirs is not None else "—"),
                      f"{mean(ours) - theirs:+.2f}" if ours and theirs is not None else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _footer(sweep, groups, rows, imagenet, mode, protocol)]
    return "\n".join(lines) + "\n"


def _footer(sweep: Sweep, groups: dict[Net, list[Run]], rows: list[PaperRow], imagenet: bool, mode: str,
            protocol: str | None) -> str:
    first = next(iter(groups.values()))[0]
    overrides = " ".join(first.setting) or "none"
    notes = [f"Runs: {sweep.path}: trainer.max_steps={first.config.trainer.max_steps}, data.batch_size="
             f"{first.config.data.batch_size}; overrides besides the nets and seeds: {overrides}.",
             "Ours: the final iterate of each completed run (its last evaluation), never the best one; with several "
             "seeds, best (mean ± std) over them, as the paper prints ResNet-110; ours − paper compares means."]
    if imagenet:
        name = PROTOCOLS[mode]
        notes.append(f"Our errors are {name}, as the paper's (src/evaluate.py RUN eval.mode={mode})." if protocol
                     else f"Our errors are centre-crop val errors from training; the paper's are {name}: run "
                          f"src/evaluate.py RUN eval.mode={mode} on every run to compare like with like.")
    notes += [f"{row.net.label(shortcut=imagenet)}: {row.note}." for row in rows if row.note]
    unfinished = [f"{run.path.name} ({run.status}, step {run.steps})"
                  for runs in groups.values() for run in runs if run.status != "completed"]
    if unfinished:
        notes.append(f"Not counted, not completed: {'; '.join(unfinished)}.")
    return "\n".join(f"- {note}" for note in notes)


def table6(sweep: Sweep, data_root: str | None = None) -> str:
    return comparison(sweep, "Table 6: CIFAR-10 test error (%)", TABLE_6, lambda n: True,
                      "CIFAR nets", imagenet=False, data_root=data_root)


def table2(sweep: Sweep, data_root: str | None = None) -> str:
    return comparison(sweep, "Table 2: ImageNet val error (%)", TABLE_2,
                      lambda n: n.depth in (18, 34) and n.shortcut in (None, "A"), "plain/ResNet-18/34 (A)",
                      imagenet=True, data_root=data_root)


def table3(sweep: Sweep, data_root: str | None = None) -> str:
    return comparison(sweep, "Table 3: ImageNet val error (%)", TABLE_3, lambda n: n in {r.net for r in TABLE_3},
                      "the nets of Table 3", imagenet=True, data_root=data_root)


def table4(sweep: Sweep, data_root: str | None = None) -> str:
    return comparison(sweep, "Table 4: ImageNet val error (%) of single models, multi-scale", TABLE_4,
                      lambda n: n in {r.net for r in TABLE_4}, "the nets of Table 4", imagenet=True,
                      data_root=data_root, mode="multi_scale")
