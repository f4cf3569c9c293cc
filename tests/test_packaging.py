"""The wheel a city installs carries what the API serves from the package: the city page and the docs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import api

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("citygw", "edge", "firmware_bridge", "collector", "api", "dashboards", "simulators")


def test_the_wheel_ships_the_city_page(tmp_path: Path) -> None:
    # Built from a copy, so the work tree gets no build/ folder; offline, with the venv's setuptools.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-qw", tmp_path, source],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("citygw-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    static = Path(api.__file__).parent / "static"
    page = {f"api/static/{path.name}" for path in static.iterdir()}
    assert {"api/static/index.html", "api/static/city.js", "api/static/city.css"} <= page
    assert page <= shipped
