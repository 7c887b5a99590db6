"""Atomic file writes: a reader (or a crash) never sees half a file."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success, fsync it and rename it onto ``path``.

    On an exception (a full disk, a kill in the middle) the temporary file is
    removed and ``path`` keeps its previous content.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates the file 0600; give it the mode a plain open() would (0666 less the umask).
    os.chmod(tmp, 0o666 & ~_current_umask())
    try:
        yield tmp
        replace_durably(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_durably(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """fsync the finished file ``source`` and rename it onto ``target`` (same folder): all or nothing.

    For writers that cannot use :func:`atomic_path`, such as a resumable download
    whose partial file keeps a fixed name.
    """
    with open(source, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(source, target)
    _fsync_directory(Path(target).parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not supported on every platform
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sweep_temporary_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove what interrupted atomic writes left in ``folder`` and below (``.NAME.*.tmp``); returns them."""
    removed = []
    for tmp in Path(folder).rglob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
