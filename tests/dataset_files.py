"""Datasets the tests write to disk: folder datasets with hand-counted masks, VOC items and split lists."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from fcnseg.data import voc_palette

CLASSES = ["background", "cat", "dog", "bird"]


PALETTE = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)]


def write_folder_dataset(root, masks: list[np.ndarray], classes: list[str] | None = CLASSES) -> None:
    """root/images/<stem>.png, root/masks/<stem>.png (grey PNG of ids), val.txt and classes.txt."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    stems = []
    for index, mask in enumerate(masks):
        stem = f"img{index}"
        Image.fromarray(rng.integers(0, 256, (*mask.shape, 3), dtype=np.uint8)).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"{stem}.png")
        stems.append(stem)
    (root / "val.txt").write_text("\n".join(stems) + "\n")
    if classes is not None:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")


def hand_masks() -> list[np.ndarray]:
    """Two masks with known counts: background 9+6, cat 3, dog 4+2, bird absent, 255 ignored twice."""
    first = np.zeros((4, 5), dtype=np.int64)
    first[0, :3] = 1  # cat 3
    first[1, :4] = 2  # dog 4
    first[3, 0] = first[3, 1] = 255  # 2 ignored
    # first: background 20 - 3 - 4 - 2 = 11
    second = np.zeros((3, 3), dtype=np.int64)
    second[0, :2] = 2  # dog 2; background 7
    return [first, second]


def scrambled_palette() -> list[int]:
    """A palette where index i is drawn in VOC colour 20 - i: decoding colours as VOC ids would be wrong."""
    voc = voc_palette(256)
    flat = []
    for index in range(256):
        flat += list(voc[20 - index] if index <= 20 else voc[index])
    return flat


def write_voc_item(voc_dir: Path, item: str, mask: np.ndarray, palette: list[int] | None = None) -> None:
    (voc_dir / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (voc_dir / "SegmentationClass").mkdir(parents=True, exist_ok=True)
    image = np.full(mask.shape + (3,), 120, np.uint8)
    Image.fromarray(image).save(voc_dir / "JPEGImages" / f"{item}.jpg")
    png = Image.fromarray(mask.astype(np.uint8), mode="P")
    png.putpalette(palette or [v for colour in voc_palette(256) for v in colour])
    png.save(voc_dir / "SegmentationClass" / f"{item}.png")


def write_list(path: Path, ids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{item}\n" for item in ids))


# NYUDv2: depth rendered from a known scene (a camera 120 cm above a floor, facing a wall 4 m ahead).
INTRINSICS = (150.0, 150.0, 79.5, 59.5)  # fx, fy, cx, cy of a 160x120 test camera


def rotation(pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Camera (x right, y down, z forward) to world (x right, y up, z forward) directions."""
    p, r = math.radians(pitch_deg), math.radians(roll_deg)
    pitch = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])  # positive: down
    roll = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return np.diag([1.0, -1.0, 1.0]) @ pitch @ roll


def render(camera_height: float, pitch: float, roll: float, wall: float | None = 400.0, floor: bool = True):
    """Depth (m) of a floor at -camera_height and a wall at z = ``wall`` (cm); which pixels see the wall; heights
    (cm)."""
    fx, fy, cx, cy = INTRINSICS
    rows, cols = np.indices((120, 160), dtype=np.float64)
    rays = np.stack([(cols - cx) / fx, (rows - cy) / fy, np.ones_like(cols)], -1)  # z = 1: t is the depth
    world = rays @ rotation(pitch, roll).T
    down = world[..., 1] < 0
    t_floor = np.where(down & floor, -camera_height / np.where(down, world[..., 1], -1.0), np.inf)
    t_wall = np.where(world[..., 2] > 0, (wall or np.inf) / world[..., 2], np.inf)
    t = np.minimum(t_floor, t_wall)
    seen = np.isfinite(t)
    return np.where(seen, t, 0.0) / 100.0, t_wall < t_floor, camera_height + np.where(seen, t, 0.0) * world[..., 1]


def write_nyud(tmp_path: Path) -> Path:
    """Two NYUDv2 items (colour, depth of the rendered scene, 40-class labels) and train.txt under ``tmp_path``."""
    depth, _, _ = render(120.0, 15.0, 0.0)
    for folder in ("data/images", "data/depth", "segmentation"):
        (tmp_path / folder).mkdir(parents=True)
    label = np.zeros((120, 160), np.uint8)
    label[:60], label[60:, :80] = 1, 40  # file classes 1 (wall) and 40 (otherprop); 0 void
    for item in ("5001", "5002"):
        Image.fromarray(np.full((120, 160, 3), 70, np.uint8)).save(tmp_path / "data" / "images" / f"img_{item}.png")
        Image.fromarray(np.rint(depth * 1000).astype(np.uint16)).save(tmp_path / "data" / "depth" / f"img_{item}.png")
        scipy.io.savemat(tmp_path / "segmentation" / f"img_{item}.mat", {"segmentation": label})
    (tmp_path / "train.txt").write_text("5001\n5002\n")
    return tmp_path


# SIFT Flow
FOLDER = "spatial_envelope_256x256_static_8outdoorcategories"


# Semantic labels as stored: 0 void, 1..33; geometric: -1 (and 0) void, 1..3.
SEMANTIC = np.array([[0, 1, 2], [28, 33, 0]])


GEOMETRIC = np.array([[-1, 1, 2], [3, 0, 1]])


def write_siftflow_item(root: Path, item: str, semantic=SEMANTIC, geometric=GEOMETRIC, size=(2, 3)) -> None:
    for folder in ("Images", "SemanticLabels", "GeoLabels"):
        (root / folder / FOLDER).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), 90, np.uint8)).save(root / "Images" / FOLDER / f"{item}.jpg", format="JPEG")
    scipy.io.savemat(root / "SemanticLabels" / FOLDER / f"{item}.mat", {"S": semantic.astype(np.float64)})
    scipy.io.savemat(root / "GeoLabels" / FOLDER / f"{item}.mat", {"S": geometric.astype(np.int16)})


def write_siftflow(tmp_path: Path) -> Path:
    """Two SIFT Flow items in the official layout and trainval.txt under ``tmp_path``."""
    write_siftflow_item(tmp_path, "coast_a")
    write_siftflow_item(tmp_path, "street_b")
    (tmp_path / "trainval.txt").write_text("coast_a\nstreet_b\n")
    return tmp_path
