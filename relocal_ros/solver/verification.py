"""Dense verification of a pose with the query's own depth: do the surfaces the query sees lie where the retrieved
keyframes saw surfaces?

A grid of the query's depth pixels is lifted to the map with the pose and projected into each retrieved keyframe's
depth thumbnail. A point is *consistent* when its depth there agrees with the keyframe's measurement within the
sensor noise of both; it is a *violation* when it lies clearly in front of the keyframe's surface — in space that
keyframe saw as empty — and it says nothing when it lies behind (occluded there) or outside the keyframe's view.
A right pose is consistent almost everywhere the views overlap; a pose shifted by 20 cm or rotated by a few degrees
puts most points in front of or behind the surfaces. The score is consistent / (consistent + violation) over the
points that some keyframe can judge (a point consistent in any keyframe counts consistent).

Without the query's depth (RGB only) the keyframes are drawn into the query instead: each retrieved keyframe's depth
pixels are lifted to the map, projected into the query with the pose, and the high-passed brightness there is
correlated with the keyframe's own (`photometric_agreement`). Measured with true poses and the same poses moved by
25 cm or turned by 10° (fr1_rpy sparse map, SUN3D fragments, bench/photometric_separation.py): true poses' median
0.31-0.56 per scene with map views, moved ≤ 0.22 on every real scene; the threshold is the solver's
`min_photometric_agreement`."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from relocal_ros.geometry.camera import Intrinsics, undistort_points
from relocal_ros.solver.pnp import depth_sensor_sigma, solve_pnp_ransac
from relocal_ros.solver.relative import full_pose
from relocal_ros.solver.soft_ransac import solve_pnp_soft_inlier


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


def consistency_tolerance(z_query, z_keyframe, k_sigma: float = 3.0, floor_m: float = 0.03):
    """How far (m) a query depth sample may lie from the keyframe's measurement and still count as consistent: the
    two sensor noises, plus 2 % of range (the thumbnail's pixels average a patch, slanted surfaces vary within it).
    A pose off by less than this along the view passes the check: the check cannot see it."""
    z_query, z_keyframe = np.asarray(z_query, np.float64), np.asarray(z_keyframe, np.float64)
    noise = np.sqrt(depth_sensor_sigma(z_query) ** 2 + depth_sensor_sigma(z_keyframe) ** 2)
    return np.maximum(floor_m, k_sigma * noise) + 0.02 * z_keyframe


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
        agree = np.abs(zp - zk) <= consistency_tolerance(zp, zk, k_sigma, floor_m)
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


def _high_pass(grey: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """Brightness minus its blur: texture and edges, without the shading and exposure that match under any pose."""
    g = grey.astype(np.float32)
    return g - cv2.GaussianBlur(g, (0, 0), sigma)


def _band_pass(grey: np.ndarray, fine: float = 1.0, coarse: float = 3.0) -> np.ndarray:
    """Brightness between two blurs: edges a pixel of misalignment or motion blur leaves in place, without the
    finest texture (which they wipe out) and without the shading."""
    g = grey.astype(np.float32)
    return cv2.GaussianBlur(g, (0, 0), fine) - cv2.GaussianBlur(g, (0, 0), coarse)


def photometric_agreement(T_map_cam: np.ndarray, query_grey: np.ndarray, query_intr: Intrinsics,
                          views: list[DepthView], step_px: int = 2, min_points: int = 50) -> float:
    """RGB-only check of a pose: the best, over the keyframes, Pearson correlation between each keyframe's
    high-passed brightness at its depth pixels and the query's where those surfaces land under the pose (NaN when no
    keyframe could be drawn; 0 when none has min_points of them inside the query). query_grey: the query's grey
    thumbnail; query_intr: its intrinsics at that size. Occlusions and wide baselines lower a right pose's score;
    a wrong one scores about 0."""
    return photometric_scores(T_map_cam, query_grey, query_intr, views, step_px, min_points)[0]


def photometric_scores(T_map_cam: np.ndarray, query_grey: np.ndarray, query_intr: Intrinsics,
                       views: list[DepthView], step_px: int = 2, min_points: int = 50) -> tuple[float, float]:
    """(photometric_agreement, the same correlation in the band between a 1 and a 3 px blur), each the best over the
    keyframes. The band forgives what a right pose's view leaves misaligned by a pixel or blurred (right poses on the
    real scenes score higher in it), but it also lets poses 25 cm or 10 deg off score higher: it can confirm a pose,
    the finer score alone can refuse one (docs/measurements.md "RGB only: two brightness scores")."""
    q, q_band = _high_pass(query_grey), _band_pass(query_grey)
    T_cam_map = np.linalg.inv(T_map_cam)
    best = best_band = float("nan")
    usable = False  # a keyframe with brightness and depth
    for v in views:
        if v.grey is None:
            continue
        usable = True
        h, w = v.depth.shape
        ys, xs = np.mgrid[0:h:step_px, 0:w:step_px]
        ys, xs = ys.ravel(), xs.ravel()
        z = v.depth[ys, xs].astype(np.float64)
        ok = np.isfinite(z) & (z > 0.1)
        ys, xs, z = ys[ok], xs[ok], z[ok]
        und = undistort_points(np.stack([xs, ys], 1), v.intrinsics).astype(np.float64)
        k = v.intrinsics
        pc = np.stack([(und[:, 0] - k.cx) / k.fx * z, (und[:, 1] - k.cy) / k.fy * z, z], 1)
        M = T_cam_map @ v.T_map_cam
        pq = pc @ M[:3, :3].T + M[:3, 3]
        front = pq[:, 2] > 0.1
        if front.sum() < min_points:
            continue
        uv, _ = cv2.projectPoints(pq[front].reshape(-1, 1, 3), np.zeros(3), np.zeros(3), query_intr.K,
                                  np.array(query_intr.dist, float))
        uv = uv.reshape(-1, 2).astype(np.float32)
        inside = (uv[:, 0] >= 0) & (uv[:, 0] <= query_intr.width - 1) & (uv[:, 1] >= 0) & \
                 (uv[:, 1] <= query_intr.height - 1)
        if inside.sum() < min_points:
            continue
        at_x, at_y = uv[inside, 0].reshape(-1, 1), uv[inside, 1].reshape(-1, 1)
        kx, ky = xs[front][inside], ys[front][inside]

        def drawn_correlation(query_img, key_img):
            a = cv2.remap(query_img, at_x, at_y, cv2.INTER_LINEAR).ravel()
            return _correlation(a.astype(np.float64), key_img[ky, kx].astype(np.float64))
        best = _better(best, drawn_correlation(q, _high_pass(v.grey)))
        best_band = _better(best_band, drawn_correlation(q_band, _band_pass(v.grey)))
    if usable:  # keyframes that could be drawn but landed nowhere in the query: no agreement
        return tuple(r if np.isfinite(r) else 0.0 for r in (best, best_band))
    return best, best_band


def _better(best: float, r: float) -> float:
    """r where it is a number above best (or best is NaN), else best."""
    return r if np.isfinite(r) and not r <= best else best


def keyframe_depth_view(kf) -> DepthView | None:
    """The keyframe's stored depth thumbnail as a DepthView (None when the keyframe has no depth)."""
    d = np.asarray(kf.depth_thumbnail, np.float32)
    if not (d > 0).any():
        return None
    h, w = d.shape
    grey = cv2.cvtColor(kf.thumbnail, cv2.COLOR_RGB2GRAY).astype(np.float32) if kf.thumbnail is not None else None
    return DepthView(kf.T_map_cam, kf.intrinsics.scaled(w, h), d, grey)


