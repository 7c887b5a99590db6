"""NYUDv2: the 40-class labels, colour / HHA / colour+HHA items, and HHA computed from depth (and cached).

The HHA checks use depth maps rendered here from a known scene — a camera 120 cm above a floor,
pitched down and rolled, facing a wall 4 m ahead — so every expected value is geometry written
out in the test: the floor's normal is parallel to gravity (0 deg between its upward normal and
up: channel 38), the wall's perpendicular (90 deg: 128), heights are the scene's, disparity is
31000 / depth in cm.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io
import torch
from command_runs import run_data_command
from dataset_files import INTRINSICS, render
from PIL import Image
from scipy.ndimage import binary_erosion

from fcnseg.data import NYUD_CLASSES, DatasetError, hha_from_depth, open_dataset
from fcnseg.data.hha import nyud_intrinsics


def interior(region: np.ndarray) -> np.ndarray:
    """Pixels well inside a region and away from the image border (windows there mix surfaces)."""
    inner = np.zeros_like(region)
    inner[12:-12, 12:-12] = True
    return binary_erosion(region, iterations=4) & inner


@pytest.mark.parametrize("pitch, roll", [(15.0, 0.0), (20.0, 6.0)])
def test_hha_of_a_floor_and_a_wall_seen_by_a_tilted_camera(pitch, roll):
    depth, on_wall, height = render(120.0, pitch, roll)
    hha = hha_from_depth(depth, INTRINSICS).astype(int)
    floor, wall = interior(~on_wall & (depth > 0)), interior(on_wall)
    assert floor.sum() > 1000 and wall.sum() > 1000
    disparity = np.clip(np.rint(31000 / np.maximum(depth * 100, 100)), 0, 255)
    assert np.array_equal(hha[..., 0], disparity.astype(int))
    assert np.abs(hha[..., 2][floor] - 38).max() <= 1 and np.abs(hha[..., 2][wall] - 128).max() <= 1
    assert hha[..., 1][floor].max() <= 2  # the floor is the ground: height ~0
    assert np.abs(hha[..., 1][wall] - np.clip(np.rint(height[wall]), 0, 255)).max() <= 2


def test_without_a_floor_low_enough_the_camera_is_taken_to_be_130_cm_high():
    # A level camera facing the wall only: the lowest point seen is ~60 cm below it, too high to be the floor.
    depth, _, height = render(120.0, 0.0, 0.0, wall=150.0, floor=False)
    hha = hha_from_depth(depth, INTRINSICS).astype(int)
    inside = interior(depth > 0)
    below_camera = height - 120.0
    assert np.abs(hha[..., 1][inside] - np.rint(below_camera[inside] + 130)).max() <= 1
    assert (hha[depth == 0] == 0).all()  # pixels without depth get no HHA


def test_nyud_intrinsics_move_the_principal_point_for_the_standard_crop():
    full = nyud_intrinsics(480, 640)
    assert full[:2] == pytest.approx((518.858, 519.470), abs=1e-3)
    assert nyud_intrinsics(425, 560)[2:] == pytest.approx((full[2] - 40, full[3] - 44))


def test_labels_are_the_40_classes_shifted_down_with_void_ignored(nyud):
    dataset = open_dataset("nyud", nyud, "train")
    image, mask = dataset[0]
    assert dataset.classes == list(NYUD_CLASSES) and len(NYUD_CLASSES) == 40
    assert image.shape == (3, 120, 160) and (image == 70).all()
    assert (mask[:60] == 0).all() and (mask[60:, :80] == 39).all() and (mask[60:, 80:] == 255).all()


def test_hha_is_computed_from_depth_once_and_then_read_from_its_cache(nyud):
    dataset = open_dataset("nyud", nyud, "train", modality="hha", intrinsics=list(INTRINSICS))
    cached = nyud / "data" / "hha" / "img_5001.png"
    assert not cached.exists()
    computed, _ = dataset[0]
    assert cached.is_file() and computed.shape == (3, 120, 160)
    depth = np.asarray(Image.open(nyud / "data" / "depth" / "img_5001.png"), np.float64) / 1000
    assert np.array_equal(computed.permute(1, 2, 0).numpy(), hha_from_depth(depth, INTRINSICS))
    (nyud / "data" / "depth" / "img_5001.png").unlink()  # from now on only the cache can answer
    assert torch.equal(dataset[0][0], computed)
    both = open_dataset("nyud", nyud, "train", modality="color_hha")[0][0]
    assert both.shape == (6, 120, 160) and (both[:3] == 70).all() and torch.equal(both[3:], computed)


def test_missing_and_malformed_files_are_named(nyud):
    (nyud / "data" / "depth" / "img_5002.png").unlink()
    with pytest.raises(
        DatasetError,
        match=r"HHA image .*hha/img_5002\.png does not exist, nor the depth image "
        r".*depth/img_5002\.png",
    ):
        open_dataset("nyud", nyud, "train", modality="hha")[1]
    Image.fromarray(np.zeros((120, 160, 3), np.uint8)).save(nyud / "data" / "depth" / "img_5002.png")
    with pytest.raises(DatasetError, match=r"depth image .*img_5002\.png is a RGB image; expected .*16-bit"):
        open_dataset("nyud", nyud, "train", modality="hha")[1]
    scipy.io.savemat(nyud / "segmentation" / "img_5002.mat", {"segmentation": np.full((120, 160), 41, np.uint8)})
    with pytest.raises(DatasetError, match=r"img_5002\.mat\).*label 40 .*expected 0\.\.39"):
        open_dataset("nyud", nyud, "train")[1]
    with pytest.raises(DatasetError, match="modality='depth'"):
        open_dataset("nyud", nyud, "train", modality="depth")
    with pytest.raises(DatasetError, match=r"val\.txt does not exist"):
        open_dataset("nyud", nyud, "val")


def test_fcnseg_data_reads_the_colour_hha_items(nyud, capsys):
    assert (
        run_data_command(
            ["--data", "nyud", "--root", str(nyud), "--split", "train", "--json", "--data-option", "modality=color_hha"]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["items"] == 2 and report["classes"][0]["pixels"] == 2 * 60 * 160


def test_colour_hha_items_resize_three_channels_at_a_time(nyud):
    full = open_dataset("nyud", nyud, "train", modality="color_hha", intrinsics=list(INTRINSICS))[0][0]
    small = open_dataset("nyud", nyud, "train", modality="color_hha", resize=[60, 80])[0][0]
    hha = Image.fromarray(full[3:].permute(1, 2, 0).numpy()).resize((80, 60), Image.Resampling.LANCZOS)
    assert small.shape == (6, 60, 80) and (small[:3] == 70).all()
    assert np.array_equal(small[3:].permute(1, 2, 0).numpy(), np.asarray(hha))
