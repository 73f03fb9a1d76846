"""The paper's sweeps list their nets: Hydra's grid (`params` and command-line sweeps such as `seed=1,2,3`), run once
for each point of a list. Fig. 6 wants plain and ResNet x 20/32/44/56 plus ResNet-110 alone, which no cartesian grid
gives. A Hydra plugin, so it lives in the hydra_plugins namespace; the sweeps in sweeps/ select it with
`override /hydra/sweeper: points`."""
from dataclasses import dataclass, field

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore

from hydra_plugins.deepres_sweeper import ValidatingSweeper


@dataclass
class PointsSweeperConf:
    _target_: str = "hydra_plugins.deepres_points.PointsSweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None
    points: list[list[str]] = field(default_factory=list)  # each point: the overrides of one net, e.g. a depth


ConfigStore.instance().store(group="hydra/sweeper", name="points", node=PointsSweeperConf, provider="deepres")


class PointsSweeper(ValidatingSweeper):
    """Every point's overrides, followed by each combination of the grid: len(points) x len(grid) jobs."""

    def __init__(self, max_batch_size: int | None, params: dict[str, str] | None = None,
                 points: list[list[str]] | None = None):
        super().__init__(max_batch_size, params)
        self.points = [list(point) for point in points or [[]]]

    def split_arguments(self, overrides, max_batch_size: int | None) -> list[list[list[str]]]:
        grid = BasicSweeper.split_arguments(overrides, None)[0]
        jobs = [point + job for point in self.points for job in grid]
        return list(BasicSweeper.split_overrides_to_chunks(jobs, max_batch_size))
