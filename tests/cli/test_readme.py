"""The snippets of the README and of every documentation page run as written: every Python block runs, every
``fcnseg`` command line parses against the real command line, every benchmark command names a script and
options that exist, and the quick commands run."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from fcnseg.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
#: The README and every page of the documentation site (docs/), by their path from the repository root.
PAGES = {path.relative_to(ROOT).as_posix(): path for path in [README, *sorted((ROOT / "docs").rglob("*.md"))]}
#: Pages that only include a file kept elsewhere (benchmarks/RESULTS.md, CHANGELOG.md) or are generated from the
#: docstrings: they hold no commands of their own.
WITHOUT_COMMANDS = {"docs/api.md", "docs/benchmarks/results.md", "docs/changelog.md"}
BENCHMARK_COMMAND = re.compile(r"^\.venv/bin/python (benchmarks/\S+\.py)\b(.*)$")


def _blocks(page: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", PAGES[page].read_text(encoding="utf-8"), flags=re.S)


def _shell_lines(page: str) -> list[str]:
    """The lines of a page's ```sh blocks, comments cut off."""
    return [line.split("  #")[0].strip() for block in _blocks(page, "sh") for line in block.splitlines()]


def _command_lines(page: str) -> list[str]:
    return [line for line in _shell_lines(page) if line.startswith("fcnseg ") and "..." not in line]


def _benchmark_lines(page: str) -> list[str]:
    return [line for line in _shell_lines(page) if BENCHMARK_COMMAND.match(line)]


PYTHON_BLOCKS = [(page, index) for page in PAGES for index in range(len(_blocks(page, "python")))]
COMMAND_LINES = [(page, line) for page in PAGES for line in _command_lines(page)]
BENCHMARK_LINES = [(page, line) for page in PAGES for line in _benchmark_lines(page)]


@pytest.mark.parametrize(("page", "index"), PYTHON_BLOCKS, ids=[f"{page}#{index}" for page, index in PYTHON_BLOCKS])
def test_python_snippet_runs(page, index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(_blocks(page, "python")[index], f"{page} python block {index}", "exec"), {})


@pytest.mark.parametrize(("page", "line"), COMMAND_LINES, ids=[f"{page}: {line}" for page, line in COMMAND_LINES])
def test_command_line_parses(page, line):
    argv = shlex.split(line)[1:]
    argv = [a for a in argv if not (a.startswith("[") or a.endswith("]"))]  # optional parts in brackets
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as stop:  # --help and --version print and exit 0; a parse error exits 2
        assert stop.code == 0, f"{page}: {line}"


@pytest.mark.parametrize(("page", "line"), BENCHMARK_LINES, ids=[f"{page}: {line}" for page, line in BENCHMARK_LINES])
def test_benchmark_command_names_a_script_and_its_options(page, line):
    script, arguments = BENCHMARK_COMMAND.match(line).groups()
    source = (ROOT / script).read_text(encoding="utf-8")
    for option in re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", arguments):
        assert f'"{option}"' in source, f"{page}: {script} has no option {option}"


@pytest.mark.parametrize("page", sorted(set(PAGES) - WITHOUT_COMMANDS))
def test_every_page_shows_commands_that_are_checked(page):
    assert _blocks(page, "python") or _command_lines(page) or _benchmark_lines(page) or page == "docs/index.md", (
        f"{page} has no Python block and no fcnseg or benchmark command line for this test to check"
    )


def test_the_pages_have_snippets_and_the_quick_commands_run(capsys):
    assert len(PYTHON_BLOCKS) >= 6 and len(COMMAND_LINES) >= 30 and len(BENCHMARK_LINES) >= 2
    assert _blocks("README.md", "python") and len(_command_lines("README.md")) >= 5
    assert main(["models"]) == 0 and "fcn8s_atonce" in capsys.readouterr().out
    assert main(["weights", "list"]) == 0 and "fcn8s-voc" in capsys.readouterr().out


#: ``fcnseg.a.b`` named in a page (inside backticks, e.g. `fcnseg.data.open_dataset(kind, root)`, or in a code block).
INLINE_NAME = re.compile(r"\b(fcnseg(?:\.[A-Za-z_]\w*)+)")
_CODE = re.compile(r"`[^`\n]+`|```.*?```", flags=re.S)


def _names_in(page: str) -> set[str]:
    names = set()
    for code in _CODE.findall(PAGES[page].read_text(encoding="utf-8")):
        names |= {name for name in INLINE_NAME.findall(code) if not name.endswith((".py", ".json"))}
    return names


def test_every_python_name_a_page_shows_is_reachable_after_import_fcnseg():
    """A user who types ``import fcnseg`` and then a name a page shows gets it, in a fresh interpreter (in this
    one, other tests have imported the sub-packages already)."""
    names = sorted({name for page in PAGES for name in _names_in(page)})
    assert "fcnseg.data.open_dataset" in names and "fcnseg.predict.load_image" in names
    check = (
        "import fcnseg, functools, sys\n"
        "def reach(name):\n"
        "    try:\n"
        "        functools.reduce(getattr, name.split('.')[1:], fcnseg)\n"
        "    except AttributeError as error:\n"
        "        return f'{name}: {error}'\n"
        "print('\\n'.join(filter(None, map(reach, sys.argv[1:]))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", check, *names],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"names a page shows that fail after import fcnseg:\n{result.stdout}"
