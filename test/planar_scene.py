"""A textured plane seen from known poses, rendered exactly by ray-plane intersection: ground truth geometry for
tests that must not depend on the shared data or the synthetic renderer."""
from __future__ import annotations

import cv2
import numpy as np
from skimage import data as skdata

from relocal_ros.data.frames import RGBDFrame
from relocal_ros.geometry.camera import Intrinsics
from relocal_ros.geometry.poses import make_T
from scipy.spatial.transform import Rotation

INTR = Intrinsics(800.0, 800.0, 319.5, 239.5, 640, 480)
PLANE_Z = 2.0          # the plane z = 2 m in the world frame, texture spanning [-2, 2] x [-1.5, 1.5] m
EXTENT = (4.0, 3.0)


def _texture() -> np.ndarray:
    tiles = [skdata.astronaut(), skdata.chelsea(), skdata.coffee(), skdata.rocket()]
    tiles = [cv2.resize(t, (512, 384)) for t in tiles]
    return np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])])  # 1024 x 768


TEXTURE = _texture()


def render(T_world_cam: np.ndarray, intr: Intrinsics = INTR, texture: np.ndarray = TEXTURE):
    u, v = np.meshgrid(np.arange(intr.width, dtype=np.float64), np.arange(intr.height, dtype=np.float64))
    rays = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones_like(u)], -1)
    R, c = T_world_cam[:3, :3], T_world_cam[:3, 3]
    d = rays @ R.T
    s = (PLANE_Z - c[2]) / d[..., 2]           # ray parameter = camera z of the hit point (rays have z = 1)
    X = c + s[..., None] * d
    th, tw = texture.shape[:2]
    mx = ((X[..., 0] / EXTENT[0] + 0.5) * tw - 0.5).astype(np.float32)
    my = ((X[..., 1] / EXTENT[1] + 0.5) * th - 0.5).astype(np.float32)
    rgb = cv2.remap(texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(90, 90, 90))
    depth = np.where((s > 0) & (np.abs(X[..., 0]) < EXTENT[0] / 2) & (np.abs(X[..., 1]) < EXTENT[1] / 2), s, 0)
    return rgb, depth.astype(np.float32)


def pose(x, y, yaw_deg=0.0, pitch_deg=0.0, z=0.0) -> np.ndarray:
    R = Rotation.from_euler("yx", [yaw_deg, pitch_deg], degrees=True).as_matrix()
    return make_T(R, [x, y, z])


def frame(T: np.ndarray, stamp: str) -> RGBDFrame:
    rgb, depth = render(T)
    return RGBDFrame(stamp, rgb, depth, INTR, T.copy(), f"plane-{stamp}")


def map_frames() -> list[RGBDFrame]:
    poses = [pose(x, y, yaw) for x in (-0.3, 0.0, 0.3) for y in (-0.2, 0.2) for yaw in (-8, 8)]
    return [frame(T, f"{i}.0") for i, T in enumerate(poses)]


def query_frames() -> list[RGBDFrame]:
    poses = [pose(-0.15, 0.05, 3, 2, 0.1), pose(0.12, -0.1, -5, -3, -0.1), pose(0.25, 0.1, 6, 0, 0.15)]
    return [frame(T, f"{100 + i}.0") for i, T in enumerate(poses)]
