"""Guided matching: with a first pose hypothesis (even from 6–10 inliers), project the retrieved keyframes' 3D
points into the query and match each only against the query keypoints within a small window.

Mutual nearest neighbours over the whole image must beat every look-alike in the scene, which fails under viewpoint
change (descriptors drift, the true partner is no longer the global best). Inside a window of a few pixels there
are few candidates, so a far lower similarity with a clear margin over the runner-up is safe: the same idea as
the projection search of ORB-SLAM's tracking and of hloc's "guided" re-matching."""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from relocal_ros.geometry.camera import Intrinsics


def project(T_map_cam: np.ndarray, X: np.ndarray, intr: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """(pixels in the ideal pinhole image, depth) of map points seen by the camera at T_map_cam."""
    R, t = T_map_cam[:3, :3], T_map_cam[:3, 3]
    pc = (X - t) @ R           # = R^T (X - t)
    z = pc[:, 2]
    zs = np.where(z > 1e-6, z, np.nan)
    uv = np.stack([intr.fx * pc[:, 0] / zs + intr.cx, intr.fy * pc[:, 1] / zs + intr.cy], 1)
    return uv, z


def guided_matches(T_map_cam: np.ndarray, query_uv: np.ndarray, query_desc: np.ndarray, intr: Intrinsics,
                   map_points: np.ndarray, map_desc: np.ndarray, radius_px: float = 12.0,
                   min_similarity: float = 0.5, margin: float = 0.05,
                   query_tree: cKDTree | None = None, k_candidates: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Matches (M x 2: query index, map index) and their cosine similarity.

    query_uv: undistorted query keypoints (ideal pinhole, intr.K); map_points/map_desc: 3D points (NaN allowed)
    and unit descriptors of the reference keypoints. A map point is matched to the most similar query keypoint
    within radius_px of its projection when that similarity is ≥ min_similarity and beats the runner-up in the
    window by `margin` (among its k_candidates nearest keypoints); each query keypoint keeps only its most similar
    map point (one-to-one on the query side)."""
    empty = np.zeros((0, 2), int), np.zeros(0, np.float32)
    ok = np.isfinite(map_points).all(1)
    if not ok.any() or len(query_uv) == 0:
        return empty
    midx = np.flatnonzero(ok)
    uv, z = project(T_map_cam, map_points[midx], intr)
    inside = (z > 0.05) & np.isfinite(uv).all(1) & (uv[:, 0] > -radius_px) & (uv[:, 0] < intr.width + radius_px) \
        & (uv[:, 1] > -radius_px) & (uv[:, 1] < intr.height + radius_px)
    midx, uv = midx[inside], uv[inside]
    if len(midx) == 0:
        return empty
    tree = query_tree if query_tree is not None else cKDTree(query_uv)
    # the k nearest query keypoints within the window (k-NN with an upper bound: arrays, no per-point lists)
    dist, nb = tree.query(uv, k=k_candidates, distance_upper_bound=radius_px)
    near = np.isfinite(dist[:, 0])  # neighbours come sorted by distance: none at all when the nearest is missing
    midx, dist, nb = midx[near], dist[near], nb[near]
    valid = np.isfinite(dist)
    # similarities of the real candidates only: a 12 px window holds 1-2 of the 6 on average, and gathering
    # 6 descriptors per projected point cost more than the rest of guided matching together
    r, c = np.nonzero(valid)
    sim = np.full(valid.shape, -np.inf, np.float32)
    sim[r, c] = np.einsum("nd,nd->n", map_desc[midx[r]], query_desc[nb[r, c]])
    order = np.argsort(-sim, axis=1)
    best = order[:, 0]
    rows = np.arange(len(midx))
    best_s = sim[rows, best]
    second = sim[rows, order[:, 1]] if k_candidates > 1 else np.full(len(midx), -np.inf)
    keep = np.isfinite(best_s) & (best_s >= min_similarity) & (best_s - np.maximum(second, -1.0) >= margin)
    best_q, best_s, owner = nb[rows, best][keep], best_s[keep], rows[keep]
    if len(best_q) == 0:
        return empty
    # one map point per query keypoint: the most similar
    o = np.lexsort((-best_s, best_q))
    first_q = np.r_[True, best_q[o][1:] != best_q[o][:-1]]
    sel = o[first_q]
    return np.stack([best_q[sel], midx[owner[sel]]], 1), best_s[sel].astype(np.float32)
