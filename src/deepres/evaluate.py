"""Evaluate a trained run under one of the paper's test protocols (ImageNet: Tables 2-4; CIFAR: the test set):

    python src/evaluate.py RUN_DIR [RUN_DIR ...] eval.mode=ten_crop [data.root=... data.num_workers=...]

An argument that is a directory, or has a / before its first =, is a run (sweep runs are named after overrides);
any other key=value is an override. Each run's composed config (.hydra/config.yaml) is read, the overrides applied,
and its final.ckpt (or, for an unfinished run, last.ckpt) evaluated. One line per run is printed, and
<run>/eval_<mode>.json written: test/error, test/top5_error, test/loss (as in metrics.csv), the checkpoint, its
iteration, the images evaluated. A CIFAR run has one view of its 32x32 test images: eval.mode=center. A run of
another task (detection) is scored by the task itself (task_evaluation.py), into <run>/eval_<data.test_set>.json.

Public weights become a run first: with model.weights=PATH, a RUN_DIR that is not a run yet is made the run of
those weights (conf/ composed with the overrides, as train.py composes it; the net in this project's layout as its
final.ckpt, at iteration 0), then evaluated; the reports (Fig. 7) read it as any finished run:

    python src/evaluate.py public/resnet-56 model.depth=56 model.weights=resnet56.th model.weights_format=akamaster
        data.normalization=fixed data.mean=[0.485,0.456,0.406] data.std=[0.229,0.224,0.225]   (one line)

Several ImageNet runs become one ensemble (Table 5) with eval.ensemble=true: every net over the same views of each
val image, the softmax averaged over the views and the nets (ensemble.py), written with its members to
<eval.ensemble_dir>/ensemble_<mode>.json (default: the deepest directory holding the runs, a sweep's directory):

    python src/evaluate.py multirun/imagenet/RUN1 ... multirun/imagenet/RUN6 eval.ensemble=true eval.mode=multi_scale
"""
import json
import re
import sys
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from deepres.cli import CONF_DIR, explain
from deepres.config import register_resolvers
from deepres.ensemble import SoftmaxMean, beside, check_classes, check_members
from deepres.errors import EXIT_USER_ERROR, UserError
from deepres.models import construct, initialised
from deepres.runs.atomic import atomic_write_text
from deepres.runs.run_dir import FINAL, LAST, RunDir
from deepres.safe_files import read_checkpoint
from deepres.task_evaluation import evaluate_with_task, is_classification
from deepres.training.bookkeeping import Bookkeeping
from deepres.training.module import Classifier
from deepres.training.quiet import quiet_lightning
from deepres.training.validate import validate

OVERRIDE = re.compile(r"[\w.+~@-]+=")  # key=value; a path with '=' in a name (a sweep's run) has a '/' before it
USAGE = ("usage: python src/evaluate.py RUN_DIR [RUN_DIR ...] eval.mode=center|ten_crop|multi_scale [key=value ...], "
         "or src/evaluate.py NEW_RUN_DIR model.weights=PATH model.weights_format=FORMAT [key=value ...], "
         "or src/evaluate.py RUN_DIR RUN_DIR [...] eval.ensemble=true [eval.ensemble_dir=DIR] [key=value ...]")
# the command's settings, not a run's (runs recorded before them lack them); defaults in conf/eval/imagenet.yaml
COMMAND_KEYS = ("ensemble", "ensemble_dir")


def _config(run: Path, overrides: list[str]):
    path = run / ".hydra" / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run} is not a run directory of src/train.py: it has no .hydra/config.yaml. {USAGE}")
    register_resolvers()  # the saved config keeps its interpolations (${if_cuda:...}): resolved on this machine
    cfg = OmegaConf.load(path)
    cifar = "eval" not in cfg and is_classification(cfg)  # CIFAR configs have no test protocols to choose
    if cifar:
        cfg.eval = {"mode": "center"}
    OmegaConf.set_struct(cfg, True)
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    except OmegaConfBaseException as err:
        raise UserError(f"bad override for {run}: {str(err).splitlines()[0]}. {USAGE}") from None
    if cifar and cfg.eval.mode != "center":
        raise UserError(f"{run} is a {cfg.data.name} run: its test images are evaluated whole, eval.mode=center "
                        f"(not {cfg.eval.mode}); the other protocols are ImageNet's.")
    return cfg


