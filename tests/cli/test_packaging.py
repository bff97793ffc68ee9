"""The layout users see: demos/ at the top, installed inside the package in a built wheel."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gradviz.model.catalog import BUILTIN_NAMES, demos_folder

ROOT = Path(__file__).resolve().parents[2]


def test_the_top_level_holds_what_the_design_names():
    names = {p.name for p in ROOT.iterdir() if not p.name.startswith(".")}
    assert {"pyproject.toml", "gradviz", "tests", "README.md", "demos"} <= names
    assert not (ROOT / "gradviz" / "demos").exists()


def test_every_builtin_demo_is_found_where_it_is_installed():
    folder = demos_folder()
    for name in BUILTIN_NAMES:
        assert (folder / f"{name.replace('-', '_')}.py").is_file(), name


def test_a_built_wheel_carries_the_demos_and_the_styles(tmp_path):
    pytest.importorskip("setuptools")
    source = tmp_path / "source"  # a copy: building leaves build/ behind
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    wheel = next(tmp_path.glob("gradviz-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in BUILTIN_NAMES:
        assert f"gradviz/demos/{name.replace('-', '_')}.py" in names, name
    assert "gradviz/tui/app.tcss" in names
    packages = {str(init.parent.relative_to(ROOT)) for init in (ROOT / "gradviz").rglob(
        "__init__.py")}
    assert all(f"{package}/__init__.py" in names for package in packages), (
        "a package is missing from [tool.setuptools] packages in pyproject.toml")
    assert not any(n.startswith(("tests/", "benchmarks/", "demos/")) for n in names)
