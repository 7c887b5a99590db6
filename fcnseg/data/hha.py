"""HHA: a depth map encoded as three 8-bit channels (Gupta, Girshick, Arbelaez, Malik, ECCV 2014).

Per pixel: **h**orizontal disparity, **h**eight above the ground, and the **a**ngle between the
local surface normal and the direction of gravity — the input of the paper's NYUDv2 HHA stream.
Computed here from a depth map (metres) and the camera intrinsics, following the published
description; the scales of the channels are those of Gupta et al.'s released code
(``saveHHA``/``getHHA`` of rcnn-depth), which produced the HHA images the FCN paper trained on.

Camera coordinates in centimetres: x right, y down, z forward; pixel (u, v) 0-based.

1. Points: X = (u - cx) Z / fx, Y = (v - cy) Z / fy.
2. Normals: at each pixel, the plane fitted to the valid points of the (2r+1) x (2r+1) window
   around it (the normal is the direction of least spread), turned to face the camera;
   r = 3 for the angle channel, r = 10 (smoother) for the gravity estimate, which uses every
   4th pixel of every 4th row (the 21x21 windows overlap heavily; 16x less work).
3. Gravity (Gupta, Arbelaez, Malik, CVPR 2013): start from the image's up, (0, -1, 0); split
   the normals into those within t of it (horizontal surfaces) and those within t of
   perpendicular to it (walls); the new up is the unit g minimising
   sum_walls (g.n)^2 - sum_horizontal (g.n)^2 (the eigenvector of the smallest eigenvalue);
   5 rounds with t = 45 deg, then 5 with t = 15 deg.
4. Height: h = p.g; the ground is the lowest valid point, unless that is less than 90 cm below
   the camera, when the ground is taken to be 130 cm below it (the released code's rule).
5. Channels: disparity 31000 / max(Z, 100 cm); height in cm; angle in degrees + 38 (a floor,
   0 deg, is 38; a wall, 90 deg, is 128; a ceiling, 180 deg, is 218); rounded, clipped to 0..255.

Approximations, honestly: the plane fit is by principal components over a square window, not
the released code's 1/Z-weighted fit, and the window does not stop at region boundaries;
Gupta et al. encode an inpainted depth map while fitting normals on the raw one — here one map
is given, and a pixel without depth (0) gets no normal and HHA (0, 0, 0); gravity is estimated
per image from its own surfaces (no IMU), so an image with neither horizontal nor vertical
surfaces keeps the camera's up.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import uniform_filter

#: NYUDv2 colour camera (the dataset toolbox's camera_params.m) at 640x480: fx, fy, cx, cy; cx, cy
#: converted from MATLAB's 1-based pixel coordinates to 0-based ones.
NYU_INTRINSICS = (518.85790117450188, 519.46961112127485, 324.58244941119034, 252.73616633400465)
#: Left and top edge of the standard NYUDv2 crop (MATLAB rows 45:471, columns 41:601).
NYU_CROP_OFFSET = (40, 44)
NORMAL_RADIUS, GRAVITY_RADIUS, GRAVITY_STEP = 3, 10, 4
GRAVITY_ROUNDS = ((45.0, 5), (15.0, 5))
#: Released-code constants: disparity numerator (cm), nearest depth (cm), assumed camera height (cm) and
#: the drop below the camera under which the lowest point is not taken for the ground.
DISPARITY_CM, NEAREST_CM, CAMERA_HEIGHT_CM, LOWEST_FLOOR_CM = 31000.0, 100.0, 130.0, 90.0


def nyud_intrinsics(height: int, width: int) -> tuple[float, float, float, float]:
    """NYUDv2 colour intrinsics for a ``height`` x ``width`` frame: the full 480x640 one, or else the standard crop."""
    fx, fy, cx, cy = NYU_INTRINSICS
    if (height, width) == (480, 640):
        return fx, fy, cx, cy
    return fx, fy, cx - NYU_CROP_OFFSET[0], cy - NYU_CROP_OFFSET[1]


def point_cloud(depth_cm: np.ndarray, intrinsics: tuple[float, float, float, float]) -> np.ndarray:
    """Camera coordinates (H, W, 3) in cm of every pixel of a depth map in cm."""
    fx, fy, cx, cy = intrinsics
    rows, cols = np.indices(depth_cm.shape, dtype=np.float64)
    return np.stack([(cols - cx) * depth_cm / fx, (rows - cy) * depth_cm / fy, depth_cm], axis=-1)


def surface_normals(points: np.ndarray, valid: np.ndarray, radius: int, step: int = 1) -> np.ndarray:
    """Unit normals (H, W, 3) facing the camera, from a plane fit over each window; NaN where there is none.

    ``step`` > 1 gives the normals of every ``step``-th pixel of every ``step``-th row only.
    """
    size = 2 * radius + 1
    weight = valid.astype(np.float64)
    share = uniform_filter(weight, size, mode="constant")  # valid fraction of the window

    def mean(values: np.ndarray) -> np.ndarray:
        return uniform_filter(values * weight, size, mode="constant") / np.maximum(share, 1e-12)

    centre = [mean(points[..., i]) for i in range(3)]
    covariance = np.empty(points.shape[:2] + (3, 3))
    for i in range(3):
        for j in range(i, 3):
            covariance[..., i, j] = covariance[..., j, i] = (
                mean(points[..., i] * points[..., j]) - centre[i] * centre[j]
            )
    enough = (valid & (share * size * size >= 3 - 1e-6))[::step, ::step]
    covariance, points = covariance[::step, ::step], points[::step, ::step]
    covariance[~enough] = np.eye(3)  # placeholder, masked below
    normals = np.linalg.eigh(covariance)[1][..., 0]  # eigenvalues ascend: least spread first
    normals *= np.where(np.sum(normals * points, axis=-1, keepdims=True) > 0, -1.0, 1.0)
    normals[~enough] = np.nan
    return normals


def gravity_direction(normals: np.ndarray) -> np.ndarray:
    """The up direction (unit 3-vector) that horizontal surfaces' normals follow and walls' are perpendicular to."""
    found = normals[np.all(np.isfinite(normals), axis=-1)]
    up = np.array([0.0, -1.0, 0.0])
    for degrees, rounds in GRAVITY_ROUNDS:
        threshold = math.radians(degrees)
        for _ in range(rounds):
            cosine = np.abs(found @ up)
            horizontal, walls = found[cosine > math.cos(threshold)], found[cosine < math.sin(threshold)]
            if not len(horizontal) and not len(walls):
                return up
            candidate = np.linalg.eigh(walls.T @ walls - horizontal.T @ horizontal)[1][:, 0]
            up = candidate if candidate @ up >= 0 else -candidate
    return up


def hha_from_depth(depth_m: np.ndarray, intrinsics: tuple[float, float, float, float]) -> np.ndarray:
    """The HHA image, uint8 (H, W, 3) = (disparity, height, angle), of a depth map in metres (0 = no depth)."""
    depth_cm = np.asarray(depth_m, dtype=np.float64) * 100.0
    valid = np.isfinite(depth_cm) & (depth_cm > 0)
    depth_cm = np.where(valid, depth_cm, 0.0)
    points = point_cloud(depth_cm, intrinsics)
    up = gravity_direction(surface_normals(points, valid, GRAVITY_RADIUS, GRAVITY_STEP))
    normals = surface_normals(points, valid, NORMAL_RADIUS)
    height = points @ up
    ground = height[valid].min() if valid.any() else 0.0
    if ground > -LOWEST_FLOOR_CM:
        ground = -CAMERA_HEIGHT_CM
    angle = np.degrees(np.arccos(np.clip(normals @ up, -1.0, 1.0)))
    channels = np.stack([DISPARITY_CM / np.maximum(depth_cm, NEAREST_CM), height - ground, angle + 128.0 - 90.0], -1)
    channels = np.where(valid[..., None] & np.isfinite(channels), channels, 0.0)
    return np.clip(np.rint(channels), 0, 255).astype(np.uint8)
