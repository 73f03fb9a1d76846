"""The runs of a sweep directory as the reports see them: which net, which seed, which setting, and their logs.

Everything comes from files a run leaves (metrics.csv, status.json, .hydra/*.yaml, checkpoints), so reports work
offline and on sweeps that ran elsewhere. The setting of a run is its overrides other than the net and the seed:
a figure or table compares runs of one setting only (mixing 400-iteration and 64k-iteration runs would be wrong)."""
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from deepres.config import register_resolvers
from deepres.errors import UserError
from deepres.models import construct
from deepres.runs.metrics_csv import FILENAME, read_rows
from deepres.runs.run_dir import FINAL, STATUS
from deepres.safe_files import read_checkpoint

NET_KEYS = ("model.backbone", "model.depth", "model.residual", "model.shortcut", "seed")
# like the seed, which instance of the net: the public weights a run holds (src/evaluate.py) or starts from (a
# detector's backbone), and their format (VGG-16's is torchvision's)
INSTANCE_KEYS = ("model.weights", "model.weights_format")


@dataclass(frozen=True, order=True)
class Net:
    """One net of the paper: plain or ResNet, its depth, and the shortcut option of a ResNet (None for plain); or,
    as a detector's backbone, the VGG-16 that Tables 7 and 8 compare with (backbone="vgg16")."""

    residual: bool
    depth: int
    shortcut: str | None = None
    backbone: str = "resnet"

    def label(self, shortcut: bool = False) -> str:
        """`plain-56`, `ResNet-56`, or with shortcut=True `ResNet-34 B` (Table 3's names); `VGG-16`."""
        if self.backbone == "vgg16":
            return "VGG-16"
        if not self.residual:
            return f"plain-{self.depth}"
        return f"ResNet-{self.depth}" + (f" {self.shortcut}" if shortcut else "")


VGG_16 = Net(False, 16, backbone="vgg16")


class Run:
    """One run directory of a sweep."""

    def __init__(self, path: Path):
        register_resolvers()  # the config's interpolations use the project's resolvers
        self.path = path
        self.config: DictConfig = OmegaConf.load(path / ".hydra" / "config.yaml")
        model = self.config.model
        if model.get("backbone") == "vgg16":  # a detector on VGG-16, whose depth and residual keys do not apply
            self.net = VGG_16
        else:
            self.net = Net(bool(model.residual), int(model.depth), str(model.shortcut) if model.residual else None)
        self.seed = int(self.config.seed)
        self.setting = _setting(path / ".hydra")

    def __repr__(self) -> str:
        return f"Run({self.net.label(shortcut=True)}, seed {self.seed}, {self.path})"

    @property
    def status(self) -> str:
        path = self.path / STATUS
        return json.loads(path.read_text()).get("status", "unknown") if path.is_file() else "not started"

    @cached_property
    def rows(self) -> list[dict[str, float]]:
        path = self.path / FILENAME
        return read_rows(path) if path.is_file() else []

    def curve(self, key: str) -> tuple[list[int], list[float]]:
        """Steps and values of one column of metrics.csv, where it was logged."""
        rows = [r for r in self.rows if key in r]
        return [r["step"] for r in rows], [r[key] for r in rows]

    def final(self, key: str) -> float | None:
        """The last logged value: for test/error the final iterate, never the best evaluation."""
        values = self.curve(key)[1]
        return values[-1] if values else None

    @property
    def steps(self) -> int:
        return self.rows[-1]["step"] if self.rows else 0

    def evaluation(self, mode: str) -> dict | None:
        """The result of `src/evaluate.py RUN eval.mode=MODE` (ImageNet's 10-crop protocol), if it was run."""
        path = self.path / f"eval_{mode}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def datamodule(self, data_root: str | None = None):
        """The run's DataModule, reading data from `data_root` when given (else where the run read it)."""
        config = self.config if data_root is None else OmegaConf.merge(self.config, {"data": {"root": data_root}})
        return instantiate(config.data)  # from the root config, where its interpolations (${seed}) resolve

    def build_net(self, num_classes: int, device: str | torch.device = "cpu") -> nn.Module:
        """The run's net as train.py builds it (untrained)."""
        with torch.device(device):
            return construct(self.config.model, num_classes)

    def trained_net(self, num_classes: int) -> nn.Module:
        """The net with the weights of checkpoints/final.ckpt, in eval mode."""
        path = self.path / "checkpoints" / FINAL
        if not path.is_file():
            raise UserError(f"{self.path} has no checkpoints/{FINAL}: the run has not finished ({self.status}).")
        state = read_checkpoint(path)["state_dict"]  # as data: a sweep may come from anywhere
        net = self.build_net(num_classes)
        net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
        return net.eval()


def _setting(hydra_dir: Path) -> tuple[str, ...]:
    """The job's overrides minus the net, the seed, its weights, and the keys its directory name leaves out
    (data.root...)."""
    overrides = OmegaConf.load(hydra_dir / "overrides.yaml")
    excluded = OmegaConf.load(hydra_dir / "hydra.yaml").hydra.job.config.override_dirname.exclude_keys
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return tuple(sorted(o.input_line for o in parsed if o.key_or_group not in {*NET_KEYS, *INSTANCE_KEYS, *excluded}))


class Sweep:
    """The runs under a sweep directory (or a single run directory)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise UserError(f"{self.path} is not a directory. Give a sweep directory of src/train.py -m, such as "
                            "multirun/cifar10 (or a single run's directory).")
        configs = sorted(p for p in self.path.rglob("config.yaml") if p.parent.name == ".hydra")
        self.runs = [Run(p.parent.parent) for p in configs]
        if not self.runs:
            raise UserError(f"{self.path} holds no runs: no */.hydra/config.yaml below it. Give the directory that "
                            "src/train.py -m wrote (hydra.sweep.dir), e.g. multirun/cifar10.")

    def only(self, keep: Callable[[Run], bool]) -> "Sweep":
        """The sweep with the runs `keep` accepts (perhaps none), e.g. those of one test set."""
        part = copy.copy(self)
        part.runs = [run for run in self.runs if keep(run)]
        return part

    def select(self, keep: Callable[[Net], bool], what: str) -> dict[Net, list[Run]]:
        """The runs of the nets `keep` accepts, grouped by net in order (plain first, then by depth). They must
        share one setting; `what` names the nets in the message when none is there."""
        chosen = [r for r in self.runs if keep(r.net)]
        if not chosen:
            found = ", ".join(sorted({r.net.label(shortcut=True) for r in self.runs}))
            raise UserError(f"{self.path} holds no runs of {what}; it holds {found}.")
        settings = {r.setting for r in chosen}
        if len(settings) > 1:
            listing = "; ".join(f"[{' '.join(s) or 'no overrides'}]: "
                                f"{', '.join(sorted(str(r.path.name) for r in chosen if r.setting == s))}"
                                for s in sorted(settings))
            raise UserError(f"{self.path} holds runs of {what} with different settings, which one figure or table "
                            f"cannot compare: {listing}. Keep each setting in its own sweep directory "
                            "(hydra.sweep.dir=...; for make, CIFAR_DIR=... or IMAGENET_DIR=...), or move the other "
                            "runs away.")
        groups: dict[Net, list[Run]] = {}
        for run in sorted(chosen, key=lambda r: (r.net, r.seed)):
            groups.setdefault(run.net, []).append(run)
        return groups
