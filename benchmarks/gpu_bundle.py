"""What a lent GPU machine lacks, carried in one git-ignored folder (.gpu/, under the 64 MiB a working tree may
carry), and the environment the GPU checks run in there (torch, torchvision and lightning, no package index):

    python benchmarks/gpu_bundle.py [--dest .gpu]     (make gpu-bundle)

writes DEST/wheels (hydra-core, omegaconf, antlr4-python3-runtime, submitit, hydra-submitit-launcher) and, where the
maintainers' shared folder sits beside the clone (../shared/data, a convenience, not a requirement), DEST/data: its
CIFAR-10 JPEG copy and make_cifar10.py, which the real-data runs of gpu_fidelity.py need. On the machine,
environment() installs the wheels into a site folder of their own (no dependencies resolved, torch untouched) and
cifar_root() builds the CIFAR-10 folder from the copy."""
import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / ".gpu"
SHARED_DATA = ROOT.parent / "shared" / "data"
# the versions the project is tested with; antlr4 4.9.3 exists only as a source archive, built into a wheel here
WHEELS = ["hydra-core==1.3.8", "omegaconf==2.3.0", "submitit==1.5.4", "hydra-submitit-launcher==1.2.0"]
SOURCE_ONLY = ["antlr4-python3-runtime==4.9.3"]
PYTHON = "3.12"  # the GPU image's
DATA_FILES = ["cifar10-jpeg.tar.xz", "make_cifar10.py"]


def make_bundle(dest: Path) -> None:
    wheels = dest / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", PYTHON,
                    "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform", "any",
                    "-d", str(wheels), *WHEELS], check=True)
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), *SOURCE_ONLY], check=True)
    copy = all((SHARED_DATA / name).is_file() for name in DATA_FILES)
    if copy:
        (dest / "data").mkdir(exist_ok=True)
        for name in DATA_FILES:
            shutil.copy2(SHARED_DATA / name, dest / "data" / name)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"{dest}: {size / 2**20:.1f} MiB ({len(list(wheels.glob('*.whl')))} wheels, "
          f"{'CIFAR-10 copy' if copy else f'no CIFAR-10 copy: {SHARED_DATA} is missing'})")


def environment(bundle: Path = BUNDLE, site: Path = Path("/tmp/deepres-site")) -> dict:
    """The children's environment: src/ importable without installing the project and, where hydra is missing
    and the bundle has its wheels, those wheels installed into `site` (once) and importable."""
    paths = [str(ROOT / "src")]
    wheels = sorted((bundle / "wheels").glob("*.whl"))
    if importlib.util.find_spec("hydra") is None and wheels:
        if not site.exists():
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target",
                            str(site), *map(str, wheels)], check=True)
        paths.insert(0, str(site))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("WANDB_MODE", "offline")
    return env


def cifar_root(bundle: Path = BUNDLE, dest: Path = Path("/tmp/deepres-cifar10")) -> Path:
    """A CIFAR-10 folder in the official layout: data.root for the real-data runs (built once from the copy in the
    bundle, or from ../shared/data where the bundle has none); exits with one line where neither has it."""
    if not (dest / "cifar-10-batches-py" / "test_batch").exists():
        sources = [s for s in (bundle / "data", SHARED_DATA) if all((s / name).is_file() for name in DATA_FILES)]
        if not sources:
            sys.exit(f"no CIFAR-10 copy ({', '.join(DATA_FILES)}) in {bundle / 'data'} or {SHARED_DATA}: the "
                     "real-data runs need the maintainers' copy (make gpu-bundle beside their shared folder)")
        subprocess.run([sys.executable, str(sources[0] / DATA_FILES[1]), str(dest)], check=True)
    return dest


def machine_line(env: dict) -> str:
    """common.machine() (GPU, torch, commit, date) as the children see it: in their environment."""
    probe = f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import common; print(common.machine())"
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=ROOT)
    return proc.stdout.strip() or proc.stderr.strip()[-300:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=BUNDLE)
    make_bundle(parser.parse_args().dest)


if __name__ == "__main__":
    main()
