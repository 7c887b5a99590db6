"""One place turns a known error into the documented exit status: fcnseg.commands.errors.reports_errors."""

from __future__ import annotations

import argparse
import importlib

import pytest

from fcnseg.cli import COMMAND_MODULES, main
from fcnseg.commands.errors import CommandError, reports_errors


class Failed(RuntimeError):
    pass


def command_raising(error: BaseException, **kinds):
    @reports_errors("probe", **kinds)
    def run(args: argparse.Namespace) -> int:
        raise error

    return run


@pytest.mark.parametrize(
    "error, status",
    [
        (CommandError("--width must be > 0, got -1"), 2),
        (ValueError("model.safetensors: not an fcnseg checkpoint"), 2),
        (Failed("the export does not reproduce PyTorch"), 1),
    ],
)
def test_a_known_error_is_one_line_on_stderr_and_its_status(error, status, capsys):
    assert command_raising(error, failed=(Failed,))(argparse.Namespace()) == status
    captured = capsys.readouterr()
    assert captured.err == f"fcnseg probe: error: {error}\n" and captured.out == ""


def test_an_unknown_error_keeps_its_traceback():
    with pytest.raises(KeyError):
        command_raising(KeyError("a bug"))(argparse.Namespace())
    with pytest.raises(OSError):  # bad input only where the command names it
        command_raising(OSError("disk full"))(argparse.Namespace())
    assert command_raising(OSError("disk full"), bad_input=(OSError,))(argparse.Namespace()) == 2


def test_an_error_that_is_bad_input_and_a_failure_is_bad_input(capsys):
    class Both(Failed, ValueError):
        pass

    assert command_raising(Both("--min-agreement out of range"), failed=(Failed,))(argparse.Namespace()) == 2


def test_a_quiet_error_sets_the_status_and_prints_nothing(capsys):
    assert command_raising(CommandError("said by rank 0", quiet=True))(argparse.Namespace()) == 2
    assert capsys.readouterr().err == ""


def test_every_command_but_data_reports_through_it():
    # data prints its findings and errors on stdout by design (fcnseg data --json); models has no error to report.
    wrapper = reports_errors("probe")(lambda args: 0).__code__
    for name in sorted(set(COMMAND_MODULES) - {"data", "models"}):
        assert importlib.import_module(f"fcnseg.commands.{name}").run.__code__ is wrapper, name


def test_int8_settings_are_refused_before_anything_is_loaded(tmp_path, capsys):
    """A threshold out of range is bad input (2), said before the checkpoint is even opened."""
    missing = tmp_path / "no-such.safetensors"
    code = main(
        [
            "export",
            str(missing),
            "--out",
            str(tmp_path / "m.onnx"),
            "--int8",
            "--calibrate",
            str(tmp_path),
            "--min-agreement",
            "1.5",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err == (
        "fcnseg export: error: --min-agreement: the agreement threshold is a fraction in (0, 1], got 1.5\n"
    )
