"""One place that turns a known error into the documented exit status (``fcnseg --help`` lists them).

A command's ``run`` raises; :func:`reports_errors` prints the one line users see on stderr,
``fcnseg <command>: error: <message>``, and returns 2 for bad input found before any work (:class:`CommandError`, and
``ValueError``: the base of ``CheckpointError``, ``DatasetError``, ``WeightsError``, ``RuntimeBackendError``, ... and of
a setting out of range) or 1 for a job that ran but did not succeed (the errors a command names as ``failed``). Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

BAD_INPUT, FAILED = 2, 1

Run = Callable[[argparse.Namespace], int]


class CommandError(Exception):
    """Bad input a command finds in its own arguments. ``quiet``: only the status (under torchrun, rank 0 says why)."""

    def __init__(self, message: str, *, quiet: bool = False) -> None:
        super().__init__(message)
        self.quiet = quiet


def reports_errors(
    command: str,
    *,
    bad_input: tuple[type[BaseException], ...] = (ValueError,),
    failed: tuple[type[BaseException], ...] = (),
) -> Callable[[Run], Run]:
    """Decorate the ``run(args)`` of ``fcnseg <command>``: :class:`CommandError` and ``bad_input`` give 2,
    ``failed`` gives 1 (an error that is both is bad input), each with one line on stderr."""

    caught_as_bad_input: tuple[type[BaseException], ...] = (CommandError, *bad_input)

    def decorate(run: Run) -> Run:
        @functools.wraps(run)
        def run_reporting_errors(args: argparse.Namespace) -> int:
            try:
                return run(args)
            except caught_as_bad_input as error:
                return _report(command, error, BAD_INPUT)
            except failed as error:
                return _report(command, error, FAILED)

        return run_reporting_errors

    return decorate


def _report(command: str, error: BaseException, status: int) -> int:
    if not (isinstance(error, CommandError) and error.quiet):
        print(f"fcnseg {command}: error: {error}", file=sys.stderr)
    return status
