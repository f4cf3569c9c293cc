"""pyproject.toml builds with the oldest setuptools it accepts."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).parents[2] / "pyproject.toml"


def test_a_string_license_requires_a_setuptools_that_reads_it() -> None:
    """A `license = "SPDX"` string fails setuptools < 77 ("must be valid exactly by one definition")."""
    data = tomllib.loads(PYPROJECT.read_text())
    (setuptools,) = [Requirement(r) for r in data["build-system"]["requires"] if r.startswith("setuptools")]
    if isinstance(data["project"]["license"], str):
        assert not setuptools.specifier.contains(Version("76.1.0")), setuptools
        assert setuptools.specifier.contains(Version("77.0.3")), setuptools
