"""What installing glassgpt needs from pyproject.toml: no deprecation warning from setuptools (the
licence as an SPDX string, a setuptools that reads it), and every page asset shipped."""

import fnmatch
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_licence_is_an_spdx_string_read_by_the_setuptools_required():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"  # a table is deprecated (PEP 639) and warns at install
    requires = [r for r in project["build-system"]["requires"] if r.startswith("setuptools")]
    assert requires and int(requires[0].split(">=")[1].split(".")[0]) >= 77  # 77 reads SPDX expressions


def test_every_asset_of_a_page_is_in_the_package_data():
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["glassgpt"]
    package = REPO / "src" / "glassgpt"
    assets = [p.relative_to(package).as_posix() for p in package.rglob("*_assets/*") if p.is_file()]
    assert assets and all(any(fnmatch.fnmatch(a, g) for g in globs) for a in assets), assets
