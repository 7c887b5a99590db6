"""Progress of a long loop (training, prediction, evaluation): a bar on a terminal, plain lines elsewhere.

:class:`Progress` is the one reporter every command uses. Where it writes (stderr by default) decides how:

- a terminal: a tqdm bar (position, rate, ETA, and the values of :meth:`Progress.set_postfix`);
- anything else (a log file, a pipe, CI): one plain line at most every ``every`` seconds (:data:`LINE_SECONDS`, or the
  environment variable ``FCNSEG_PROGRESS_SECONDS``), and a last one when the reporter closes, e.g.
  ``evaluate: 12/101 batches, 0.8 batches/s, 0m15s elapsed, ETA 1m51s``; no carriage returns, so the log stays readable;
- ``show=False`` (``--no-progress``, or a rank other than 0): nothing at all.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO, TypeVar, cast

from tqdm import tqdm

#: Seconds between two progress lines off a terminal, unless FCNSEG_PROGRESS_SECONDS says otherwise.
LINE_SECONDS = 30.0
LINE_SECONDS_VARIABLE = "FCNSEG_PROGRESS_SECONDS"

Item = TypeVar("Item")


def line_seconds() -> float:
    """The seconds between progress lines: ``FCNSEG_PROGRESS_SECONDS`` when set (0: a line at every update)."""
    value = os.environ.get(LINE_SECONDS_VARIABLE)
    if value is None or not value.strip():
        return LINE_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not seconds >= 0:  # NaN too
        raise ValueError(f"{LINE_SECONDS_VARIABLE}={value!r}: expected a number of seconds >= 0")
    return seconds


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal (a closed or odd stream is not)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class Progress:
    """Progress over ``total`` units (None: unknown), shown as a bar on a terminal and as plain lines elsewhere.

    ``label`` names the work (``train``, ``predict``, ``evaluate``), ``unit`` one unit of it (``step``, ``image``,
    ``batch``, ``s``, ``B``); ``initial`` is where a resumed run starts; ``unit_scale`` writes large counts
    with SI prefixes (bytes). ``stream`` defaults to the current ``sys.stderr``; ``every`` to
    :func:`line_seconds`. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        total: float | None,
        *,
        label: str,
        unit: str,
        show: bool = True,
        initial: float = 0,
        unit_scale: bool = False,
        stream: TextIO | None = None,
        every: float | None = None,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.show, self.terminal = show, show and is_terminal(self.stream)
        self.total, self.done, self.initial = total, initial, initial
        self.label, self.unit, self.unit_scale = label, unit, unit_scale
        self.every = line_seconds() if every is None else every
        self.started = self.last_line = time.perf_counter()
        self.postfix: dict[str, Any] = {}
        self.printed: float | None = None  # the position the last line showed
        self.bar = (
            tqdm(
                total=total,
                initial=initial,
                desc=label,
                unit=unit,
                unit_scale=unit_scale,
                dynamic_ncols=True,
                file=self.stream,
            )
            if self.terminal
            else None
        )

    @property
    def lines(self) -> bool:
        """Whether this reporter writes plain lines (shown, and not on a terminal)."""
        return self.show and not self.terminal

    def update(self, amount: float = 1) -> None:
        """``amount`` more units done."""
        self.done += amount
        if self.bar is not None:
            self.bar.update(amount)
        elif self.lines and time.perf_counter() - self.last_line >= self.every:
            self._line()

    def set_postfix(self, **values: Any) -> None:
        """Values shown after the position (e.g. ``loss=...``), on the bar and in the next line."""
        self.postfix = values
        if self.bar is not None:
            self.bar.set_postfix(values)

    def write(self, message: str) -> None:
        """Print ``message`` on the reporter's stream without breaking the bar (also when progress is not shown)."""
        if self.terminal:
            tqdm.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def parts_bar(self, name: str, unit: str) -> Callable[[Iterable[Item]], Iterator[Item]] | None:
        """A wrapper that shows a passing bar over the parts of one item (tiles, frames), on a terminal; else None."""
        if not self.terminal:
            return None
        bar = functools.partial(tqdm, desc=name, unit=unit, leave=False, dynamic_ncols=True, file=self.stream)
        return cast(Callable[[Iterable[Item]], Iterator[Item]], bar)  # tqdm(iterable) iterates over it

    def close(self) -> None:
        """End the bar, or write the last line (when the position changed since the previous one)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.lines and self.printed != self.done:
            self._line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def format_line(self, now: float | None = None) -> str:
        """The plain line for the position, e.g. ``predict: 3/10 images, 1.5 images/s, 0m02s elapsed, ETA 0m05s``."""
        elapsed = (time.perf_counter() if now is None else now) - self.started
        units = _plural(self.unit)
        position = self._count(self.done) + ("" if self.total is None else f"/{self._count(self.total)}")
        parts = [f"{position} {units}"]
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        if self.unit != "s":  # a clock-counted total: the rate of seconds per second says nothing
            parts.append(f"{self._count(rate, rate=True)} {units}/s")
        parts.append(f"{_duration(elapsed)} elapsed")
        if self.total is not None and self.done < self.total:
            parts.append(f"ETA {_duration((self.total - self.done) / rate)}" if rate > 0 else "ETA unknown")
        line = f"{self.label}: " + ", ".join(parts)
        if self.postfix:
            line += "; " + ", ".join(f"{key} {value}" for key, value in self.postfix.items())
        return line

    def _line(self) -> None:
        now = time.perf_counter()
        print(self.format_line(now), file=self.stream, flush=True)
        self.last_line, self.printed = now, self.done

    def _count(self, value: float, rate: bool = False) -> str:
        if self.unit_scale:
            return tqdm.format_sizeof(value)
        if rate and value < 100:
            return f"{value:.3g}"
        return f"{value:.0f}" if float(value).is_integer() or abs(value) >= 10 else f"{value:.1f}"


def _plural(unit: str) -> str:
    if len(unit) <= 2:  # s, B: symbols
        return unit
    return unit + ("es" if unit.endswith(("s", "x", "ch", "sh")) else "s")


def _duration(seconds: float) -> str:
    """``4m05s``, or ``1h02m`` from an hour on; never negative."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
