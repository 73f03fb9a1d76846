"""The paper's sweeps (sweeps/*.yaml): each composes and expands to the nets of its figure or table, once per seed,
into a fixed directory shared with the sweeps that need the same nets."""
import csv

import pytest
from helpers.config import compose_config
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class

PLAIN, RESNET = False, True
CIFAR_SWEEPS = {
    "fig6": {(PLAIN, 20), (PLAIN, 32), (PLAIN, 44), (PLAIN, 56),
             (RESNET, 20), (RESNET, 32), (RESNET, 44), (RESNET, 56), (RESNET, 110)},
    "fig6_right": {(RESNET, 110), (RESNET, 1202)},
    "table6": {(RESNET, 6 * n + 2) for n in (3, 5, 7, 9, 18, 200)},
    "fig1": {(PLAIN, 20), (PLAIN, 56)},
    "fig7": {(PLAIN, 20), (PLAIN, 56), (RESNET, 20), (RESNET, 56), (RESNET, 110)},
}
IMAGENET_SWEEPS = {
    "table2_fig4": {(PLAIN, 18, None), (PLAIN, 34, None), (RESNET, 18, "A"), (RESNET, 34, "A")},
    "table3": {(PLAIN, 34, None), (RESNET, 34, "A"), (RESNET, 34, "B"), (RESNET, 34, "C"), (RESNET, 50, "B"),
               (RESNET, 101, "B"), (RESNET, 152, "B")},
}


def points_sweeper() -> type:
    """The class as Hydra loaded it: its plugin scan re-executes the hydra_plugins modules."""
    return get_class("hydra_plugins.deepres_points.PointsSweeper")


def expand(sweep: str, *arguments: str):
    """The composed config of `python src/train.py -m +sweep=NAME ARGUMENTS` and the overrides of each job it
    launches, as its sweeper computes them."""
    cfg = compose_config(f"+sweep={sweep}", hydra=True)
    spec = cfg.hydra.sweeper
    assert spec._target_ == "hydra_plugins.deepres_points.PointsSweeper"
    sweeper = points_sweeper()(spec.max_batch_size, dict(spec.params), [list(p) for p in spec.points])
    overrides = OverridesParser.create().parse_overrides(sweeper._parse_config() + list(arguments))
    return cfg, [job for batch in sweeper.split_arguments(overrides, spec.max_batch_size) for job in batch]


def as_dict(job: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in job)


def net(job: list[str]) -> tuple:
    o = as_dict(job)
    return o["model.residual"] == "true", int(o["model.depth"])


def imagenet_net(job: list[str]) -> tuple:
    return (*net(job), as_dict(job).get("model.shortcut"))


@pytest.mark.parametrize("name", CIFAR_SWEEPS)
def test_each_cifar_sweep_runs_the_nets_of_its_result_in_multirun_cifar10(name):
    cfg, jobs = expand(name)
    assert set(map(net, jobs)) == CIFAR_SWEEPS[name] and len(jobs) == len(CIFAR_SWEEPS[name])
    assert {as_dict(job)["seed"] for job in jobs} == {"0"}
    assert cfg.hydra.sweep.dir == "multirun/cifar10" and cfg.data.name == "cifar10"
    assert cfg.trainer.max_steps == 64000 and cfg.model.shortcut == "A"


def test_fig6_has_resnet_110_but_not_plain_110():
    nets = {net(job) for job in expand("fig6")[1]}
    assert (RESNET, 110) in nets and (PLAIN, 110) not in nets and len(nets) == 9


@pytest.mark.parametrize("name", IMAGENET_SWEEPS)
def test_each_imagenet_sweep_runs_the_paper_recipe_in_multirun_imagenet(name):
    cfg, jobs = expand(name)
    assert set(map(imagenet_net, jobs)) == IMAGENET_SWEEPS[name] and len(jobs) == len(IMAGENET_SWEEPS[name])
    assert cfg.hydra.sweep.dir == "multirun/imagenet" and cfg.data.name == "imagenet"
    assert cfg.model._target_ == "deepres.models.ImageNetResNet" and cfg.trainer.max_steps == 600000


def test_seeds_on_the_command_line_run_every_point_once_per_seed():
    _, jobs = expand("fig6", "seed=1,2,3")
    assert len(jobs) == 27
    for point in CIFAR_SWEEPS["fig6"]:
        assert sorted(as_dict(j)["seed"] for j in jobs if net(j) == point) == ["1", "2", "3"]


@pytest.mark.parametrize(("a", "b"), [("fig6", "fig6_right"), ("fig6", "table6"), ("fig6", "fig7"),
                                      ("fig1", "fig6"), ("table2_fig4", "table3")])
def test_a_net_in_two_sweeps_is_the_same_job(a, b):
    """Same overrides, hence the same run directory: the second sweep finds the net trained (or resumes it)."""
    jobs_a, jobs_b = ({imagenet_net(job): set(job) for job in expand(name)[1]} for name in (a, b))
    shared = jobs_a.keys() & jobs_b.keys()
    assert shared and all(jobs_a[key] == jobs_b[key] for key in shared)


def test_points_sweeper_without_points_is_the_basic_grid_and_keeps_batches():
    overrides = OverridesParser.create().parse_overrides(["model.depth=8,14", "seed=1,2"])
    assert len(points_sweeper()(None).split_arguments(overrides, None)[0]) == 4
    batches = points_sweeper()(3, points=[["model.residual=true"], ["model.residual=false"]]).split_arguments(
        overrides, 3)
    assert [len(b) for b in batches] == [3, 3, 2]
    assert batches[0][0] == ["model.residual=true", "model.depth=8", "seed=1"]


def test_smoke_sweep_names_each_job_after_its_net_and_seed(smoke_sweep):
    """The sweep file itself stays out of the job directory names (so the sweeps can share runs)."""
    jobs = sorted(p.name for p in smoke_sweep.iterdir() if (p / "metrics.csv").is_file())
    assert jobs == sorted(f"model.depth={d},model.residual={str(r).lower()},seed=0" for r, d in CIFAR_SWEEPS["fig6"])
    rows = list(csv.DictReader(open(smoke_sweep / "summary.csv")))
    assert len(rows) == 9 and {r["status"] for r in rows} == {"completed"} and {r["steps"] for r in rows} == {"4"}
