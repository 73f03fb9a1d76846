"""The project's configs composed in the test process with Hydra's compose API, as src/train.py composes them."""
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from deepres.config import register_resolvers
from helpers.train import ROOT


def compose_config(*overrides: str, hydra: bool = False) -> DictConfig:
    """conf/train.yaml with the overrides; hydra=True keeps the hydra node (launcher, sweeper, directories)."""
    register_resolvers()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra)


def hydra_context(cfg: DictConfig):
    """What Hydra hands a sweeper and its launcher: a config loader of conf/ and the config's callbacks."""
    from hydra._internal.callbacks import Callbacks
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import HydraContext

    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(ROOT / "conf")))
    return HydraContext(config_loader=loader, callbacks=Callbacks(cfg))
