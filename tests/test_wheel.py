"""The wheel carries what the package reads at runtime: the shipped weights, the web app's files.

The fast test checks pyproject's package-data globs against the files under src/colorgan; the
slow one builds the wheel (standard tooling, from a copy of the tree) and runs it from a temporary
folder. The full check (a fresh virtual environment, `colorgan colorize examples/`, the web app,
the ComfyUI nodes) is in `.ci/run`.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "colorgan"


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _package_files() -> set[str]:
    """Every file of the package as the wheel must hold it (``colorgan/...``), caches left out."""
    out = set()
    for path in PKG.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"):
            out.add(path.relative_to(PKG.parent).as_posix())
    return out


def test_package_data_covers_every_data_file_and_the_entry_points():
    config = _pyproject()
    globs = config["tool"]["setuptools"]["package-data"]["colorgan"]
    matched = {f"colorgan/{p}" for g in globs for p in glob.glob(g, root_dir=PKG, recursive=True)}
    data = {f for f in _package_files() if not f.endswith(".py")}
    assert data - matched == set(), "files under src/colorgan that the wheel would leave out: add them to package-data"
    from colorgan.models.hub import SHIPPED

    assert {f"colorgan/weights/{f}" for f in SHIPPED.values()} <= matched
    assert config["project"]["scripts"]["colorgan"] == "colorgan.cli:main"
    assert (PKG / "__main__.py").is_file()


@pytest.mark.slow
def test_wheel_holds_the_package_and_runs_outside_the_tree(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(tree)],
                   check=True, cwd=tmp_path)
    (wheel,) = dist.glob("colorgan-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
        z.extractall(tmp_path / "site")
    assert _package_files() - names == set()
    assert "colorgan = colorgan.cli:main" in entry_points

    # Run from the unpacked wheel, not the source tree (PYTHONPATH comes before the editable install).
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "OMP_NUM_THREADS": "1"}
    code = (
        "import colorgan, pathlib; from colorgan.models.hub import resolve_weights, SHIPPED; "
        "from importlib import resources; "
        "print(pathlib.Path(colorgan.__file__).resolve()); "
        "[print(resolve_weights(n).resolve()) for n in SHIPPED]; "
        "print(resources.files('colorgan.web').joinpath('static', 'index.html').is_file())"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    lines = out.stdout.split()
    site = str((tmp_path / "site").resolve())
    assert all(line.startswith(site) for line in lines[:-1]) and lines[-1] == "True", out.stdout
    help_ = subprocess.run([sys.executable, "-m", "colorgan", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert help_.returncode == 0 and "colorize" in help_.stdout
