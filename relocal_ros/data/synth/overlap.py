"""View overlap measures used to pick training pairs and to judge retrieval: the share of one view's scene
coordinates that the other view sees within 0.2 m (ExReNet), and RelocNet's frustum overlap (Algorithm 1)."""
from __future__ import annotations

import numpy as np

from relocal_ros.geometry.camera import Intrinsics, backproject, project
from relocal_ros.geometry.poses import invert


def coordinate_overlap(depth_a, T_a, depth_b, T_b, intr: Intrinsics, radius: float = 0.2, step: int = 4) -> float:
    """Share of A's valid pixels (on a grid of `step`) whose 3D point lies within `radius` of the 3D point that B
    sees at the same place (projection into B, then B's own depth there): occlusion-aware, 1 for identical views."""
    v, u = np.mgrid[0:depth_a.shape[0]:step, 0:depth_a.shape[1]:step]
    pa = backproject(depth_a, intr, uv=np.column_stack([u.ravel(), v.ravel()]).astype(np.float32))
    pa = pa[np.isfinite(pa).all(1)]
    if len(pa) == 0:
        return 0.0
    world = pa @ T_a[:3, :3].T + T_a[:3, 3]
    T_b_w = invert(T_b)
    pb = world @ T_b_w[:3, :3].T + T_b_w[:3, 3]
    uv, front = project(pb, intr)
    u, v = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
    inside = front & (u >= 0) & (v >= 0) & (u < intr.width) & (v < intr.height)
    if not inside.any():
        return 0.0
    zb = depth_b[v[inside], u[inside]]
    ok = zb > 0
    seen = np.zeros(len(pa), bool)
    rays = pb[inside] / pb[inside][:, 2:3]
    dist = np.linalg.norm(rays * zb[:, None] - pb[inside], axis=1)
    seen[np.flatnonzero(inside)[ok & (dist < radius)]] = True
    return float(seen.mean())


def frustum_overlap(T_a, T_b, intr: Intrinsics, near: float = 0.1, far: float = 4.0, samples: int = 4000,
                    seed: int = 0) -> float:
    """RelocNet Alg. 1: points sampled uniformly in camera A's frustum (pixels x depth in [near, far]); the share
    inside B's frustum, averaged with the same from B to A. Geometry only (no occlusion)."""
    rng = np.random.default_rng(seed)

    def one_way(T1, T2):
        u = rng.uniform(0, intr.width, samples)
        v = rng.uniform(0, intr.height, samples)
        z = rng.uniform(near, far, samples)
        pc = np.column_stack([(u - intr.cx) / intr.fx * z, (v - intr.cy) / intr.fy * z, z])
        T = invert(T2) @ T1
        p2 = pc @ T[:3, :3].T + T[:3, 3]
        uv, front = project(p2, intr)
        ok = front & (p2[:, 2] >= near) & (p2[:, 2] <= far) & (uv[:, 0] >= 0) & (uv[:, 0] < intr.width) \
            & (uv[:, 1] >= 0) & (uv[:, 1] < intr.height)
        return ok.mean()

    return float(0.5 * (one_way(T_a, T_b) + one_way(T_b, T_a)))
