"""The distribution holds every module: a wheel built from pyproject.toml, installed in a
fresh virtual environment (not the editable checkout), runs the command, imports the app
and the format parsers."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_in_the_tree_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {str(p.parent.relative_to(ROOT)).replace("/", ".")
             for top in ("aggregation", "service") for p in (ROOT / top).rglob("__init__.py")}
    assert listed == found


@pytest.mark.slow
def test_a_built_wheel_works_outside_the_checkout(tmp_path):
    # built from a copy: setuptools writes build/ and *.egg-info beside the sources
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "bench", "tests", "__pycache__", "out",
                                                               "*.egg-info", "build", ".hypothesis", ".pytest_cache"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheel = next(tmp_path.glob("crowdqc-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    py_files = {str(p.relative_to(ROOT)) for top in ("aggregation", "service") for p in (ROOT / top).rglob("*.py")}
    assert py_files <= set(names), sorted(py_files - set(names))
    # installed without dependencies into a target directory, and run from elsewhere with
    # this environment's packages behind it: every import must come from the wheel
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    probe = ("import service.app, service.formats.label_studio, service.api.results, service.cli, aggregation;"
             "assert service.__file__.startswith(%r), service.__file__;"
             "raise SystemExit(service.cli.main(['aggregate', '--help']))" % str(target))
    proc = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {probe}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--preset" in proc.stdout
