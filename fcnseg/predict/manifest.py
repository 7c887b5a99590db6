"""The record of finished predictions that lets ``fcnseg predict`` resume where a killed run stopped.

Each process appends one JSON line per finished input to ``<out>/.fcnseg-predict/manifest-rank<r>.jsonl`` after the
input's output files are written (each atomically) and flushes it: the input's absolute path, its size and modification
time, a fingerprint of the settings that shape the outputs, and every output file's path in the output folder, size and
SHA-256. A later run skips an input when one of its lines still holds: same settings, the input unchanged, every output
present with the recorded size and hash. "Unchanged" is checked as :data:`RESUME_CHECKS` say: by size and modification
time (the default: nothing is read), or by the SHA-256 of the content (``hash``: each input is read once more, and one
rewritten with the same size and time, e.g. by a copy tool that keeps times, is predicted again; the line then holds the
hash). A kill loses at most the lines of inputs whose outputs were being written (they are predicted again) and may tear
the last line (ignored; the next line starts on a fresh one). Every process reads all ranks' files, so a run resumed
with another number of processes still finds what was done.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MANIFEST_FOLDER = ".fcnseg-predict"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: How a resumed run tells that an input is unchanged: ``size-mtime`` (the default) or ``hash`` (SHA-256 of the bytes).
RESUME_CHECKS = ("size-mtime", "hash")


def input_state(path: str | os.PathLike[str], check: str = "size-mtime") -> list:
    """``[size, mtime_ns]`` of an input file, and with ``check`` ``hash`` its SHA-256 third: a changed input is
    predicted again."""
    status = os.stat(path)
    return [status.st_size, status.st_mtime_ns] + ([file_sha256(path)] if check == "hash" else [])


def settings_fingerprint(settings: dict[str, Any]) -> str:
    """A short hash of the settings that shape the outputs (records made under others are not reused)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Manifest:
    """The finished inputs of an output folder; this process appends to its own file (``rank``)."""

    def __init__(self, out: str | os.PathLike[str], rank: int, settings: str, check: str = "size-mtime") -> None:
        if check not in RESUME_CHECKS:
            raise ValueError(f"resume check {check!r}: expected one of {', '.join(RESUME_CHECKS)}")
        self.out, self.settings, self.check = Path(out), settings, check
        self.records: dict[str, list[dict]] = {}
        folder = self.out / MANIFEST_FOLDER
        for file in sorted(folder.glob("manifest-rank*.jsonl")):
            for line in file.read_bytes().splitlines():
                try:
                    record = json.loads(line)
                    self.records.setdefault(record["input"], []).append(record)
                except (ValueError, KeyError, TypeError):  # a line torn by a kill
                    continue
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"manifest-rank{rank}.jsonl"
        self.handle = open(self.path, "ab")  # noqa: SIM115  (held open for the whole run; close() closes it)
        if self.handle.tell():
            with open(self.path, "rb") as tail:
                tail.seek(-1, os.SEEK_END)
                if tail.read(1) != b"\n":  # the last line was torn: begin a fresh one
                    self.handle.write(b"\n")

    def is_done(self, path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` was predicted under these settings, is unchanged, and its outputs are intact."""
        records = [
            record for record in self.records.get(os.path.abspath(path), ()) if record.get("settings") == self.settings
        ]
        try:
            size, mtime = input_state(path) if records else (None, None)
            digest = None  # the input is read only when a record of its size asks for its hash
            for record in records:
                state = record.get("state")
                if not isinstance(state, list) or len(state) < 2 or state[0] != size:
                    continue
                if self.check == "hash":
                    digest = digest or file_sha256(path)
                    unchanged = len(state) > 2 and state[2] == digest  # a line written without the hash does not count
                else:
                    unchanged = state[1] == mtime
                if unchanged and self._intact(record.get("outputs", {})):
                    return True
        except OSError:
            return False
        return False

    def _intact(self, outputs: dict[str, list]) -> bool:
        for name, (size, digest) in outputs.items():
            file = self.out / name
            if not file.is_file() or file.stat().st_size != size or file_sha256(file) != digest:
                return False
        return bool(outputs)

    def record(self, path: str | os.PathLike[str], state: list | None, outputs: Iterable[Path]) -> None:
        """Append the line of a finished input (its ``state`` as read) and flush it."""
        files = {os.path.relpath(file, self.out): [Path(file).stat().st_size, file_sha256(file)] for file in outputs}
        line = {"input": os.path.abspath(path), "state": state, "settings": self.settings, "outputs": files}
        self.handle.write(json.dumps(line).encode() + b"\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()
