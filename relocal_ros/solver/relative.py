"""Absolute pose from relative poses to retrieved keyframes: three ways of combining them, selectable so they can be
compared on the same hypotheses (bench/bench_solver.py).

- "exrenet" (ExReNet §IV-C): every pair of hypotheses gives a query pose, the camera centre by triangulating the two
  rays from the keyframe centres and the rotation by averaging; RANSAC over all pairs counts a keyframe as inlier
  when its ray points at the hypothesis centre within alpha_max (15°) and, when it has a scale, the distance agrees
  within s_min < s_H / s < s_max (0.5, 2.0). Ties go to the pair with the smaller mean MC-dropout uncertainty. The
  winner is refined on its inliers (least-squares intersection of all inlier rays, rotation mean).
- "irls" (RelocNet): each hypothesis with a scale is a full pose; robust mean in SO(3) x R^3 by iteratively
  reweighted least squares with Huber weights (rotation residuals converted to metres by `rot_scale_m`).
- "rrpr" (RRPR): the single best-retrieved keyframe's hypothesis composed with its metric scale.

A hypothesis is a RelativePoseHypothesis: T_kf_query with a unit translation (direction) and `scale` in metres
(NaN when unknown), so the same code serves network outputs (ExReNet) and essential-matrix estimates."""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
from scipy.spatial.transform import Rotation

from relocal_ros.estimates import RelativePoseHypothesis
from relocal_ros.geometry.poses import make_T

FUSIONS = ("exrenet", "irls", "rrpr")
# agreeing keyframes a fusion can need at most: rrpr answers from one keyframe by design
FUSION_MIN_AGREEING = {"rrpr": 1}


@dataclass
class FusedPose:
    T_map_cam: np.ndarray | None
    inliers: list[int] = field(default_factory=list)     # indices into the hypotheses
    covariance: np.ndarray | None = None                 # 6x6, x y z rx ry rz, map frame
    reason: str = ""


def ray(h: RelativePoseHypothesis) -> tuple[np.ndarray, np.ndarray]:
    """(keyframe centre, unit direction towards the query centre) in the map frame."""
    t = h.T_kf_query[:3, 3]
    n = np.linalg.norm(t)
    d = h.T_map_kf[:3, :3] @ (t / n if n > 0 else t)
    return h.T_map_kf[:3, 3].copy(), d


def query_rotation(h: RelativePoseHypothesis) -> Rotation:
    return Rotation.from_matrix(h.T_map_kf[:3, :3] @ h.T_kf_query[:3, :3])


