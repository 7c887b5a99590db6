"""The ``fcnseg`` command line: each sub-command lives in :mod:`fcnseg.commands`."""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
from collections.abc import Sequence

from . import __version__

#: Sub-command modules, in the order ``fcnseg --help`` lists them.
COMMAND_MODULES = [
    "models",
    "data",
    "train",
    "demo",
    "eval",
    "predict",
    "export",
    "serve",
    "weights",
    "reproduce",
]


#: What every command's exit status means (``fcnseg --help`` prints it); :mod:`fcnseg.commands.errors`
#: turns the known errors into them.
EXIT_CODES = """exit status, the same in every command:
  0    done
  1    the job ran but did not succeed in full: some inputs could not be predicted, training diverged,
       an export failed its verification, a download failed
  2    bad input, found before any work: arguments, settings, a file that is not a valid checkpoint,
       a dataset error, a device that is not there (one line on stderr names the file or value)
  130  training stopped by Ctrl-C (SIGINT) after saving its state; 143 the same for SIGTERM"""


def version_line() -> str:
    """What ``fcnseg --version`` prints: fcnseg's version, then torch's and Python's (for bug reports)."""
    import torch

    return f"fcnseg {__version__} (torch {torch.__version__}, Python {platform.python_version()})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcnseg",
        description="Fully Convolutional Networks for semantic segmentation.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=version_line(),
        help="print fcnseg's version (with torch's and Python's) and exit",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(f"fcnseg.commands.{module_name}")
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # File names that are not valid UTF-8 reach messages as lone surrogates; print them as
    # \udcXX escapes instead of dying with UnicodeEncodeError on a strict UTF-8 terminal.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    module = importlib.import_module(f"fcnseg.commands.{args.command}")
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
