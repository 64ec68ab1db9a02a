"""3D–3D pose hypotheses for RGB-D queries: Kabsch (Umeyama without scale) inside RANSAC, as DSAC*'s RGB-D mode.

Each correspondence pairs a query keypoint lifted with the query's own depth (camera frame) with the map point of
the keyframe keypoint it matched. Three pairs fix a rigid pose, against P3P's up-to-four solutions from rays, and the
depth fixes the distance along the ray that PnP has to infer from the spread of the points — which is what fails
when few matches survive a wide baseline.

Written here with numpy rather than taken from a library: OpenCV's estimateAffine3D fits 12 affine parameters
(not a rigid pose), poselib and pycolmap (as installed here) expose no rigid 3D–3D RANSAC, and Open3D (which
has one) is a 400 MB dependency for 40 lines. All hypotheses of a batch are fitted and scored at once (batched
3×3 SVD), so 512 hypotheses over 1,000 pairs take about 5 ms."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from relocal_ros.solver.pnp import depth_sensor_sigma


@dataclass
class RigidResult:
    T_map_cam: np.ndarray | None
    inliers: np.ndarray      # boolean mask over the correspondences
    rms: float               # metres, over inliers


def kabsch(P: np.ndarray, Q: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """4x4 rigid T minimising Σ w |T P − Q|² (P, Q: N x 3, or B x N x 3 for a batch → B x 4 x 4)."""
    batched = P.ndim == 3
    P3, Q3 = (P, Q) if batched else (P[None], Q[None])
    w3 = np.ones(P3.shape[:2]) if w is None else (w if w.ndim == 2 else w[None])
    w3 = w3 / np.maximum(w3.sum(1, keepdims=True), 1e-12)
    cp = np.einsum("bn,bnk->bk", w3, P3)
    cq = np.einsum("bn,bnk->bk", w3, Q3)
    H = np.einsum("bn,bni,bnj->bij", w3, P3 - cp[:, None], Q3 - cq[:, None])
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(np.einsum("bij,bjk->bik", U, Vt).transpose(0, 2, 1)))
    D = np.tile(np.eye(3), (len(H), 1, 1))
    D[:, 2, 2] = d
    R = np.einsum("bji,bjk,bkl->bil", Vt, D, U.transpose(0, 2, 1))  # V D Uᵀ
    T = np.tile(np.eye(4), (len(H), 1, 1))
    T[:, :3, :3] = R
    T[:, :3, 3] = cq - np.einsum("bij,bj->bi", R, cp)
    return T if batched else T[0]


def rigid_threshold(z: np.ndarray, floor_m: float = 0.03, k_sigma: float = 3.0) -> np.ndarray:
    """Per-pair 3D inlier distance: both points carry depth noise growing with z² (query and keyframe sensors)."""
    return np.maximum(floor_m, k_sigma * np.sqrt(2.0) * depth_sensor_sigma(z))


def solve_rigid_ransac(query_points: np.ndarray, map_points: np.ndarray, max_iterations: int = 1000,
                       floor_m: float = 0.03, seed: int = 0, batch: int = 128,
                       min_sample_spread: float = 0.05, score_points: int = 300) -> RigidResult:
    """T_map_cam from query_points (camera frame, N x 3) ↔ map_points (N x 3) with outliers.

    Hypotheses from 3 random pairs whose query points span a triangle (sides ≥ min_sample_spread, else the rotation
    about their line is free), scored by inlier count under a depth-dependent threshold, then refitted on the inliers
    twice (local optimisation)."""
    P = np.asarray(query_points, np.float64)
    Q = np.asarray(map_points, np.float64)
    n = len(P)
    none = RigidResult(None, np.zeros(n, bool), float("nan"))
    if n < 3:
        return none
    thr2 = rigid_threshold(P[:, 2], floor_m) ** 2
    rng = np.random.default_rng(seed)
    # hypotheses are ranked on at most score_points pairs (a fixed random subset), the winner refitted on all
    sc = rng.choice(n, score_points, replace=False) if n > score_points else np.arange(n)
    Psc, Qsc, thr2sc = P[sc], Q[sc], thr2[sc]
    best_count, best_T = 2 * len(sc) / n, None
    done = 0
    while done < max_iterations:
        idx = np.stack([rng.choice(n, 3, replace=False) for _ in range(batch)]) if n < 8 else \
            rng.integers(0, n, size=(batch, 3))
        Ps, Qs = P[idx], Q[idx]
        side = np.linalg.norm(Ps - np.roll(Ps, 1, axis=1), axis=2).min(1)
        side_q = np.linalg.norm(Qs - np.roll(Qs, 1, axis=1), axis=2)
        # a rigid motion keeps distances: a sample whose triangle changes shape cannot be all inliers
        ok = (side >= min_sample_spread) & (np.abs(np.linalg.norm(Ps - np.roll(Ps, 1, axis=1), axis=2) - side_q)
                                            .max(1) < 2 * np.sqrt(thr2[idx].max(1)))
        done += batch
        if not ok.any():
            continue
        T = kabsch(Ps[ok], Qs[ok])
        res = np.matmul(Psc[None], T[:, :3, :3].transpose(0, 2, 1)) + (T[:, None, :3, 3] - Qsc[None])
        counts = (np.square(res).sum(2) < thr2sc[None]).sum(1)
        b = int(np.argmax(counts))
        if counts[b] > best_count:
            best_count, best_T = int(counts[b]), T[b]
            # adaptive stop (99.9 % confidence of one all-inlier sample)
            ratio = best_count / len(sc)
            need = np.log(1e-3) / np.log(max(1e-12, 1 - ratio ** 3)) if ratio < 1 else 0
            max_iterations = min(max_iterations, int(np.ceil(need)) + batch)
    if best_T is None:
        return none
    T = best_T
    for _ in range(2):
        inl = (((P @ T[:3, :3].T + T[:3, 3]) - Q) ** 2).sum(1) < thr2
        if inl.sum() < 3:
            break
        T = kabsch(P[inl], Q[inl])
    r2 = (((P @ T[:3, :3].T + T[:3, 3]) - Q) ** 2).sum(1)
    inl = r2 < thr2
    if inl.sum() < 3:
        return none
    return RigidResult(T, inl, float(np.sqrt(r2[inl].mean())))


def rigid_inliers(T_map_cam: np.ndarray, query_points: np.ndarray, map_points: np.ndarray,
                  floor_m: float = 0.03) -> np.ndarray:
    """Pairs that a given pose puts together within the depth-dependent threshold (False where the query point has
    no depth)."""
    P, Q = np.asarray(query_points, np.float64), np.asarray(map_points, np.float64)
    ok = np.isfinite(P).all(1) & np.isfinite(Q).all(1)
    out = np.zeros(len(P), bool)
    if ok.any():
        r2 = (((P[ok] @ T_map_cam[:3, :3].T + T_map_cam[:3, 3]) - Q[ok]) ** 2).sum(1)
        out[ok] = r2 < rigid_threshold(P[ok, 2], floor_m) ** 2
    return out
