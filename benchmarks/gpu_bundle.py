"""What a lent GPU machine lacks, carried in one git-ignored folder (.gpu/, under the 64 MiB a working tree may
carry), and the environment the GPU checks run in there (torch, torchvision and lightning, no package index):

    python benchmarks/gpu_bundle.py [--dest .gpu] [--data DIR]     (make gpu-bundle [GPU_DATA=DIR])

writes DEST/wheels (hydra-core, omegaconf, antlr4-python3-runtime, submitit, hydra-submitit-launcher) and, with
--data, DEST/data: DIR's CIFAR-10 JPEG copy and make_cifar10.py (a folder holding both), which the real-data runs of
gpu_fidelity.py need. On the machine,
environment() installs the wheels into a site folder of their own (no dependencies resolved, torch untouched) and
cifar_root() builds the CIFAR-10 folder from the copy."""
import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / ".gpu"
# the versions the project is tested with; antlr4 4.9.3 exists only as a source archive, built into a wheel here
WHEELS = ["hydra-core==1.3.8", "omegaconf==2.3.0", "submitit==1.5.4", "hydra-submitit-launcher==1.2.0"]
SOURCE_ONLY = ["antlr4-python3-runtime==4.9.3"]
PYTHON = "3.12"  # the GPU image's
DATA_FILES = ["cifar10-jpeg.tar.xz", "make_cifar10.py"]


def make_bundle(dest: Path, data: Path | None) -> None:
    wheels = dest / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", PYTHON,
                    "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform", "any",
                    "-d", str(wheels), *WHEELS], check=True)
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), *SOURCE_ONLY], check=True)
    missing = [name for name in DATA_FILES if data and not (data / name).is_file()]
    if missing:
        sys.exit(f"--data {data} lacks {', '.join(missing)}: it must hold {' and '.join(DATA_FILES)}")
    copy = data is not None
    if copy:
        (dest / "data").mkdir(exist_ok=True)
        for name in DATA_FILES:
            shutil.copy2(data / name, dest / "data" / name)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"{dest}: {size / 2**20:.1f} MiB ({len(list(wheels.glob('*.whl')))} wheels, "
          f"{'CIFAR-10 copy' if copy else 'no CIFAR-10 copy: no --data'})")


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
    bundle); exits with one line where the bundle has none."""
    if not (dest / "cifar-10-batches-py" / "test_batch").exists():
        source = bundle / "data"
        if not all((source / name).is_file() for name in DATA_FILES):
            sys.exit(f"no CIFAR-10 copy ({', '.join(DATA_FILES)}) in {source}: the real-data runs need one; "
                     "make gpu-bundle GPU_DATA=DIR copies it from a folder holding both files")
        subprocess.run([sys.executable, str(source / DATA_FILES[1]), str(dest)], check=True)
    return dest


# how the GPU scripts start a child: (argv, env, timeout) -> its exit status and output, or subprocess.TimeoutExpired
Runner = Callable[[list[str], dict, float | None], subprocess.CompletedProcess]


def fresh_process(argv: list[str], env: dict, timeout: float | None) -> subprocess.CompletedProcess:
    """The command in a fresh interpreter of its own, from the repository root, as on the GPU machine."""
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def machine_line(env: dict, run: Runner = fresh_process) -> str:
    """common.machine() (GPU, torch, commit, date) as the children see it: in their environment."""
    probe = f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import common; print(common.machine())"
    proc = run([sys.executable, "-c", probe], env, None)
    return proc.stdout.strip() or proc.stderr.strip()[-300:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=BUNDLE)
    parser.add_argument("--data", type=Path, help=f"a folder holding {' and '.join(DATA_FILES)} (CIFAR-10's copy)")
    args = parser.parse_args()
    make_bundle(args.dest, args.data)


if __name__ == "__main__":
    main()
