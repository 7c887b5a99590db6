"""Atomic file writes: a reader (or a crash) never sees half a file.

An atomic write of ``NAME`` goes through a temporary file ``.NAME.XXXXXXXX.tmp`` beside it (hidden, a random
part, ``.tmp``); this module owns that naming (:func:`temporary_file_target`) and the sweep of what an
interrupted write left behind (:func:`sweep_temporary_files`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

_TEMPORARY_PREFIX, _TEMPORARY_SUFFIX = ".", ".tmp"


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success, fsync it and rename it onto ``path``.

    On an exception (a full disk, a kill in the middle) the temporary file is
    removed and ``path`` keeps its previous content.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f"{_TEMPORARY_PREFIX}{target.name}.", suffix=_TEMPORARY_SUFFIX, dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates the file 0600, and some writers (safetensors) make their own file at the path: give the
        # finished file the mode a plain open() would (0666 less the umask), whoever created it.
        os.chmod(tmp, 0o666 & ~_current_umask())
        replace_durably(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_durably(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """fsync the finished file ``source`` and rename it onto ``target`` (same folder): all or nothing.

    For writers that cannot use :func:`atomic_path`, such as a resumable download whose partial file keeps a fixed name.
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


def temporary_file_target(name: str) -> str | None:
    """The file name whose atomic write uses the temporary file ``name`` (``.NAME.XXXX.tmp`` -> ``NAME``); None
    when ``name`` is not such a temporary file."""
    if not (name.startswith(_TEMPORARY_PREFIX) and name.endswith(_TEMPORARY_SUFFIX)):
        return None
    target, dot, random_part = name[len(_TEMPORARY_PREFIX) : -len(_TEMPORARY_SUFFIX)].rpartition(".")
    return target if dot and target and random_part and _is_random_part(random_part) else None


def _is_random_part(text: str) -> bool:
    return all(char.isascii() and (char.isalnum() or char == "_") for char in text)


def sweep_temporary_files(
    folder: str | os.PathLike[str], names: Collection[str] | None = None, *, below: bool = True
) -> list[Path]:
    """Remove what interrupted atomic writes left in ``folder`` (and its sub-folders, unless ``below`` is False);
    returns the files removed.

    ``names`` limits the sweep to the temporary files of those targets (e.g. the outputs this process is about to
    write, not another process's that may be writing beside it); None sweeps every one. Only files named as
    :func:`atomic_path` names them are touched.
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    candidates = root.rglob(f"{_TEMPORARY_PREFIX}*{_TEMPORARY_SUFFIX}") if below else root.iterdir()
    removed = []
    for path in candidates:
        target = temporary_file_target(path.name)
        if target is not None and (names is None or target in names) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
