"""The one sweep of what interrupted atomic writes left: files.py owns the naming and removes only its own files."""

from __future__ import annotations

import pytest

from fcnseg.files import atomic_path, sweep_temporary_files, temporary_file_target


@pytest.fixture
def interrupted(tmp_path):
    """Start atomic writes and never finish them (a kill): their temporary files stay, named by atomic_path."""
    writes = []

    def start(path):
        write = atomic_path(path)
        temporary = write.__enter__()
        temporary.write_text("half")
        writes.append(write)  # kept alive: a collected generator would clean up after itself
        return temporary

    yield start


def test_the_target_of_a_temporary_file_is_read_back_from_the_name_atomic_path_gives(tmp_path, interrupted):
    temporary = interrupted(tmp_path / "a.mask.png")
    assert temporary.name != "a.mask.png" and temporary_file_target(temporary.name) == "a.mask.png"
    for name in (
        "a.png",
        ".a.png",
        ".a.tmp",
        "a.png.x1.tmp",
        ".a.png.tmp.bak",
        "..x1.tmp",
        ".a.png..tmp",
        ".a.png.x-1.tmp",
        ".tmp",
    ):
        assert temporary_file_target(name) is None, name


def test_the_sweep_removes_only_temporary_files_of_atomic_writes(tmp_path, interrupted):
    leftovers = [interrupted(tmp_path / "last.safetensors"), interrupted(tmp_path / "sub" / "frame_000001.png")]
    kept = [tmp_path / name for name in ("a.png", ".hidden", ".a.tmp", "notes.tmp", ".a.png.bak", "sub/b.png")]
    for path in kept:
        path.write_text("mine")
    (tmp_path / ".folder.x1.tmp").mkdir()  # a folder named like one: not a file an atomic write left
    assert sorted(sweep_temporary_files(tmp_path)) == sorted(leftovers)
    assert not any(path.exists() for path in leftovers)
    assert all(path.read_text() == "mine" for path in kept) and (tmp_path / ".folder.x1.tmp").is_dir()


def test_the_sweep_can_stay_in_the_folder_and_keep_to_some_targets(tmp_path, interrupted):
    mine, other, below = (
        interrupted(tmp_path / "a.png"),
        interrupted(tmp_path / "b.png"),
        interrupted(tmp_path / "sub" / "a.png"),
    )
    assert sweep_temporary_files(tmp_path, {"a.png"}, below=False) == [mine]
    assert other.exists() and below.exists()
    assert sweep_temporary_files(tmp_path / "missing") == []
