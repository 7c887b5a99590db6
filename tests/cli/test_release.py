"""The release's shape: one version everywhere, the PEP 561 marker, a changelog entry for the version.

Building and installing the wheel takes minutes and a new virtual environment: ``.ci/wheel-check`` does that
in CI (``make wheel-check``); these tests check the declarations it relies on.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import fcnseg
from fcnseg import __version__
from fcnseg.cli import main

ROOT = Path(__file__).resolve().parents[2]
tomllib = pytest.importorskip("tomllib")  # Python >= 3.11


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_version_is_written_once_and_setuptools_reads_it():
    project = _pyproject()
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "fcnseg.__version__"
    setuptools_expand = pytest.importorskip("setuptools.config.expand")
    assert setuptools_expand.read_attr(attr, root_dir=ROOT) == __version__ == fcnseg.__version__
    packaging_version = pytest.importorskip("packaging.version")
    assert str(packaging_version.Version(__version__)) == __version__  # PEP 440, normalised


def test_fcnseg_version_prints_the_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"fcnseg {__version__} (torch ") and "Python 3." in line


def test_the_changelog_starts_with_this_version():
    headings = re.findall(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(encoding="utf-8"), flags=re.M)
    assert headings and headings[0] == __version__
    assert len(headings) == len(set(headings))  # one section per version


def test_the_type_hints_are_shipped():
    assert (ROOT / "fcnseg" / "py.typed").is_file()
    assert "py.typed" in _pyproject()["tool"]["setuptools"]["package-data"]["fcnseg"]
