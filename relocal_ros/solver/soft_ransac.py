"""PnP hypotheses scored by DSAC++'s soft inlier count (Brachmann & Rother, CVPR 2018, Eq. 5):
s(h) = sum_i sigmoid(beta * (tau - r_i(h))), r_i the reprojection error in pixels; the best-scoring hypothesis of a
pool of P3P solutions (OpenCV) is refined by alternating inlier selection (r < tau) and Levenberg-Marquardt on the
inliers until the inlier set stops changing — DSAC++'s test-time procedure without the learned parts. An option of
the solver's PnP path (solver.pnp_scoring: "soft_inlier"); poselib's LO-RANSAC is the default."""
from __future__ import annotations

import cv2
import numpy as np

from relocal_ros.geometry.camera import Intrinsics
from relocal_ros.geometry.poses import invert, make_T
from relocal_ros.solver.pnp import PnPResult, reprojection_residuals


def _residual_norms(R: np.ndarray, t: np.ndarray, uv: np.ndarray, X: np.ndarray, K: np.ndarray) -> np.ndarray:
    pc = X @ R.T + t
    z = pc[:, 2]
    proj = pc[:, :2] / np.where(z > 1e-6, z, 1e-6)[:, None] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    r = np.linalg.norm(proj - uv, axis=1)
    return np.where(z > 1e-6, r, 1e6)  # behind the camera: never an inlier


def soft_inlier_score(r: np.ndarray, tau: float, beta: float) -> float:
    return float(np.sum(0.5 * (1.0 + np.tanh(0.5 * beta * (tau - r)))))  # sigmoid, overflow-free


def solve_pnp_soft_inlier(image_points: np.ndarray, map_points: np.ndarray, intr: Intrinsics, tau: float = 4.0,
                          beta: float = 0.5, n_hypotheses: int = 256, seed: int = 0,
                          max_refine_iterations: int = 20) -> tuple[PnPResult, float]:
    """(result, soft inlier count of the chosen hypothesis). image_points undistorted (ideal pinhole intr.K)."""
    uv = np.asarray(image_points, np.float64)
    X = np.asarray(map_points, np.float64)
    n = len(uv)
    if n < 4:
        return PnPResult(None, np.zeros(n, bool), float("nan")), 0.0
    K = intr.K
    rng = np.random.default_rng(seed)
    best, best_score = None, -1.0
    for _ in range(n_hypotheses):
        idx = rng.choice(n, 3, replace=False)
        try:
            count, rvecs, tvecs = cv2.solveP3P(X[idx], uv[idx], K, None, flags=cv2.SOLVEPNP_P3P)
        except cv2.error:
            continue
        for rv, tv in zip(rvecs[:count], tvecs[:count]):
            R = cv2.Rodrigues(rv)[0]
            s = soft_inlier_score(_residual_norms(R, tv.ravel(), uv, X, K), tau, beta)
            if s > best_score:
                best, best_score = (R, tv.ravel()), s
    if best is None:
        return PnPResult(None, np.zeros(n, bool), float("nan")), 0.0
    R, t = best
    inliers = _residual_norms(R, t, uv, X, K) < tau
    for _ in range(max_refine_iterations):
        if inliers.sum() < 4:
            break
        ok, rv, tv = cv2.solvePnP(X[inliers], uv[inliers], K, None, cv2.Rodrigues(R)[0], t.reshape(3, 1),
                                  useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok:
            break
        R, t = cv2.Rodrigues(rv)[0], tv.ravel()
        new = _residual_norms(R, t, uv, X, K) < tau
        if np.array_equal(new, inliers):
            break
        inliers = new
    if inliers.sum() < 4:
        return PnPResult(None, inliers, float("nan")), best_score
    T_cam_map = make_T(R, t)
    res = reprojection_residuals(T_cam_map, uv[inliers], X[inliers], intr)
    return PnPResult(invert(T_cam_map), inliers, float(np.sqrt(np.mean(res ** 2)))), best_score
