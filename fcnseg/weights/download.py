"""Fetching known weights into the local cache: resumable, checksum-verified, atomic.

The cache is ``$FCNSEG_HOME`` if set, else ``$XDG_CACHE_HOME/fcnseg`` (``~/.cache/fcnseg``):
``downloads/<file>`` holds the published files, ``checkpoints/<name>.safetensors`` their
conversions. A download grows ``downloads/<file>.part`` and resumes it with an HTTP Range
request (after a dropped connection, or in a later run); only a file that has its published
size and checksum is renamed into place. ``$FCNSEG_WEIGHTS_MIRROR`` is a base URL tried
first (``<mirror>/<file>``), for links that died or machines that only reach a local server.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from ..files import replace_durably
from ..progress import Progress
from .checks import WeightsError
from .registry import KnownWeights

logger = logging.getLogger(__name__)

HOME_VARIABLE = "FCNSEG_HOME"
MIRROR_VARIABLE = "FCNSEG_WEIGHTS_MIRROR"
#: Tries per URL; each retry resumes from the bytes already on disk.
ATTEMPTS = 3
TIMEOUT_S = 60
_CHUNK = 1 << 20


def cache_dir() -> Path:
    """The fcnseg cache folder: ``$FCNSEG_HOME``, else the user cache directory."""
    if os.environ.get(HOME_VARIABLE):
        return Path(os.environ[HOME_VARIABLE]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "fcnseg"


def download_path(entry: KnownWeights) -> Path:
    """Where the published file of ``entry`` is kept (and where to place one downloaded by hand)."""
    return cache_dir() / "downloads" / entry.filename


def candidate_urls(entry: KnownWeights) -> list[str]:
    """The mirror's URL first (when ``$FCNSEG_WEIGHTS_MIRROR`` is set), then the published ones."""
    mirror = os.environ.get(MIRROR_VARIABLE, "").strip()
    return ([f"{mirror.rstrip('/')}/{entry.filename}"] if mirror else []) + list(entry.urls)


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _mismatch(path: Path, entry: KnownWeights) -> str | None:
    """What is wrong with ``path`` against the published size and checksum, or None."""
    size = path.stat().st_size
    if entry.size_bytes is not None and size != entry.size_bytes:
        return f"{size:,} bytes, the published file has {entry.size_bytes:,}"
    if entry.checksum is not None:
        actual = file_digest(path, entry.checksum.algorithm)
        if not actual.startswith(entry.checksum.digest.lower()):
            return f"{entry.checksum.algorithm} {actual}, the published file has {entry.checksum}"
    return None


def fetch(entry: KnownWeights, *, progress: bool = True) -> Path:
    """The verified published file of ``entry`` in the cache, downloaded (or resumed) if needed.

    Raises :class:`WeightsError`: when no URL answers (naming them and the path where a file
    downloaded elsewhere can be placed), or when the file fails its size or checksum (a
    download is then deleted, so nothing unverified stays in the cache).
    """
    target = download_path(entry)
    if target.is_file():  # there from an earlier fetch, or placed by hand
        problem = _mismatch(target, entry)
        if problem:
            raise WeightsError(f"{target} has {problem}: not the published {entry.filename}; delete or replace it")
        return target
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in candidate_urls(entry):
        try:
            _download(url, part, progress)
        except (OSError, http.client.HTTPException) as error:  # URLError and HTTPError are OSErrors
            failures.append(f"{url} ({getattr(error, 'reason', None) or error})")
            continue
        problem = _mismatch(part, entry)
        if problem:
            part.unlink()
            raise WeightsError(
                f"{url}: the downloaded file has {problem}; it was deleted, nothing was kept in the cache"
            )
        replace_durably(part, target)
        return target
    raise WeightsError(
        f"cannot download {entry.name}: {'; '.join(failures)}. Offline, download it elsewhere and place it at "
        f"{target} (${HOME_VARIABLE} moves the cache; ${MIRROR_VARIABLE}=<base URL> adds a mirror)"
    )


def _download(url: str, part: Path, progress: bool) -> None:
    """Complete ``part`` from ``url``, resuming with a Range request from the bytes it already holds."""
    for attempt in range(1, ATTEMPTS + 1):
        offset = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(
            url, headers={"User-Agent": "fcnseg", **({"Range": f"bytes={offset}-"} if offset else {})}
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                if offset and response.status != 206:
                    offset = 0  # the server sent the whole file (no Range support): start over
                elif offset and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                    part.unlink()
                    raise ConnectionError(
                        f"asked for bytes from {offset:,}, got {response.headers.get('Content-Range')}"
                    )
                length = response.headers.get("Content-Length")
                total = offset + int(length) if length is not None else None
                with (
                    open(part, "ab" if offset else "wb") as out,
                    Progress(
                        total,
                        initial=offset,
                        label=part.name[: -len(".part")],
                        unit="B",
                        unit_scale=True,
                        show=progress,
                    ) as bar,
                ):
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        bar.update(len(chunk))
            received = part.stat().st_size
            if total is None or received == total:
                return
            # http.client returns a short body without an error when the connection drops.
            failure: Exception = ConnectionError(f"connection dropped after {received:,} of {total:,} bytes")
        except urllib.error.HTTPError as error:
            if error.code != 416 or not offset:
                raise
            part.unlink()  # 416: the partial file does not fit the server's file; start over
            failure = error
        except (ConnectionError, TimeoutError, http.client.IncompleteRead) as error:
            failure = error
        if attempt == ATTEMPTS:
            raise ConnectionError(f"{failure}; {ATTEMPTS} tries") from None
        logger.warning("%s: %s; resuming (try %d of %d)", url, failure, attempt + 1, ATTEMPTS)
