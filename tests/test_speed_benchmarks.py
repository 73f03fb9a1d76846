"""The benchmark scripts keep working: each of their paths runs here on tiny settings (their numbers are theirs
to print, not for tests to judge), and a compiled run trains through train.py into a checkpoint a plain net loads."""
import gc
import inspect
import json
import math
import sys
import types

import pytest
import torch
from helpers.train import FAST, ROOT, run_train

sys.path.insert(0, str(ROOT / "benchmarks"))
import common  # noqa: E402
import concurrent_runs  # noqa: E402
import detection  # noqa: E402
import imagenet_decode  # noqa: E402
import imagenet_input  # noqa: E402
import loader  # noqa: E402
import loop_overhead  # noqa: E402
import packed  # noqa: E402
import step_ops  # noqa: E402
import test_times  # noqa: E402
import throughput  # noqa: E402
import timing  # noqa: E402

from deepres.models import CifarResNet, ImageNetResNet  # noqa: E402
from deepres.runs.metrics_csv import read_rows  # noqa: E402


def small_data() -> common.SyntheticCifar:
    data = common.SyntheticCifar(batch_size=16, train_images=256, test_images=32)
    data.setup()
    return data


def test_lightning_and_plain_loops_time_their_iterations():
    """Each loop, with each collector setting, times its iterations one by one: the steps' seconds add up to the
    window's wall time."""
    data = small_data()
    timed = [common.lightning_step_time(common.tiny_net, data, steps=4, warmup=2, gc_mode=mode)
             for mode in common.COLLECTORS]
    timed.append(common.lightning_step_time(common.cifar_net(8), data, steps=2, warmup=1, progress_bar=False))
    timed += [common.plain_step_time(common.tiny_net, data.stream(), steps=4, warmup=2, gc_mode=mode)
              for mode in ("python", "off")]
    for seconds, steps in zip(timed, [4, 4, 4, 2, 4, 4], strict=True):
        assert len(seconds.steps) == steps and seconds.cpu > 0
        assert sum(seconds.steps) == pytest.approx(seconds.wall * steps, rel=1e-6)
    with pytest.raises(ValueError, match="no collector policy"):
        common.plain_step_time(common.tiny_net, data.stream(), steps=1, warmup=1, gc_mode="manual")
    assert gc.isenabled()  # given back as it was


def test_loop_overhead_repeats_until_its_ratio_holds(monkeypatch):
    """Repeats go on until the last five ratios lie within the spread of their median, the pairs' order reversed
    every repeat, up to --max-repeats; the report says whether the ratio held. The pairs are stand-ins whose times
    are set here."""
    plain_times = iter([1.0, 1.0, 1.0, 1.0, 1.2, 1.0, 1.0, 1.0, 1.0, 1.0] + [1.0] * 20)
    order = []

    def pair(name):
        def run(steps, warmup, depth, block):
            order.append(name)
            wall = next(plain_times) if name == loop_overhead.PROJECT else 1.0
            return timing.StepTime(1.0, 1.0, (1.0,) * steps), timing.StepTime(wall, wall, (wall,) * steps)
        return run

    monkeypatch.setattr(loop_overhead, "pairs", lambda make_net, project_data, plain_data: [
        (loop_overhead.PROJECT, loop_overhead.PLAIN, pair(loop_overhead.PROJECT)),
        ("project, collector off", "plain, collector off", pair("off"))])
    result = loop_overhead.measure("tiny", (None, None), target=0.02, max_repeats=12)
    # repeat 5's 1.2 stays in the last five until repeat 10: five agreeing ratios only from repeat 6 to 10
    assert result["ratios"] == [1.0, 1.0, 1.0, 1.0, 1.2, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert order[:4] == [loop_overhead.PROJECT, "off", "off", loop_overhead.PROJECT]
    assert "= 1.000 +- 0.0%" in loop_overhead.ratio_line("tiny", result, 0.02)
    assert "held" in loop_overhead.ratio_line("tiny", result, 0.02)
    short = loop_overhead.measure("tiny", (None, None), target=0.0, max_repeats=5)
    assert len(short["ratios"]) == 5  # the minimum; target 0 could be met by equal ratios, so break it
    short["ratios"][-1] = 1.1
    assert "could not hold within +-0% in 5 repeats" in loop_overhead.ratio_line("tiny", short, 0.0)
    rows = loop_overhead.table({"tiny": result}).splitlines()[2:]
    assert len(rows) == 4 and "| tiny | project | 1.00 |" in rows[0]


def test_local_ratios_keep_a_stall_and_leave_out_the_drift():
    """A run whose steps drift from 100 to 199 ms, with one 300 ms stall: the raw p99 / median moves with the drift,
    the local ratios are 1 but for the stall, which stands out by its neighbours' median."""
    steps = [0.100 + 0.001 * i for i in range(100)]
    steps[50] = 0.300
    ratios = timing.local_ratios(steps, half_window=10)
    assert timing.percentile(steps, 99) / timing.percentile(steps, 50) > 1.3
    assert ratios[50] == pytest.approx(0.300 / 0.151)  # steps 40..60: ten below 150 ms, so the median is 151
    assert max(abs(r - 1) for i, r in enumerate(ratios) if i != 50) < 0.1
    assert ratios[0] == pytest.approx(0.100 / 0.105)  # at the edge: steps 0..10, the median 105 ms


def test_a_paused_clock_leaves_the_pause_out_of_the_step_it_falls_in(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=lambda: now[0],
                                                              process_time=lambda: now[0]))
    clock = timing.Clock(0, 3)
    draws = clock.batches(range(10))
    for t, action in [(0, "draw"), (1, "draw"), (1.5, "pause"), (3.5, "resume"), (4, "draw"), (5, "draw")]:
        now[0] = t
        next(draws) if action == "draw" else getattr(clock, action)()
    assert clock.elapsed == timing.StepTime(1.0, 1.0, (1.0, 1.0, 1.0))  # 3 s for three steps, 2 s paused


