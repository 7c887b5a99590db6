"""The one progress reporter: a bar on a terminal, rate-limited plain lines elsewhere, nothing when silenced."""

from __future__ import annotations

import io
import sys

import pytest

import fcnseg.progress as progress_module
from fcnseg.progress import Progress, line_seconds


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class Clock:
    """A perf_counter the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(progress_module.time, "perf_counter", fake)
    return fake


def test_a_terminal_gets_a_tqdm_bar_and_a_log_gets_plain_lines(monkeypatch):
    terminal = Terminal()
    with Progress(3, label="evaluate", unit="batch", stream=terminal) as shown:
        for _ in range(3):
            shown.update()
    assert shown.terminal and "\r" in terminal.getvalue() and "evaluate" in terminal.getvalue()
    assert "3/3" in terminal.getvalue() and "elapsed" not in terminal.getvalue()  # tqdm's bar, not our lines

    log = io.StringIO()  # a file: isatty() is False
    monkeypatch.setattr(sys, "stderr", log)  # the default stream is the current stderr
    with Progress(3, label="evaluate", unit="batch", every=0) as shown:
        for _ in range(3):
            shown.update()
    assert not shown.terminal and "\r" not in log.getvalue()
    assert all(line.startswith("evaluate: ") for line in log.getvalue().splitlines())
    assert [line.split(",")[0] for line in log.getvalue().splitlines()] == [
        "evaluate: 1/3 batches",
        "evaluate: 2/3 batches",
        "evaluate: 3/3 batches",
    ]


def test_lines_are_rate_limited_to_one_every_interval_and_one_at_the_end(clock):
    log = io.StringIO()
    shown = Progress(100, label="predict", unit="image", stream=log, every=30)
    for _ in range(99):  # an image every second
        clock.now += 1
        shown.update()
    lines = log.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "predict: 30/100 images",
        "predict: 60/100 images",
        "predict: 90/100 images",
    ]
    assert lines[0] == "predict: 30/100 images, 1 images/s, 0m30s elapsed, ETA 1m10s"
    clock.now += 1
    shown.update()  # the last image, 10 s after the previous line: no line yet
    assert len(log.getvalue().splitlines()) == 3
    shown.close()
    shown.close()  # a second close adds nothing
    assert log.getvalue().splitlines()[3:] == ["predict: 100/100 images, 1 images/s, 1m40s elapsed"]


def test_many_fast_updates_give_only_the_closing_line(clock):
    log = io.StringIO()
    with Progress(10_000, label="train", unit="step", stream=log, every=30) as shown:
        for _ in range(10_000):
            shown.update()
    assert log.getvalue().splitlines() == ["train: 10000/10000 steps, 0 steps/s, 0m00s elapsed"]


def test_silenced_progress_writes_nothing_on_a_terminal_or_in_a_log(clock):
    for stream in (Terminal(), io.StringIO()):
        with Progress(5, label="evaluate", unit="batch", show=False, stream=stream, every=0) as shown:
            for _ in range(5):
                clock.now += 60
                shown.update()
            shown.set_postfix(loss=1.0)
            assert shown.parts_bar("x.png", "tile") is None
        assert stream.getvalue() == ""
        shown.write("fcnseg predict: skipped a.png")  # messages still reach the user
        assert stream.getvalue() == "fcnseg predict: skipped a.png\n"


def test_parts_bars_only_on_a_terminal():
    assert Progress(1, label="predict", unit="image", stream=io.StringIO()).parts_bar("a.png", "tile") is None
    terminal = Terminal()
    wrap = Progress(1, label="predict", unit="image", stream=terminal).parts_bar("a.png", "tile")
    assert list(wrap(iter([1, 2, 3]))) == [1, 2, 3] and "a.png" in terminal.getvalue()


def test_a_line_never_shows_a_negative_time_left_nor_a_bare_separator(clock):
    log = io.StringIO()
    shown = Progress(120, label="train", unit="s", stream=log, every=0)
    clock.now += 200
    shown.update(264)  # a clocked run past its budget
    assert log.getvalue() == "train: 264/120 s, 3m20s elapsed\n"  # no ETA, no rate of seconds per second, no "; "
    shown.set_postfix(loss="0.5", lr="0.01")
    clock.now += 1
    shown.update(1)
    assert log.getvalue().splitlines()[-1] == "train: 265/120 s, 3m21s elapsed; loss 0.5, lr 0.01"


def test_a_resumed_run_counts_its_rate_from_where_it_started(clock):
    log = io.StringIO()
    shown = Progress(1000, initial=400, label="train", unit="step", stream=log, every=0)
    clock.now += 10
    shown.update(20)
    assert log.getvalue() == "train: 420/1000 steps, 2 steps/s, 0m10s elapsed, ETA 4m50s\n"


def test_an_unknown_total_and_byte_counts(clock):
    log = io.StringIO()
    shown = Progress(None, label="weights.pth", unit="B", unit_scale=True, stream=log, every=0)
    clock.now += 2
    shown.update(3_000_000)
    assert log.getvalue() == "weights.pth: 3.00M B, 1.50M B/s, 0m02s elapsed\n"


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("FCNSEG_PROGRESS_SECONDS", raising=False)
    assert line_seconds() == 30.0
    monkeypatch.setenv("FCNSEG_PROGRESS_SECONDS", "0.5")
    assert line_seconds() == 0.5 and Progress(1, label="x", unit="y", stream=io.StringIO()).every == 0.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("FCNSEG_PROGRESS_SECONDS", bad)
        with pytest.raises(ValueError, match="FCNSEG_PROGRESS_SECONDS"):
            line_seconds()
