"""Shared test fixtures: the real data beside the project, and deterministic torch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]

#: ../shared/data beside the checkout; FCNSEG_SHARED_DATA points elsewhere (e.g. from a git worktree).
SHARED_DATA = Path(os.environ.get("FCNSEG_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_torch_thread():
    """Run a test with one torch thread: two OpenMP threads on a busy 2-core machine spin against
    each other (a tiny forward pass 20-50x slower), which made the export/serve tests crawl."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def camvid_root() -> Path:
    """../shared/data/camvid, or a skip that says why."""
    root = SHARED_DATA / "camvid"
    if not root.is_dir():
        pytest.skip(f"real data not present: {root} (the shared data folder sits beside the project)")
    return root


@pytest.fixture
def voc_mini_root() -> Path:
    """../shared/data/voc_mini/VOCdevkit/VOC2012, or a skip that says why."""
    root = SHARED_DATA / "voc_mini" / "VOCdevkit" / "VOC2012"
    if not root.is_dir():
        pytest.skip(f"real data not present: {root} (the shared data folder sits beside the project)")
    return root


@pytest.fixture
def fcnseg_home(tmp_path, monkeypatch) -> Path:
    """An empty weights cache ($FCNSEG_HOME) for the test, and no mirror from the environment."""
    monkeypatch.setenv("FCNSEG_HOME", str(tmp_path / "fcnseg_home"))
    monkeypatch.delenv("FCNSEG_WEIGHTS_MIRROR", raising=False)
    return tmp_path / "fcnseg_home"


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    """tmp_path/tiny.safetensors: a tiny FCN-8s whose score layers are random N(0, 1) (the paper's zero init
    would predict class 0 everywhere; these masks differ by image), classes ``tiny_models.TINY_CLASSES``."""
    from tiny_models import TINY_CLASSES, TINY_PALETTE, tiny_model

    from fcnseg.checkpoint import save_checkpoint

    model = tiny_model("fcn8s", len(TINY_CLASSES), score_std=1.0)
    return save_checkpoint(tmp_path / "tiny.safetensors", model, classes=TINY_CLASSES, palette=TINY_PALETTE)


@pytest.fixture
def nyud(tmp_path) -> Path:
    """A two-item NYUDv2 folder (see dataset_files.write_nyud)."""
    from dataset_files import write_nyud

    return write_nyud(tmp_path)


@pytest.fixture
def siftflow(tmp_path) -> Path:
    """A two-item SIFT Flow folder (see dataset_files.write_siftflow)."""
    from dataset_files import write_siftflow

    return write_siftflow(tmp_path)
