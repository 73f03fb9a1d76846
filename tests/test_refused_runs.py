"""A run that cannot start leaves nothing behind: every check that needs no training (the config, the data set's
files) runs before its directory, logs or W&B run are made, and before anything of the run is printed: the refusal
is the run's only output."""
from helpers.train import FAST, run_train

NO_LOGGER = [o for o in FAST if o != "logger=none"]  # W&B on, as by default: it must not start either


def made(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_bad_depth_or_missing_data_creates_nothing(tmp_path, cifar10_root):
    for bad, says in ((["model.depth=9", f"data.root={cifar10_root}"], "model.depth=9"),
                      ([f"data.root={tmp_path / 'nowhere'}", "data.download=false"], "cifar10 not found")):
        proc = run_train(*NO_LOGGER, *bad, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, check=False)
        assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr
        assert proc.stdout == "" and proc.stderr.splitlines() == [proc.stderr.strip()], proc.stdout + proc.stderr
        assert proc.stderr.startswith("error: ")
        assert made(tmp_path) == [], made(tmp_path)


def test_a_sweep_with_missing_data_launches_no_job(tmp_path):
    proc = run_train("-m", *FAST, "model.residual=true,false", f"data.root={tmp_path / 'nowhere'}",
                     "data.download=false", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "cifar10 not found" in proc.stderr and "No job was launched" in proc.stderr
    assert not list(tmp_path.glob("sweep/*/"))
