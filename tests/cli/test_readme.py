"""The README's snippets run as written: every Python block runs, every ``fcnseg`` command line parses
against the real command line, and the quick commands run."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from fcnseg.cli import build_parser, main

README = Path(__file__).resolve().parents[2] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def _command_lines() -> list[str]:
    lines = []
    for block in _blocks("sh"):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("fcnseg ") and "..." not in line:
                lines.append(line)
    return lines


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_python_snippet_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(_blocks("python")[index], f"README python block {index}", "exec"), {})


@pytest.mark.parametrize("line", _command_lines())
def test_command_line_parses(line):
    argv = shlex.split(line)[1:]
    argv = [a for a in argv if not (a.startswith("[") or a.endswith("]"))]  # optional parts in brackets
    build_parser().parse_args(argv)


def test_the_readme_has_snippets_and_the_quick_commands_run(capsys):
    assert len(_blocks("python")) >= 3 and len(_command_lines()) >= 10
    assert main(["models"]) == 0 and "fcn8s_atonce" in capsys.readouterr().out
    assert main(["weights", "list"]) == 0 and "fcn8s-voc" in capsys.readouterr().out
