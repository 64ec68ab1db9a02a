"""Point-to-plane ICP of the query's depth against the retrieved keyframes' depth (RGB-D queries).

A pose from matched keypoints carries their noise and, on repetitive texture, the pull of near-miss matches:
10–25 cm off with every check passed. The query's own surfaces pin it down: each lifted query depth sample is
paired with the surface a keyframe measured along the same ray (projective association, as KinectFusion's ICP) and
the pose moves to put the samples on those surfaces' tangent planes. Gauss-Newton on the 6-DoF left perturbation,
Huber-weighted, with the pairing distance shrinking over the iterations.

Written here: Open3D's ICP is a 400 MB dependency and pairs points by nearest neighbour in 3D (a KD-tree over a
cloud we would first have to build), where the keyframes' depth images already give the projective pairing."""
from __future__ import annotations

from collections import OrderedDict

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from relocal_ros.geometry.camera import undistort_points
from relocal_ros.solver.verification import DepthView


class SurfaceCache:
    """Per keyframe, its depth thumbnail as map-frame points and normals (computed when first needed, the most
    recently used kept)."""

    def __init__(self, size: int = 64):
        self.size = size
        self._items: OrderedDict = OrderedDict()

    def get(self, key, view: DepthView):
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        item = surface_maps(view)
        self._items[key] = item
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return item


def surface_maps(view: DepthView, max_relative_jump: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(h x w x 3 points, h x w x 3 unit normals) in the map frame; NaN where the depth (or a neighbour) is missing
    or jumps."""
    d = view.depth.astype(np.float64)
    h, w = d.shape
    ys, xs = np.mgrid[0:h, 0:w]
    rays = undistort_points(np.stack([xs.ravel(), ys.ravel()], 1), view.intrinsics).astype(np.float64)
    K = view.intrinsics
    x = (rays[:, 0] - K.cx) / K.fx
    y = (rays[:, 1] - K.cy) / K.fy
    z = d.ravel()
    pts = np.stack([x * z, y * z, z], 1).reshape(h, w, 3)
    pts[~(np.isfinite(d) & (d > 0.1))] = np.nan
    dx = np.full_like(pts, np.nan)
    dy = np.full_like(pts, np.nan)
    dx[:, 1:-1] = pts[:, 2:] - pts[:, :-2]
    dy[1:-1] = pts[2:] - pts[:-2]
    n = np.cross(dx, dy)
    n /= np.linalg.norm(n, axis=2, keepdims=True)
    jump = np.maximum(np.abs(dx[..., 2]), np.abs(dy[..., 2])) > 2 * max_relative_jump * d
    n[jump] = np.nan
    R, t = view.T_map_cam[:3, :3], view.T_map_cam[:3, 3]
    return pts @ R.T + t, n @ R.T


def refine_pose_icp(T_map_cam: np.ndarray, query_points: np.ndarray, views: list[DepthView], surfaces: list,
                    iterations: int = 8, max_pair_m=(0.20, 0.10, 0.05), huber_m: float = 0.02,
                    min_pairs: int = 50) -> np.ndarray | None:
    """The pose after point-to-plane ICP, or None when too few pairs hold (then keep the pose you had)."""
    T = T_map_cam.copy()
    for it in range(iterations):
        max_pair = max_pair_m[min(it, len(max_pair_m) - 1)]
        Xw = query_points @ T[:3, :3].T + T[:3, 3]
        src, dst, nrm = [], [], []
        for v, (P, N) in zip(views, surfaces):
            h, w = v.depth.shape
            pc = (Xw - v.T_map_cam[:3, 3]) @ v.T_map_cam[:3, :3]
            front = pc[:, 2] > 0.1
            if not front.any():
                continue
            uv, _ = cv2.projectPoints(pc[front].reshape(-1, 1, 3), np.zeros(3), np.zeros(3), v.intrinsics.K,
                                      np.array(v.intrinsics.dist, float))
            uv = uv.reshape(-1, 2)
            iu, iv = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
            inside = (iu >= 0) & (iu < w) & (iv >= 0) & (iv < h)
            idx = np.flatnonzero(front)[inside]
            p, n = P[iv[inside], iu[inside]], N[iv[inside], iu[inside]]
            ok = np.isfinite(p).all(1) & np.isfinite(n).all(1)
            idx, p, n = idx[ok], p[ok], n[ok]
            close = np.linalg.norm(Xw[idx] - p, axis=1) < max_pair
            src.append(Xw[idx[close]])
            dst.append(p[close])
            nrm.append(n[close])
        if not src or sum(len(s) for s in src) < min_pairs:
            return None
        x, p, n = np.concatenate(src), np.concatenate(dst), np.concatenate(nrm)
        r = np.einsum("ij,ij->i", n, x - p)
        J = np.hstack([np.cross(x, n), n])             # d r / d (omega, tau), left perturbation in the map frame
        wts = np.where(np.abs(r) <= huber_m, 1.0, huber_m / np.maximum(np.abs(r), 1e-12))
        H = J.T @ (J * wts[:, None])
        if np.linalg.cond(H) > 1e8:                    # a plane alone leaves directions free: no update
            return None
        delta = -np.linalg.solve(H, J.T @ (wts * r))
        dR = Rotation.from_rotvec(delta[:3]).as_matrix()
        T = np.vstack([np.hstack([dR @ T[:3, :3], (dR @ T[:3, 3] + delta[3:])[:, None]]), [0, 0, 0, 1]])
        if np.linalg.norm(delta[:3]) < 1e-5 and np.linalg.norm(delta[3:]) < 1e-5:
            break
    return T