def _checkpoint(run: Path) -> Path:
    for name in (FINAL, LAST):
        if (run / "checkpoints" / name).is_file():
            return run / "checkpoints" / name
    raise UserError(f"{run} has no checkpoints/{FINAL} or {LAST} to evaluate.")


def weights_run(run: Path, overrides: list[str]) -> None:
    """Make `run` the run directory of the weights of model.weights: .hydra/ as a run of train.py with these
    overrides would have it, checkpoints/final.ckpt (the net, converted from model.weights_format, at iteration 0),
    status.json completed."""
    register_resolvers()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
    except HydraException as err:
        raise UserError(explain(err)) from None
    hydra = cfg.hydra
    with open_dict(cfg):
        del cfg["hydra"]
    validate(cfg)
    net = initialised(construct(cfg.model, instantiate(cfg.data).num_classes), cfg.model)
    folder = RunDir(run)
    folder.lock()
    try:
        (run / ".hydra").mkdir(exist_ok=True)
        for name, node in (("config", cfg), ("hydra", OmegaConf.create({"hydra": hydra})),
                           ("overrides", OmegaConf.create(overrides))):
            atomic_write_text(run / ".hydra" / f"{name}.yaml", OmegaConf.to_yaml(node))
        folder.checkpoints.mkdir(exist_ok=True)
        torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "global_step": 0},
                   folder.checkpoints / FINAL)
        folder.write_status(status="completed", weights=str(cfg.model.weights),
                            weights_format=cfg.model.weights_format)
    finally:
        folder.unlock()


def _trained(run: Path, cfg: DictConfig, num_classes: int, checkpoint: Path) -> tuple[nn.Module, int]:
    """The run's net with the checkpoint's weights, and the checkpoint's iteration."""
    state = read_checkpoint(checkpoint)  # as data: a run directory may come from anywhere
    check_classes(run, state["state_dict"], num_classes, cfg.data.root)
    net = construct(cfg.model, num_classes)
    net.load_state_dict({k.removeprefix("net."): v for k, v in state["state_dict"].items() if k.startswith("net.")})
    return net, state["global_step"]


def _validate(net: nn.Module, datamodule, trainer_cfg: DictConfig) -> dict[str, float]:
    """test/error, test/top5_error and test/loss (as in metrics.csv) of the net on the DataModule's test images."""
    module = Classifier(net, None, Bookkeeping([None]), datamodule.eval_names, top5=True)  # evaluation only
    trainer = L.Trainer(accelerator=trainer_cfg.accelerator, devices=1, precision=trainer_cfg.precision, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False)
    trainer.validate(module, datamodule, verbose=False)
    return {k: round(float(v), 4) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}


def evaluate(run: str | Path, overrides: list[str]) -> dict:
    """Evaluate one run's checkpoint; returns (and writes to <run>/eval_<mode>.json) the result."""
    run = Path(run)
    cfg, checkpoint = _config(run, overrides), _checkpoint(run)
    if not is_classification(cfg):
        result = evaluate_with_task(run, cfg, checkpoint)
        atomic_write_text(run / f"eval_{result['test_set']}.json", json.dumps(result, indent=1) + "\n")
        return result
    datamodule = instantiate(cfg.data)
    net, step = _trained(run, cfg, datamodule.num_classes, checkpoint)
    metrics = _validate(net, datamodule, cfg.trainer)
    result = {"mode": cfg.eval.mode, **metrics, "checkpoint": str(checkpoint),
              "step": step, "images": datamodule.test_images, "skipped": sorted(datamodule.skipped)}
    atomic_write_text(run / f"eval_{cfg.eval.mode}.json", json.dumps(result, indent=1) + "\n")
    return result


