"""Relative pose of a query to one keyframe from 2D-2D matches (essential matrix, OpenCV 5-point in RANSAC), with
the metric scale of the translation fixed by the keyframe's measured depth (RRPR's idea: triangulate the inlier
matches with a unit baseline and compare their depths with the stored ones). The classical front end of the
relative-pose solvers until a relative-pose network supplies the hypotheses."""
from __future__ import annotations

import cv2
import numpy as np

from relocal_ros.estimates import RelativePoseHypothesis
from relocal_ros.geometry.camera import Intrinsics, undistort_points
from relocal_ros.geometry.poses import invert, make_T


def _normalised(uv: np.ndarray, intr: Intrinsics) -> np.ndarray:
    p = undistort_points(uv, intr).astype(np.float64)
    return np.stack([(p[:, 0] - intr.cx) / intr.fx, (p[:, 1] - intr.cy) / intr.fy], 1)


def relative_pose_hypothesis(kf_id: int, T_map_kf: np.ndarray, uv_kf: np.ndarray, intr_kf: Intrinsics,
                             X_map: np.ndarray, uv_q: np.ndarray, intr_q: Intrinsics, threshold_px: float = 1.5,
                             min_inliers: int = 15) -> tuple[RelativePoseHypothesis | None, int]:
    """(hypothesis, inlier count); None when the matches do not determine a relative pose. X_map: the keyframe
    keypoints' 3D points in the map frame (NaN where the depth was missing), for the scale."""
    if len(uv_q) < max(min_inliers, 5):
        return None, 0
    xk, xq = _normalised(uv_kf, intr_kf), _normalised(uv_q, intr_q)
    f = 0.5 * (intr_kf.fx + intr_q.fx)
    try:
        E, mask = cv2.findEssentialMat(xk, xq, np.eye(3), method=cv2.RANSAC, prob=0.999, threshold=threshold_px / f)
    except cv2.error:  # OpenCV 5's five-point solver asserts on zero parallax (a query at its keyframe) or a line
        return None, 0
    if E is None or E.shape != (3, 3):
        return None, 0
    n, R, t, mask = cv2.recoverPose(E, xk, xq, np.eye(3), mask=mask)
    inl = mask.ravel() > 0
    if n < min_inliers:
        return None, int(n)
    T_q_kf = make_T(R, t.ravel())          # x_q = R x_kf + t: keyframe camera -> query camera, |t| = 1
    T_kf_q = invert(T_q_kf)
    # scale: depths triangulated with the unit baseline vs the keyframe's measured depths of the same points
    P1, P2 = np.hstack([np.eye(3), np.zeros((3, 1))]), T_q_kf[:3]
    Xh = cv2.triangulatePoints(P1, P2, xk[inl].T, xq[inl].T)
    z_unit = Xh[2] / Xh[3]
    X_kf = (X_map[inl] - T_map_kf[:3, 3]) @ T_map_kf[:3, :3]   # map -> keyframe camera
    ok = np.isfinite(X_kf).all(1) & (z_unit > 1e-6) & (X_kf[:, 2] > 0.05)
    scale = float(np.median(X_kf[ok, 2] / z_unit[ok])) if ok.sum() >= 5 else float("nan")
    return RelativePoseHypothesis(kf_id, T_map_kf.copy(), T_kf_q, scale), int(n)