def nearest_views(viewpoints: tuple[np.ndarray, np.ndarray], T_map_cam: np.ndarray, k: int = 5,
                  metres: float = 0.3, degrees: float = 20.0) -> list[int]:
    """The k keyframes that looked at the scene most nearly as a camera at T_map_cam would (views to check a pose
    that came without retrieval): distance between centres in units of `metres` plus angle between optical axes in
    units of `degrees` (the hard benchmark's sparse-map keyframe spacing). Centres alone chose keyframes looking
    elsewhere where the camera turns in place: on fr1 (DSAC++, one trained head) two poses 17-18 cm / 8-10 deg off
    agreed with those views' depth at 0.65 each; with these views at 0.52-0.54, below min_dense_consistency, where the
    poses within 10 cm / 10 deg agree at 0.44-0.96 (docs/measurements.md, "DSAC++ again")."""
    centres, axes = viewpoints
    if len(centres) == 0:
        return []
    angle = np.degrees(np.arccos(np.clip(axes @ T_map_cam[:3, 2], -1.0, 1.0)))
    cost = np.linalg.norm(centres - T_map_cam[:3, 3], axis=1) / metres + angle / degrees
    return [int(i) for i in np.argsort(cost, kind="stable")[:k]]


def verify_evidence(ev, depth: np.ndarray | None, rgb: np.ndarray, keyframe_map,
                    viewpoints: tuple[np.ndarray, np.ndarray], reproj_px: float, soft_inlier: bool = False) -> None:
    """Dense check of the evidence of a method that does not check it itself (learned methods, and any method on
    an RGB-only query): the pose its correspondences give (PnP-RANSAC), or each relative-pose hypothesis, is
    compared with the retrieved keyframes. With the query's depth, by depth agreement as the feature-matching path
    does (ev.dense_*, h.dense_consistency); without it, by photometric agreement (ev.photometric_agreement,
    h.photometric_agreement). The solver accepts, refuses or drops hypotheses on them. viewpoints: the map's
    keyframe centres and optical axes (the engine keeps them), for evidence that came without retrieval.
    soft_inlier: the method's poses are scored by DSAC++'s soft inlier count (SolverTraits.soft_inlier): the pose
    checked is then the one the solver's soft-inlier PnP will publish (deterministic, same threshold), not a plain
    RANSAC pose of the same correspondences, which was up to 10 cm / 6 deg from it on fr1_rpy; it goes to the solver
    as ev.checked_pose."""
    if depth is not None:
        samples = sample_query_points(depth, ev.intrinsics, rgb=rgb)
        if len(samples[0]) == 0:
            return

        def score(T, views):
            return dense_consistency(T, samples[0], views, query_grey=samples[1])
    else:
        grey = grey_thumbnail(rgb)
        intr = ev.intrinsics.scaled(grey.shape[1], grey.shape[0])

        def score(T, views):
            return photometric_scores(T, grey, intr, views)

    def check(T, refs):
        views = [v for v in (keyframe_depth_view(keyframe_map.keyframes[k]) for k in refs) if v is not None]
        return score(T, views) if views else None

    if ev.hypotheses:
        for h in ev.hypotheses:
            if np.isfinite(h.scale):  # a direction only has no pose to check
                chk = check(full_pose(h), [h.keyframe_id])
                if depth is None:
                    h.photometric_agreement = float("nan") if chk is None else chk[0]
                elif chk is not None and chk.judged:
                    h.dense_consistency = chk.consistency
        return
    if len(ev.image_points) < 6:
        return
    if soft_inlier:
        T = solve_pnp_soft_inlier(ev.image_points, ev.map_points, ev.intrinsics, reproj_px)[0].T_map_cam
        ev.checked_pose = T  # the solver publishes this pose instead of searching again (same search, ~30 ms)
    else:
        T = solve_pnp_ransac(ev.image_points, ev.map_points, ev.intrinsics, reproj_px, 300).T_map_cam
    if T is None:
        return
    chk = check(T, ev.keyframe_ids or nearest_views(viewpoints, T))
    if depth is None:
        ev.photometric_agreement, ev.photometric_band = (float("nan"),) * 2 if chk is None else chk
    elif chk is not None:
        ev.dense_consistency, ev.dense_judged, ev.dense_samples = chk.consistency, chk.judged, chk.samples
        ev.dense_photometric = chk.photometric
