"""Fetching weights into the cache against a local HTTP server: resume, Range, checksums, mirror, offline."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from weights_server import FileServer, closed_port_url

from fcnseg.cli import main
from fcnseg.weights import WeightsError, fetch
from fcnseg.weights.download import cache_dir, candidate_urls
from fcnseg.weights.registry import Checksum, KnownWeights

FILENAME = "tiny.caffemodel"
#: 2.5 MiB of deterministic, non-repeating bytes: more than two read chunks, so a cut lands mid-stream.
DATA = b"".join(hashlib.sha256(i.to_bytes(4, "little")).digest() for i in range(80_000))


def entry(*urls: str, checksum: Checksum | None = None, size: int | None = None) -> KnownWeights:
    return KnownWeights(
        "tiny",
        FILENAME,
        urls,
        checksum or Checksum("sha256", hashlib.sha256(DATA).hexdigest()),
        "fcn8s",
        "voc",
        "caffe",
        "test weights",
        size_bytes=size,
    )


@pytest.fixture
def home(fcnseg_home) -> Path:
    return fcnseg_home


def cached_files(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())


def test_download_lands_verified_in_the_cache_and_is_reused(home):
    with FileServer({"/w/" + FILENAME: DATA}) as server:
        path = fetch(entry(server.url + "/w/" + FILENAME), progress=False)
        assert path == home / "downloads" / FILENAME and path.read_bytes() == DATA
        assert cached_files(home) == [f"downloads/{FILENAME}"]  # no .part left
        assert fetch(entry(server.url + "/w/" + FILENAME), progress=False) == path
        assert len(server.log) == 1  # the second fetch found the verified file


def test_dropped_connection_resumes_with_a_range_request(home):
    with FileServer({"/" + FILENAME: DATA}) as server:
        server.cut["/" + FILENAME] = 1  # the first response stops half-way
        path = fetch(entry(server.url + "/" + FILENAME), progress=False)
        assert path.read_bytes() == DATA
        assert server.log == [("/" + FILENAME, None), ("/" + FILENAME, f"bytes={len(DATA) // 2}-")]


def test_partial_file_of_an_earlier_run_is_completed_from_its_end(home):
    part = home / "downloads" / (FILENAME + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(DATA[:1000])
    with FileServer({"/" + FILENAME: DATA}) as server:
        assert fetch(entry(server.url + "/" + FILENAME), progress=False).read_bytes() == DATA
        assert server.log == [("/" + FILENAME, "bytes=1000-")]  # only the missing bytes were asked for


def test_server_without_range_support_restarts_instead_of_appending(home):
    part = home / "downloads" / (FILENAME + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 1000)  # appending the full body to this would corrupt the file
    with FileServer({"/" + FILENAME: DATA}, ranges=False) as server:
        assert fetch(entry(server.url + "/" + FILENAME), progress=False).read_bytes() == DATA


def test_partial_file_longer_than_the_served_file_starts_over(home):
    part = home / "downloads" / (FILENAME + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(DATA + b"junk")  # the server answers 416 (range not satisfiable)
    with FileServer({"/" + FILENAME: DATA}) as server:
        assert fetch(entry(server.url + "/" + FILENAME), progress=False).read_bytes() == DATA
        assert server.log == [("/" + FILENAME, f"bytes={len(DATA) + 4}-"), ("/" + FILENAME, None)]


def test_a_wrong_byte_range_is_not_appended(home):
    part = home / "downloads" / (FILENAME + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(DATA[:1000])
    with FileServer({"/" + FILENAME: DATA}, range_shift=10) as server:  # answers bytes=1000- with 990-
        assert fetch(entry(server.url + "/" + FILENAME), progress=False).read_bytes() == DATA
        assert server.log == [("/" + FILENAME, "bytes=1000-"), ("/" + FILENAME, None)]  # started over


def test_checksum_mismatch_is_refused_and_nothing_stays_in_the_cache(home):
    wrong = Checksum("sha1", hashlib.sha1(b"another file").hexdigest())
    with FileServer({"/" + FILENAME: DATA}) as server, pytest.raises(WeightsError) as raised:
        fetch(entry(server.url + "/" + FILENAME, checksum=wrong), progress=False)
    message = str(raised.value)
    assert f"sha1 {hashlib.sha1(DATA).hexdigest()}, the published file has sha1 {wrong.digest}" in message
    assert "deleted, nothing was kept" in message
    assert cached_files(home) == []


def test_size_mismatch_is_refused(home):
    with (
        FileServer({"/" + FILENAME: DATA}) as server,
        pytest.raises(WeightsError, match=f"{len(DATA):,} bytes, the published file has {len(DATA) + 1:,}"),
    ):
        fetch(entry(server.url + "/" + FILENAME, size=len(DATA) + 1), progress=False)
    assert cached_files(home) == []


def test_mirror_variable_serves_a_dead_link(home, monkeypatch):
    dead = closed_port_url("/" + FILENAME)
    with FileServer({"/mirror/" + FILENAME: DATA}) as server:
        monkeypatch.setenv("FCNSEG_WEIGHTS_MIRROR", server.url + "/mirror/")
        assert candidate_urls(entry(dead)) == [f"{server.url}/mirror/{FILENAME}", dead]
        assert fetch(entry(dead), progress=False).read_bytes() == DATA
        assert server.log == [("/mirror/" + FILENAME, None)]


def test_offline_error_names_the_url_and_where_to_place_the_file(home, capsys, monkeypatch):
    dead = closed_port_url("/" + FILENAME)
    with pytest.raises(WeightsError) as raised:
        fetch(entry(dead), progress=False)
    message = str(raised.value)
    target = home / "downloads" / FILENAME
    assert dead in message and f"place it at {target} " in message and "\n" not in message
    assert cached_files(home) == []

    from fcnseg.weights import registry

    monkeypatch.setattr(registry, "KNOWN_WEIGHTS", {"tiny": entry(dead)})
    assert main(["weights", "fetch", "tiny"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("fcnseg weights: error: cannot download tiny: " + dead) and str(target) in err
    assert len(err.splitlines()) == 1

    # A file placed at that path is used (after verification) without any network.
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(DATA)
    assert fetch(entry(dead), progress=False) == target
    target.write_bytes(DATA[:-1] + b"!")
    with pytest.raises(WeightsError, match=f"{target} has sha256 .*not the published {FILENAME}; delete or replace it"):
        fetch(entry(dead), progress=False)


def test_http_error_tries_the_next_url(home):
    with FileServer({"/good/" + FILENAME: DATA}) as server:
        urls = (server.url + "/missing/" + FILENAME, server.url + "/good/" + FILENAME)
        assert fetch(entry(*urls), progress=False).read_bytes() == DATA


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("FCNSEG_HOME", str(tmp_path / "h"))
    assert cache_dir() == tmp_path / "h"
    monkeypatch.delenv("FCNSEG_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "fcnseg"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert cache_dir() == tmp_path / "user" / ".cache" / "fcnseg"