def test_an_interleaved_pair_times_each_loops_own_iterations(monkeypatch):
    """The project's loop and the plain loop in blocks of 2, each timing 4 iterations of its own; Python's collector
    as the project's policy left it, and back on after."""
    inside = []  # for each plain iteration: whether it ran between two of the project's (in its fit's callback)

    def watched(*args, **kwargs):
        for _ in common.plain_iterations(*args, **kwargs):
            inside.append(any(frame.function == "on_train_batch_end" for frame in inspect.stack()))
            yield

    monkeypatch.setattr(loop_overhead, "plain_iterations", watched)
    pair = loop_overhead.interleaved(common.tiny_net, small_data(), small_data(), "manual", "python", steps=4,
                                     warmup=2, depth=20, block=2)
    assert inside.count(True) >= 4 and len(inside) >= 6, inside  # its warm-up and timed blocks inside the fit
    for seconds in pair:
        assert len(seconds.steps) == 4 and sum(seconds.steps) == pytest.approx(seconds.wall * 4, rel=1e-6)
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_packed_benchmark_times_one_run_and_each_pack():
    rows = packed.measure("resnet20", [1, 2], steps=2, batch=16, images=(256, 32))
    assert [(what, runs) for what, runs, _ in rows] == [("one run (Classifier)", 1), ("pack of 1", 1), ("pack of 2", 2)]
    assert all(0 < seconds < 10 for _, _, seconds in rows)
    lines = packed.table({"resnet20": rows}, 16).splitlines()[2:]
    assert len(lines) == len(rows)  # one row per configuration measured
    for line, (what, runs, seconds) in zip(lines, rows, strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:3] == ["resnet20", what, str(runs)]
        # ms/iteration, run-steps/s, and the run-steps/s as a multiple of one run's (1 step per rows[0]'s seconds)
        assert cells[3:] == [f"{seconds * 1000:.1f}", f"{runs / seconds:.1f}", f"{runs / seconds * rows[0][2]:.2f}"]
    assert lines[0].endswith("| 1.00 |")


def clock(*readings: float) -> types.SimpleNamespace:
    """A stand-in for the time module whose perf_counter returns the given readings in turn."""
    values = iter(readings)
    return types.SimpleNamespace(perf_counter=lambda: next(values))