def evaluate_ensemble(runs: list[str | Path], overrides: list[str], directory: str | Path) -> dict:
    """Evaluate the runs' checkpoints as one ensemble (one run: that run, the same numbers); returns (and writes to
    <directory>/ensemble_<mode>.json) the result and its members. The first run's data settings (batch size, workers,
    decoding) and trainer (accelerator, precision) read and run it."""
    runs = [Path(run) for run in runs]
    cfgs = [_config(run, overrides) for run in runs]
    check_members(runs, cfgs)
    datamodule = instantiate(cfgs[0].data)
    nets, members = [], []
    for run, cfg in zip(runs, cfgs):
        checkpoint = _checkpoint(run)
        net, step = _trained(run, cfg, datamodule.num_classes, checkpoint)
        nets.append(net)
        members.append({"run": str(run), "depth": cfg.model.depth, "residual": cfg.model.residual,
                        "shortcut": cfg.model.shortcut, "checkpoint": str(checkpoint), "step": step})
    metrics = _validate(SoftmaxMean(nets), datamodule, cfgs[0].trainer)
    mode = cfgs[0].eval.mode
    result = {"mode": mode, **metrics, "images": datamodule.test_images, "skipped": sorted(datamodule.skipped),
              "members": members}
    Path(directory).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(directory) / f"ensemble_{mode}.json", json.dumps(result, indent=1) + "\n")
    return result


def _command_settings(overrides: list[str]) -> tuple[DictConfig, list[str]]:
    """eval.ensemble and eval.ensemble_dir (their defaults: conf/eval/imagenet.yaml), and the other overrides."""
    keys = {f"eval.{key}" for key in COMMAND_KEYS}
    ours = [o for o in overrides if o.split("=", 1)[0] in keys]
    defaults = OmegaConf.masked_copy(OmegaConf.load(CONF_DIR / "eval" / "imagenet.yaml"), list(COMMAND_KEYS))
    settings = OmegaConf.merge({"eval": defaults}, OmegaConf.from_dotlist(ours)).eval
    if not isinstance(settings.ensemble, bool):
        raise UserError(f"eval.ensemble={settings.ensemble} must be true or false. {USAGE}")
    return settings, [o for o in overrides if o not in ours]


def _ensemble(runs: list[str], overrides: list[str], directory: str | None) -> None:
    if len(runs) < 2:
        raise UserError(f"eval.ensemble=true averages two or more runs (got {len(runs)}): the error of one run "
                        "under eval.mode is src/evaluate.py RUN_DIR eval.mode=... without eval.ensemble, written to "
                        f"its eval_<mode>.json. {USAGE}")
    directory = Path(directory) if directory else beside([Path(run) for run in runs])
    r = evaluate_ensemble(runs, overrides, directory)
    path = directory / f"ensemble_{r['mode']}.json"
    print(f"{path}: ensemble of {len(runs)} runs, {r['mode']} top-1 error "
          f"{r['test/error']:.2f}%, top-5 error {r['test/top5_error']:.2f}% ({r['images']} images)")


def _line(run: str, r: dict) -> str:
    if "mode" in r:
        return (f"{run}: {r['mode']} top-1 error {r['test/error']:.2f}%, top-5 error {r['test/top5_error']:.2f}% "
                f"({r['images']} images, iteration {r['step']})")
    shown = ", ".join(f"{k.removeprefix('test/')} {v:g}" for k, v in r.items() if k.startswith("test/")
                      and k.count("/") == 1)  # not the per-class APs
    return f"{run}: {r['test_set']} {shown} (iteration {r['step']}; all in eval_{r['test_set']}.json)"


def main(argv: list[str]) -> None:
    quiet_lightning()
    overrides = [a for a in argv if OVERRIDE.match(a) and not Path(a).is_dir()]
    runs = [a for a in argv if a not in overrides]
    weights = any(o.startswith("model.weights=") for o in overrides)
    try:
        settings, overrides = _command_settings(overrides)
        if weights:
            if len(runs) != 1:
                raise UserError(f"model.weights makes one run directory of the weights: give one RUN_DIR (got "
                                f"{len(runs)}). {USAGE}")
            if not (Path(runs[0]) / ".hydra" / "config.yaml").is_file():
                weights_run(Path(runs[0]), [o for o in overrides if not o.startswith("eval.")])
        missing = [a for a in runs if not Path(a).is_dir()]
        if missing:
            raise UserError(f"no such run directory: {', '.join(missing)}. {USAGE}")
        if not runs:
            raise UserError(f"no run directory given. {USAGE}")
        if settings.ensemble:
            _ensemble(runs, overrides, settings.ensemble_dir)
            return
        for run in runs:
            print(_line(run, evaluate(run, overrides)))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
