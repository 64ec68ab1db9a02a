"""Dense verification of a pose with the query's own depth: do the surfaces the query sees lie where the retrieved
keyframes saw surfaces?

A grid of the query's depth pixels is lifted to the map with the pose and projected into each retrieved keyframe's
depth thumbnail. A point is *consistent* when its depth there agrees with the keyframe's measurement within the
sensor noise of both; it is a *violation* when it lies clearly in front of the keyframe's surface — in space that
keyframe saw as empty — and it says nothing when it lies behind (occluded there) or outside the keyframe's view.
A right pose is consistent almost everywhere the views overlap; a pose shifted by 20 cm or rotated by a few degrees
puts most points in front of or behind the surfaces. The score is consistent / (consistent + violation) over the
points that some keyframe can judge (a point consistent in any keyframe counts consistent)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from relocal_ros.geometry.camera import Intrinsics
from relocal_ros.solver.pnp import depth_sensor_sigma, solve_pnp_ransac
from relocal_ros.solver.relative import full_pose


@dataclass
class DenseCheck:
    consistency: float   # consistent / judged; NaN when nothing could be judged
    judged: int          # query depth samples some keyframe could judge
    samples: int         # query depth samples lifted
    photometric: float = float("nan")  # correlation of query and keyframe brightness at the consistent samples


@dataclass
class DepthView:
    """A keyframe as the verification sees it: pose, intrinsics at the depth image's size, the depth (metres) and
    optionally its grey image at the same size."""
    T_map_cam: np.ndarray
    intrinsics: Intrinsics
    depth: np.ndarray
    grey: np.ndarray | None = None


def grey_thumbnail(rgb: np.ndarray, size=(160, 120)) -> np.ndarray:
    return cv2.cvtColor(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY).astype(np.float32)


def sample_query_points(depth: np.ndarray, intr: Intrinsics, step_px: int = 16,
                        rgb: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(camera-frame 3D points of a regular grid of the query's valid depth pixels (undistorted rays), their
    brightness in the query image blurred to the keyframe thumbnails' scale (NaN without rgb))."""
    h, w = depth.shape
    ys, xs = np.mgrid[step_px // 2:h:step_px, step_px // 2:w:step_px]
    z = depth[ys, xs].astype(np.float64).ravel()
    ok = np.isfinite(z) & (z > 0.1) & (z < 10.0)
    uv = np.stack([xs.ravel()[ok] * intr.width / w, ys.ravel()[ok] * intr.height / h], 1)
    from relocal_ros.geometry.camera import undistort_points
    und = undistort_points(uv, intr).astype(np.float64)
    zz = z[ok]
    pts = np.stack([(und[:, 0] - intr.cx) / intr.fx * zz, (und[:, 1] - intr.cy) / intr.fy * zz, zz], 1)
    grey = np.full(len(pts), np.nan)
    if rgb is not None:
        g = grey_thumbnail(rgb)
        gh, gw = g.shape
        gx = np.clip(np.round((uv[:, 0] + 0.5) * gw / intr.width - 0.5).astype(int), 0, gw - 1)
        gy = np.clip(np.round((uv[:, 1] + 0.5) * gh / intr.height - 0.5).astype(int), 0, gh - 1)
        grey = g[gy, gx].astype(np.float64)
    return pts, grey


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation: insensitive to the exposure gain and offset between the two images."""
    if len(a) < 20:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / d) if d > 1e-9 else float("nan")


def dense_consistency(T_map_cam: np.ndarray, query_points: np.ndarray, views: list[DepthView],
                      k_sigma: float = 3.0, floor_m: float = 0.03,
                      query_grey: np.ndarray | None = None) -> DenseCheck:
    n = len(query_points)
    if n == 0 or not views:
        return DenseCheck(float("nan"), 0, n)
    Xw = query_points @ T_map_cam[:3, :3].T + T_map_cam[:3, 3]
    consistent = np.zeros(n, bool)
    violated = np.zeros(n, bool)
    photo_sum, photo_w = 0.0, 0
    for v in views:
        h, w = v.depth.shape
        intr = v.intrinsics
        R_cw = v.T_map_cam[:3, :3].T
        pc = (Xw - v.T_map_cam[:3, 3]) @ R_cw.T
        front = pc[:, 2] > 0.1
        if not front.any():
            continue
        uv, _ = cv2.projectPoints(pc[front].reshape(-1, 1, 3), np.zeros(3), np.zeros(3), intr.K,
                                  np.array(intr.dist, float))
        uv = uv.reshape(-1, 2)
        iu, iv = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
        inside = (iu >= 0) & (iu < w) & (iv >= 0) & (iv < h)
        idx = np.flatnonzero(front)[inside]
        iu, iv = iu[inside], iv[inside]
        zk = v.depth[iv, iu].astype(np.float64)
        has = np.isfinite(zk) & (zk > 0.1)
        idx, zk, iu, iv = idx[has], zk[has], iu[has], iv[has]
        zp = pc[idx, 2]
        tol = np.maximum(floor_m, k_sigma * np.sqrt(depth_sensor_sigma(zp) ** 2 + depth_sensor_sigma(zk) ** 2)) \
            + 0.02 * zk  # + 2 % of range: the thumbnail's pixels average a patch, slanted surfaces vary within it
        agree = np.abs(zp - zk) <= tol
        consistent[idx[agree]] = True
        violated[idx[~agree]] = True
        if query_grey is not None and v.grey is not None and agree.sum() >= 20:
            r = _correlation(query_grey[idx[agree]], v.grey[iv[agree], iu[agree]].astype(np.float64))
            if np.isfinite(r):
                photo_sum += r * agree.sum()
                photo_w += int(agree.sum())
    violated &= ~consistent
    judged = int(consistent.sum() + violated.sum())
    return DenseCheck(float(consistent.sum() / judged) if judged else float("nan"), judged, n,
                      photo_sum / photo_w if photo_w else float("nan"))


def keyframe_depth_view(kf) -> DepthView | None:
    """The keyframe's stored depth thumbnail as a DepthView (None when the keyframe has no depth)."""
    d = np.asarray(kf.depth_thumbnail, np.float32)
    if not (d > 0).any():
        return None
    h, w = d.shape
    grey = cv2.cvtColor(kf.thumbnail, cv2.COLOR_RGB2GRAY).astype(np.float32) if kf.thumbnail is not None else None
    return DepthView(kf.T_map_cam, kf.intrinsics.scaled(w, h), d, grey)


def nearest_keyframes(centres: np.ndarray, T_map_cam: np.ndarray, k: int = 3) -> list[int]:
    """The k keyframes whose centres are closest to a pose's (views to check a pose that came without retrieval)."""
    if len(centres) == 0:
        return []
    return [int(i) for i in np.argsort(np.linalg.norm(centres - T_map_cam[:3, 3], axis=1), kind="stable")[:k]]


def verify_evidence(ev, depth: np.ndarray, rgb: np.ndarray, keyframe_map, centres: np.ndarray,
                    reproj_px: float) -> None:
    """Dense depth check of the evidence of a method that does not check it itself (learned methods): with the
    query's depth, the pose its correspondences give (PnP-RANSAC), or each relative-pose hypothesis, is compared
    with the retrieved keyframes' depth, as the feature-matching path does. Correspondences: ev.dense_* are set and
    the solver accepts or refuses on them. Relative poses: each hypothesis with a scale carries the share of the
    query's depth that agrees with the map under it (h.dense_consistency); the solver drops those below its floor.
    centres: the map's keyframe centres (the engine keeps them), for evidence that came without retrieval."""
    samples = sample_query_points(depth, ev.intrinsics, rgb=rgb)
    if len(samples[0]) == 0:
        return

    def check(T, refs):
        views = [v for v in (keyframe_depth_view(keyframe_map.keyframes[k]) for k in refs) if v is not None]
        return dense_consistency(T, samples[0], views, query_grey=samples[1]) if views else None

    if ev.hypotheses:
        for h in ev.hypotheses:
            if np.isfinite(h.scale):  # a direction only has no pose to check
                chk = check(full_pose(h), [h.keyframe_id])
                if chk is not None and chk.judged:
                    h.dense_consistency = chk.consistency
        return
    if len(ev.image_points) < 6:
        return
    T = solve_pnp_ransac(ev.image_points, ev.map_points, ev.intrinsics, reproj_px, 300).T_map_cam
    if T is None:
        return
    chk = check(T, ev.keyframe_ids or nearest_keyframes(centres, T))
    if chk is not None:
        ev.dense_consistency, ev.dense_judged, ev.dense_samples = chk.consistency, chk.judged, chk.samples
        ev.dense_photometric = chk.photometric