def test_loader_benchmark_measures_both_pipelines(monkeypatch):
    """Each pipeline runs; images/s and cores busy are the medians of the timed passes, the warm-up left out, on
    clocks whose readings are set here: passes of 0.5, 0.25 and 1 s wall, 0.25, 0.25 and 0.5 s CPU."""
    data = small_data()
    taken = []
    batches = (taken.append(batch) or batch for batch in data.stream())
    monkeypatch.setattr(loader, "time", clock(0, 9, 10, 10.5, 20, 20.25, 30, 31))  # warm-up: 9 s
    monkeypatch.setattr(loader, "cpu_seconds", lambda pids: next(cpu))
    cpu = iter([0, 5, 10, 10.25, 20, 20.25, 30, 30.5])
    rate, cores = loader.measure(batches, 3, passes=3)
    assert len(taken) == 2 + 3 * 3  # a warm-up pass of max(3 // 4, 2) batches, then three of 3
    assert (rate, cores) == (3 * loader.BATCH / 0.5, 0.5)
    monkeypatch.undo()
    dataset = loader.PILCifar(data.train_images, data.train_labels, [0.5] * 3, [0.25] * 3)
    batches = iter(torch.utils.data.DataLoader(dataset, 32, num_workers=1))
    monkeypatch.setattr(loader, "time", clock(0, 1, 2, 2.5))
    assert loader.measure(batches, 1, passes=1)[0] == loader.BATCH / 0.5


def test_imagenet_decode_benchmark_times_every_path(tmp_path, monkeypatch):
    root = imagenet_decode.write_photo_folder(tmp_path, images=8)
    paths = [str(p) for p in sorted((root / "train").rglob("*.JPEG"))]
    rates = imagenet_decode.per_core(paths, chunk=4, passes=1)
    assert list(rates) == ["decode", "train sample", "gpu-path worker", "eval sample", "PIL train"]
    assert all(best >= median > 0 for best, median in rates.values())
    monkeypatch.setattr(imagenet_decode, "time", clock(0, 2))  # one batch of 4 in 2 s
    assert imagenet_decode.with_workers(root, workers=1, batches=1, batch=4) == 2


def test_imagenet_input_benchmark_trains_from_each_cpu_input(tmp_path, monkeypatch):
    """Each input trains ResNet-18; images/s are the timed iterations' images over their seconds (set here: 0.5 s)."""
    root = str(imagenet_decode.write_photo_folder(tmp_path, images=8))
    for inputs in ("synthetic", "cpu"):
        monkeypatch.setattr(imagenet_input, "time", clock(0, 0.5))
        assert imagenet_input.images_per_second(18, inputs, root, steps=1, warmup=1, workers=0, batch=4) == 8


def test_detection_benchmark_dry_run_times_training_and_inference(tmp_path):
    """--dry on ResNet-18: a row per mode, its RoIs per image within the dry run's 16, its images/s the batch over
    the mean step; with two timed steps the median is their mean and the p99 lies between the mean and twice it."""
    out = tmp_path / "detection.md"
    results = detection.main(["--dry", "--nets", "resnet18", "--batch", "2", "--out", str(out)])
    assert [(r["net"], r["mode"], r["batch"]) for r in results] == [("ResNet-18", "train", 2),
                                                                    ("ResNet-18", "inference", 2)]
    report = out.read_text()
    assert "shorter side 96 (longer <= 160; dry run" in report and "Machine: " in report
    rows = [line for line in report.splitlines() if line.startswith("| ResNet-18 Faster R-CNN |")]
    assert len(rows) == 2
    for row, mode in zip(rows, ("train", "inference"), strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1:3] == [mode, "2"]
        rois, rate, mean, median, p99 = (float(c.replace(",", "")) for c in cells[3:8])
        assert 1 <= rois <= 16
        assert rate == pytest.approx(2 * 1e3 / mean, rel=0.01)
        assert median == mean and mean <= p99 < 2 * mean


@pytest.mark.slow
def test_detection_benchmark_measures_in_a_fresh_process():
    """VGG-16's training, alone in its process, holds at least fc6 and fc7, their gradients and momentum."""
    settings = {key: value for key, value in detection.DRY.items() if key != "nets"}
    result = detection.run_isolated({"net": "vgg16", "mode": "train", "batch": 1, **settings}, timeout=300)
    assert (result["net"], result["mode"]) == ("VGG-16", "train"), result
    assert result["images_per_s"] == pytest.approx(1e3 / result["ms_per_step"])
    fc_mb = 4 * (512 * 7 * 7 * 4096 + 4096 * 4096) / 2**20
    assert result["peak_memory_mb"] >= 3 * fc_mb