def intersect_rays(centres: np.ndarray, dirs: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray | None:
    """The point closest to all lines c_i + t d_i in the weighted least-squares sense; None when they are
    (nearly) parallel, where the intersection is undetermined along the common direction."""
    w = np.ones(len(centres)) if weights is None else np.asarray(weights, float)
    A, b = np.zeros((3, 3)), np.zeros(3)
    for c, d, wi in zip(centres, dirs, w):
        P = np.eye(3) - np.outer(d, d)
        A += wi * P
        b += wi * P @ c
    if np.linalg.cond(A) > 1e6:
        return None
    return np.linalg.solve(A, b)


def _in_front(c_q: np.ndarray, centres: np.ndarray, dirs: np.ndarray) -> bool:
    return bool(np.all(np.einsum("ij,ij->i", c_q[None] - centres, dirs) > 0))


def _pair_hypothesis(hi, hj, min_angle_deg: float):
    (ci, di), (cj, dj) = ray(hi), ray(hj)
    angle = np.degrees(np.arccos(np.clip(abs(di @ dj), -1, 1)))
    c = intersect_rays(np.stack([ci, cj]), np.stack([di, dj])) if angle >= min_angle_deg else None
    if c is None or not _in_front(c, np.stack([ci, cj]), np.stack([di, dj])):
        # rays too parallel to intersect: use the scales along them, when known
        s = [(cc + h.scale * dd) for h, cc, dd in ((hi, ci, di), (hj, cj, dj)) if np.isfinite(h.scale)]
        if not s:
            return None
        c = np.mean(s, axis=0)
    R = Rotation.concatenate([query_rotation(hi), query_rotation(hj)]).mean()
    return c, R


def _inliers(c: np.ndarray, hyps, alpha_max_deg: float, s_min: float, s_max: float) -> list[int]:
    out = []
    for k, h in enumerate(hyps):
        ck, dk = ray(h)
        v = c - ck
        dist = np.linalg.norm(v)
        if dist < 1e-9:
            continue
        alpha = np.degrees(np.arccos(np.clip(v @ dk / dist, -1, 1)))
        if alpha >= alpha_max_deg:
            continue
        if np.isfinite(h.scale) and h.scale > 0 and not (s_min < dist / h.scale < s_max):
            continue
        out.append(k)
    return out


def _ray_covariance(c: np.ndarray, hyps, idx: list[int], ray_sigma_deg: float, scale_sigma_rel: float,
                    rot_sigma_deg: float) -> np.ndarray:
    """Position information from each inlier ray (perpendicular sd = distance x angular sd; along the ray the
    relative scale sd when the scale is known) and rotation spread of the inliers, floored."""
    info = np.zeros((3, 3))
    for k in idx:
        ck, dk = ray(hyps[k])
        dist = max(np.linalg.norm(c - ck), 0.05)
        sig_deg = hyps[k].uncertainty if np.isfinite(hyps[k].uncertainty) and hyps[k].uncertainty > 0 else ray_sigma_deg
        perp = dist * np.radians(sig_deg)
        info += (np.eye(3) - np.outer(dk, dk)) / perp ** 2
        if np.isfinite(hyps[k].scale):
            info += np.outer(dk, dk) / (scale_sigma_rel * dist) ** 2
    cov = np.zeros((6, 6))
    cov[:3, :3] = np.linalg.pinv(info) if np.linalg.cond(info) < 1e8 else np.eye(3) * 1e2
    rots = Rotation.concatenate([query_rotation(hyps[k]) for k in idx])
    rv = (rots * rots.mean().inv()).as_rotvec()
    spread = rv.T @ rv / max(len(idx) - 1, 1) / len(idx) if len(idx) > 1 else np.zeros((3, 3))
    cov[3:, 3:] = spread + np.eye(3) * np.radians(rot_sigma_deg) ** 2
    return cov


def fuse_exrenet(hyps, alpha_max_deg: float = 15.0, s_min: float = 0.5, s_max: float = 2.0,
                 min_ray_angle_deg: float = 2.0, ray_sigma_deg: float = 3.0, scale_sigma_rel: float = 0.15,
                 rot_sigma_deg: float = 1.0) -> FusedPose:
    if len(hyps) == 0:
        return FusedPose(None, reason="no relative pose hypotheses")
    if len(hyps) == 1:
        return fuse_rrpr(hyps, ray_sigma_deg=ray_sigma_deg, scale_sigma_rel=scale_sigma_rel)
    best = None  # (inlier count, -mean uncertainty, centre, rotation, inliers)
    for i, j in combinations(range(len(hyps)), 2):
        hyp = _pair_hypothesis(hyps[i], hyps[j], min_ray_angle_deg)
        if hyp is None:
            continue
        c, R = hyp
        inl = _inliers(c, hyps, alpha_max_deg, s_min, s_max)
        u = [hyps[k].uncertainty for k in (i, j)]
        score = (len(inl), -float(np.mean(u)) if all(np.isfinite(u)) else 0.0)
        if best is None or score > best[0]:
            best = (score, c, R, inl)
    if best is None or len(best[3]) < 2:
        return FusedPose(None, reason="no two relative poses agree on a camera centre")
    _, c, R, inl = best
    rays = [ray(hyps[k]) for k in inl]
    refined = intersect_rays(np.stack([r[0] for r in rays]), np.stack([r[1] for r in rays]))
    if refined is not None and _in_front(refined, np.stack([r[0] for r in rays]), np.stack([r[1] for r in rays])):
        c = refined
    R = Rotation.concatenate([query_rotation(hyps[k]) for k in inl]).mean()
    T = make_T(R.as_matrix(), c)
    return FusedPose(T, inl, _ray_covariance(c, hyps, inl, ray_sigma_deg, scale_sigma_rel, rot_sigma_deg),
                     f"exrenet: {len(inl)} of {len(hyps)} relative poses agree")


def full_pose(h: RelativePoseHypothesis) -> np.ndarray:
    T = h.T_kf_query.copy()
    n = np.linalg.norm(T[:3, 3])
    T[:3, 3] = T[:3, 3] / n * h.scale if n > 0 else T[:3, 3]
    return h.T_map_kf @ T


def fuse_irls(hyps, huber_delta: float = 0.1, rot_scale_m: float = 1.0, iterations: int = 20,
              rot_sigma_deg: float = 1.0, min_weight: float = 0.5) -> FusedPose:
    """Huber-IRLS mean of the full poses (hypotheses with a metric scale). Residuals are (dt, rot_scale_m * dr);
    inliers are those with Huber weight >= min_weight at convergence."""
    idx = [k for k, h in enumerate(hyps) if np.isfinite(h.scale) and h.scale > 0]
    if not idx:
        return FusedPose(None, reason="irls needs hypotheses with a metric scale")
    poses = [full_pose(hyps[k]) for k in idx]
    ts = np.array([T[:3, 3] for T in poses])
    Rs = Rotation.from_matrix(np.array([T[:3, :3] for T in poses]))
    t, R = np.median(ts, axis=0), Rs.mean()
    w = np.ones(len(idx))
    for _ in range(iterations):
        dr = (R.inv() * Rs).as_rotvec()
        dt = ts - t
        r = np.sqrt(np.sum(dt ** 2, 1) + (rot_scale_m * np.linalg.norm(dr, axis=1)) ** 2)
        w = np.where(r <= huber_delta, 1.0, huber_delta / np.maximum(r, 1e-12))
        t_new = (w[:, None] * ts).sum(0) / w.sum()
        R_new = R * Rotation.from_rotvec((w[:, None] * dr).sum(0) / w.sum())
        done = np.linalg.norm(t_new - t) < 1e-6 and (R_new * R.inv()).magnitude() < 1e-8
        t, R = t_new, R_new
        if done:
            break
    inl = [idx[k] for k in np.flatnonzero(w >= min_weight)]
    if len(inl) < 1:
        return FusedPose(None, reason="irls: no hypothesis near the robust mean")
    cov = np.zeros((6, 6))
    sel = w >= min_weight
    dt = ts[sel] - t
    n = max(sel.sum(), 1)
    cov[:3, :3] = (dt.T @ dt / max(n - 1, 1) / n if n > 1 else np.eye(3) * huber_delta ** 2) + np.eye(3) * 0.01 ** 2
    dr = (R.inv() * Rs[np.flatnonzero(sel)]).as_rotvec()
    cov[3:, 3:] = (dr.T @ dr / max(n - 1, 1) / n if n > 1 else 0) + np.eye(3) * np.radians(rot_sigma_deg) ** 2
    return FusedPose(make_T(R.as_matrix(), t), inl, cov, f"irls: {len(inl)} of {len(hyps)} relative poses kept")


def fuse_rrpr(hyps, ray_sigma_deg: float = 3.0, scale_sigma_rel: float = 0.15, rot_sigma_deg: float = 1.0) -> FusedPose:
    """The first (best-retrieved) hypothesis with a metric scale, composed onto its keyframe's pose."""
    for k, h in enumerate(hyps):
        if np.isfinite(h.scale) and h.scale > 0:
            T = full_pose(h)
            cov = _ray_covariance(T[:3, 3], hyps, [k], ray_sigma_deg, scale_sigma_rel, rot_sigma_deg)
            return FusedPose(T, [k], cov, f"rrpr: keyframe {h.keyframe_id}")
    return FusedPose(None, reason="rrpr needs a hypothesis with a metric scale")


def fuse(hyps, method: str = "exrenet", **kw) -> FusedPose:
    if method not in FUSIONS:
        raise ValueError(f"unknown fusion {method!r}; choose one of {FUSIONS}")
    return {"exrenet": fuse_exrenet, "irls": fuse_irls, "rrpr": fuse_rrpr}[method](list(hyps), **kw)
