"""View overlap measures, used to pick training pairs and to judge retrieval:
- ExReNet's overlap: the share of one view's scene coordinates that lie within p_max = 0.2 m of some scene
  coordinate of the other view (nearest neighbour in 3D, so surfaces hidden from the other view do not count);
- RelocNet's frustum overlap (Algorithm 1): a uniform voxel grid (step tau) inside the first camera's frustum cut at
  depth D, the share of voxels that lie inside the second frustum; the distance is xi = 1 - share."""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from relocal_ros.geometry.camera import Intrinsics, backproject, project
from relocal_ros.geometry.poses import invert


def scene_coordinates(depth: np.ndarray, T_world_cam: np.ndarray, intr: Intrinsics, step: int = 1) -> np.ndarray:
    """(N, 3) world points of the valid pixels on a grid of `step` pixels."""
    if depth.shape != (intr.height, intr.width):
        raise ValueError(f"depth {depth.shape} does not match intrinsics {intr.width}x{intr.height}")
    v, u = np.mgrid[0:intr.height:step, 0:intr.width:step]
    pts = backproject(depth, intr, uv=np.column_stack([u.ravel(), v.ravel()]).astype(np.float32))
    pts = pts[np.isfinite(pts).all(1)].astype(np.float64)
    return pts @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]


def _default_step(intr: Intrinsics) -> int:
    # ~64 samples across: at 5 m and a 63 deg field of view, neighbouring samples are < 10 cm apart, under p_max
    return max(1, round(intr.width / 64))


def coordinate_overlap(depth_a, T_a, depth_b, T_b, intr: Intrinsics, radius: float = 0.2,
                       step: int | None = None) -> float:
    """Share of A's scene coordinates with a scene coordinate of B within `radius` metres (0 if A sees nothing).
    Identical views give exactly 1."""
    step = _default_step(intr) if step is None else step
    pa = scene_coordinates(depth_a, T_a, intr, step)
    pb = scene_coordinates(depth_b, T_b, intr, step)
    if len(pa) == 0 or len(pb) == 0:
        return 0.0
    dist, _ = cKDTree(pb).query(pa, distance_upper_bound=radius)
    return float(np.mean(dist <= radius))


def mutual_overlap(depth_a, T_a, depth_b, T_b, intr: Intrinsics, radius: float = 0.2, step: int | None = None) -> float:
    """The smaller of the two directed overlaps: a pair counts as overlapping only if each view sees the other's."""
    return min(coordinate_overlap(depth_a, T_a, depth_b, T_b, intr, radius, step),
               coordinate_overlap(depth_b, T_b, depth_a, T_a, intr, radius, step))


def _frustum_voxels(intr: Intrinsics, max_depth: float, step: float) -> np.ndarray:
    """Centres of a uniform grid of cubes of side `step` that lie inside the camera's frustum, 0 < z <= max_depth."""
    corners = np.array([[-0.5, -0.5], [intr.width - 0.5, -0.5], [-0.5, intr.height - 0.5],
                        [intr.width - 0.5, intr.height - 0.5]])
    rays = np.column_stack([(corners[:, 0] - intr.cx) / intr.fx, (corners[:, 1] - intr.cy) / intr.fy])
    lo, hi = np.minimum(rays.min(0), 0) * max_depth, np.maximum(rays.max(0), 0) * max_depth
    xs = np.arange(lo[0] + step / 2, hi[0], step)
    ys = np.arange(lo[1] + step / 2, hi[1], step)
    zs = np.arange(step / 2, max_depth, step)
    grid = np.stack(np.meshgrid(xs, ys, zs, indexing="ij"), -1).reshape(-1, 3)
    return grid[_in_frustum(grid, intr, max_depth)]


def _in_frustum(points_cam: np.ndarray, intr: Intrinsics, max_depth: float) -> np.ndarray:
    uv, front = project(points_cam, intr)
    return (front & (points_cam[:, 2] <= max_depth) & (uv[:, 0] >= -0.5) & (uv[:, 0] < intr.width - 0.5)
            & (uv[:, 1] >= -0.5) & (uv[:, 1] < intr.height - 0.5))


def frustum_overlap_distance(T_a, T_b, intr: Intrinsics, max_depth: float = 4.0, step: float = 0.1) -> float:
    """RelocNet Algorithm 1: xi = 1 - |voxels of A's frustum inside B's frustum| / |voxels of A's frustum|.
    Geometry only (no occlusion); D = 4 m is the paper's choice for indoor scenes. Not symmetric in A and B."""
    if max_depth <= 0 or step <= 0:
        raise ValueError(f"max_depth ({max_depth}) and step ({step}) must be positive")
    voxels = _frustum_voxels(intr, max_depth, step)
    T_b_a = invert(T_b) @ T_a
    in_b = _in_frustum(voxels @ T_b_a[:3, :3].T + T_b_a[:3, 3], intr, max_depth)
    return float(1.0 - in_b.mean())


def frustum_overlap(T_a, T_b, intr: Intrinsics, max_depth: float = 4.0, step: float = 0.1) -> float:
    """The overlap ratio 1 - xi that RelocNet's figures print."""
    return 1.0 - frustum_overlap_distance(T_a, T_b, intr, max_depth, step)