@pytest.mark.slow
def test_throughput_runs_each_switch_in_its_own_process():
    result = throughput.run_isolated("resnet8", "model.checkpoint_activations=true", 8, 2, 1, timeout=120)
    assert result["config"] == "model.checkpoint_activations=true"
    assert result["images_per_s"] == pytest.approx(1e3 * 8 / result["ms_per_step"])  # a batch of 8 per step
    # in a fresh process too: on CPU the peak memory is the growth of the process's peak, which earlier tests in
    # this process may already have raised
    result = throughput.run_isolated("imagenet-plain18", "defaults", 2, 1, 1, timeout=120)
    weights_mb = 4 * sum(p.numel() for p in ImageNetResNet(18, residual=False).parameters()) / 2**20
    assert result["peak_memory_mb"] >= 3 * weights_mb  # at least its weights, their gradients and momentum


@pytest.mark.slow
def test_concurrent_runs_train_together():
    assert concurrent_runs.aggregate("resnet8", 2, "plain", False, batch=8, images=64, steps=2, warmup=1) > 0


@pytest.mark.slow
def test_a_compiled_run_trains_and_its_checkpoint_loads_into_a_plain_net(cifar10_root, tmp_path):
    """...with one training and one evaluation graph, though it evaluates inside fit (at 2) and after it (at 3),
    and says how long compiling took."""
    proc = run_train(*FAST, "trainer.max_steps=3", "trainer.log_every_n_steps=1", "trainer.val_check_interval=2",
                     "model.compile=true", f"data.root={cifar10_root}", f"hydra.run.dir={tmp_path}")
    rows = read_rows(tmp_path / "metrics.csv")
    assert [r["step"] for r in rows] == [1, 2, 3] and math.isfinite(rows[-1]["test/error"])
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["compile_graphs"] == 2 and status["compile_time_s"] > 0  # and the run said so:
    assert f"torch.compile: 2 graph(s) in {status['compile_time_s']} s" in proc.stdout + proc.stderr
    state = torch.load(tmp_path / "checkpoints" / "final.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    CifarResNet(8).load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})


@pytest.mark.slow
def test_the_step_launches_what_a_hand_written_loop_launches_and_waits_for_nothing():
    """The targets of benchmarks/step_ops.py, on a small net: at most 4 ops more than the plain loop outside the
    network per iteration, no host read or host-to-device copy in an ordinary iteration nor in an evaluation batch,
    one host read for a checkpoint's finite check, its tensors copied to the host in one buffer per dtype."""
    ours, plain = step_ops.measure(depth=8, batch=32)
    ordinary, check, save, evaluation = (ours[phase] for phase in step_ops.PHASES[:1] + step_ops.PHASES[2:])
    assert ordinary[0] <= plain[step_ops.PHASES[0]][0] + 4, (ordinary, plain)
    assert ordinary[1:3] == (0, 0) and evaluation[1:3] == (0, 0)
    assert check[1] == 1 and check[0] <= 8, check
    assert save[2] <= 3, save  # storages torch.save copies: float, int64 (and bool)


def test_test_times_sums_each_files_cases_and_compares_with_an_earlier_run(tmp_path):
    def junit(name, cases):
        body = "".join(f'<testcase classname="{c}" name="t{i}" time="{t}">{extra}</testcase>'
                       for i, (c, t, extra) in enumerate(cases))
        (tmp_path / name).write_text(f'<testsuites><testsuite name="pytest" time="9.5">{body}</testsuite></testsuites>')
        return tmp_path / name
    after = junit("after.xml", [("tests.test_a", 1.5, ""), ("tests.test_a.TestIt", 2.0, '<skipped message="x"/>'),
                                 ("tests.test_b", 4.0, "")])
    before = junit("before.xml", [("tests.test_a", 7.0, ""), ("tests.test_c", 3.0, "")])
    files, wall = test_times.per_file(after)
    assert wall == 9.5 and files["test_a.py"]["seconds"] == 3.5 and files["test_a.py"]["skipped"] == 1
    rows = test_times.table(files, test_times.per_file(before)[0]).splitlines()
    assert rows[2:] == ["| test_b.py | 1 | - | 4 |  |", "| test_a.py | 2 | 7 | 4 | 1 skipped |",
                        "| test_c.py | 0 | 3 | 0 |  |", "| all | 3 | 10 | 8 |  |"]
