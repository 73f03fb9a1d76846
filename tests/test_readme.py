"""The README as a newcomer reads it: its commands run as written, and the defaults it states are the config's."""
import re

from helpers.config import compose_config
from helpers.train import ROOT

README = (ROOT / "README.md").read_text()


def test_a_bare_python_command_comes_after_the_venv_is_activated():
    """A bare `python src/train.py` outside the venv fails on its first import: the README activates it first."""
    first_bare = re.search(r"^python src/", README, re.M)
    assert first_bare is not None  # the sweeps' commands are written with the venv's python
    assert "source .venv/bin/activate" in README[:first_bare.start()]


def test_the_data_defaults_the_readme_states_are_the_configs():
    cfg = compose_config()
    stated = dict(re.findall(r"`(\w+)` \(default ([\w.]+)", README))
    assert "val_size" in stated
    for key, value in stated.items():
        assert str(cfg.data[key]) == value, key
