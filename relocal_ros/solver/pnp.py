"""PnP inside RANSAC (poselib: P3P minimal solver, LO-RANSAC, Cauchy-robust refinement) on 2D-3D correspondences,
and a first-order pose covariance from the inlier geometry."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import poselib
from scipy.spatial.transform import Rotation

from relocal_ros.geometry.camera import Intrinsics
from relocal_ros.geometry.poses import invert, make_T


@dataclass
class PnPResult:
    T_map_cam: np.ndarray | None
    inliers: np.ndarray          # boolean mask over the correspondences
    reprojection_rms: float      # pixels, over inliers

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())


def _pinhole(intr: Intrinsics) -> dict:
    """poselib's camera for points that are already undistorted."""
    return {"model": "PINHOLE", "width": intr.width, "height": intr.height,
            "params": [intr.fx, intr.fy, intr.cx, intr.cy]}


def solve_pnp_ransac(image_points: np.ndarray, map_points: np.ndarray, intr: Intrinsics,
                     max_reproj_error: float = 4.0, max_iterations: int = 2000, seed: int = 0,
                     min_iterations: int = 50) -> PnPResult:
    """image_points must already be undistorted (ideal pinhole with intr.K)."""
    n = len(image_points)
    if n < 4:
        return PnPResult(None, np.zeros(n, bool), float("nan"))
    camera = _pinhole(intr)
    # poselib's default runs 3x the iterations that give one all-inlier sample at 99.99 %; the standard count (1x)
    # cut the solver's PnP from 313 to 106 iterations (median, fr1_rpy), same figures on the hard benchmark
    # (docs/measurements.md)
    ransac = {"max_reproj_error": float(max_reproj_error), "max_iterations": int(max_iterations),
              "min_iterations": int(min(min_iterations, max_iterations)), "success_prob": 0.9999,
              "dyn_num_trials_mult": 1.0, "seed": int(seed)}
    pose, info = poselib.estimate_absolute_pose(np.asarray(image_points, np.float64),
                                                np.asarray(map_points, np.float64), camera, ransac, {})
    inliers = np.asarray(info["inliers"], bool)
    if inliers.sum() < 4:
        return PnPResult(None, inliers, float("nan"))
    T_cam_map = make_T(np.asarray(pose.R), np.asarray(pose.t))
    res = reprojection_residuals(T_cam_map, image_points[inliers], map_points[inliers], intr)
    return PnPResult(invert(T_cam_map), inliers, float(np.sqrt(np.mean(res ** 2)) if len(res) else np.nan))


def reprojection_residuals(T_cam_map: np.ndarray, uv: np.ndarray, X: np.ndarray, intr: Intrinsics) -> np.ndarray:
    pc = X @ T_cam_map[:3, :3].T + T_cam_map[:3, 3]
    z = np.where(np.abs(pc[:, 2]) > 1e-9, pc[:, 2], 1e-9)
    proj = np.stack([intr.fx * pc[:, 0] / z + intr.cx, intr.fy * pc[:, 1] / z + intr.cy], 1)
    return (proj - uv).reshape(-1)


def reprojection_errors(T_map_cam: np.ndarray, image_points: np.ndarray, map_points: np.ndarray,
                        intr: Intrinsics) -> np.ndarray:
    """Per point, the reprojection error (pixels) under a given pose; inf for points behind the camera (never an
    inlier)."""
    T_cam_map = invert(T_map_cam)
    r = np.linalg.norm(reprojection_residuals(T_cam_map, image_points, map_points, intr).reshape(-1, 2), axis=1)
    front = np.asarray(map_points, np.float64) @ T_cam_map[2, :3] + T_cam_map[2, 3] > 0
    return np.where(front, r, np.inf)


def refine_rotation_on_image(T_map_cam: np.ndarray, image_points: np.ndarray, map_points: np.ndarray,
                             intr: Intrinsics, loss_scale_px: float) -> np.ndarray:
    """The camera's orientation re-solved from the colour image, its centre kept: robust (soft-L1) least squares of
    the reprojection errors over a rotation, starting from the given pose. For a pose that rests on the query's depth:
    a depth camera that lags the colour camera turns that pose by the rotation made in between."""
    from scipy.optimize import least_squares
    R0, C = np.asarray(T_map_cam, np.float64)[:3, :3], np.asarray(T_map_cam, np.float64)[:3, 3]
    uv, X = np.asarray(image_points, np.float64), np.asarray(map_points, np.float64)
    f, c = np.array([intr.fx, intr.fy]), np.array([intr.cx, intr.cy])

    def residuals(rotvec):
        p = (X - C) @ (R0 @ Rotation.from_rotvec(rotvec).as_matrix())  # camera frame: R^T (X - C)
        return ((p[:, :2] / np.maximum(p[:, 2:3], 1e-6)) * f + c - uv).ravel()

    fit = least_squares(residuals, np.zeros(3), loss="soft_l1", f_scale=loss_scale_px)
    T = np.array(T_map_cam, np.float64)
    T[:3, :3] = R0 @ Rotation.from_rotvec(fit.x).as_matrix()
    return T


def inlier_coverage(uv: np.ndarray, intr: Intrinsics, cols: int = 8, rows: int = 6) -> float:
    """Share of the cells of a cols x rows grid over the image that hold at least one of the points: inliers
    bunched in one corner constrain the pose far less than their count says."""
    if len(uv) == 0:
        return 0.0
    cx = np.clip((uv[:, 0] / intr.width * cols).astype(int), 0, cols - 1)
    cy = np.clip((uv[:, 1] / intr.height * rows).astype(int), 0, rows - 1)
    return len(np.unique(cy * cols + cx)) / (cols * rows)


def depth_sensor_sigma(z: np.ndarray) -> np.ndarray:
    """Axial noise (m) of a structured-light / active-stereo depth camera at range z (Nguyen et al. 2012, Kinect;
    RealSense D4xx is of the same order at indoor ranges)."""
    return 0.0012 + 0.0019 * (np.maximum(z, 0.4) - 0.4) ** 2


def pose_covariance(T_map_cam: np.ndarray, uv: np.ndarray, X: np.ndarray, intr: Intrinsics,
                    pixel_sigma: float, map_sigma_m: float = 0.0, map_sigma_deg: float = 0.0,
                    depth_noise=depth_sensor_sigma, views: int = 1, common_pixel_sigma: float = 0.0) -> np.ndarray:
    """6x6 covariance of (position x y z, rotation x y z) of the camera in the map frame — the parametrisation of
    geometry_msgs/PoseWithCovariance (rotation as a small left perturbation about the map axes).

    First order, from the inlier reprojection errors (finite-difference Jacobian J, Σ = (Jᵀ W J)⁻¹) where each
    correspondence is weighted by its pixel noise plus the depth-sensor noise of its 3D point, taken as isotropic
    (the noise runs along the keyframe's viewing ray, whose direction the solver does not know: an upper bound); then
    what does not average out over points: an image-wide shift of every keypoint by the same few tenths of a pixel
    (common_pixel_sigma: detector and calibration bias), and the error of the map's keyframe poses (map_sigma_*).
    depth_noise(z) -> metres, or None for exact 3D points."""
    def residuals(delta):
        R = Rotation.from_rotvec(delta[3:]).as_matrix() @ T_map_cam[:3, :3]
        T = make_T(R, T_map_cam[:3, 3] + delta[:3])
        return reprojection_residuals(invert(T), uv, X, intr)

    T_cam_map = invert(T_map_cam)
    z = (X @ T_cam_map[:3, :3].T + T_cam_map[:3, 3])[:, 2]
    point_px = 0.5 * (intr.fx + intr.fy) * depth_noise(z) / np.maximum(z, 0.1) if depth_noise else np.zeros(len(z))
    w = np.repeat(1.0 / (pixel_sigma ** 2 + point_px ** 2), 2)
    r0 = residuals(np.zeros(6))
    eps = np.array([1e-4] * 3 + [1e-5] * 3)
    J = np.stack([(residuals(np.eye(6)[i] * eps[i]) - r0) / eps[i] for i in range(6)], 1)
    info = J.T @ (J * w[:, None])
    try:
        cov = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        cov = np.linalg.pinv(info)
    if common_pixel_sigma > 0:
        # independent pixel noise averages out over hundreds of points, so the pose is claimed exact along the
        # direction that moves them all alike; one shift shared by every point does not: pushed through the same
        # least squares (G: pose change per pixel of shift), it restores that direction's width (synthetic demo
        # scenes: 71-86 % of right poses inside the 6-DoF 95 % ellipsoid, 96-100 % with it; docs/measurements.md
        # "Covariance");
        # a shift of (du, dv) moves every residual pair alike, so its column in Jᵀ W sums over the points
        G = cov @ (J.T * w).reshape(6, -1, 2).sum(1)
        cov = cov + common_pixel_sigma ** 2 * (G @ G.T)
    cov = 0.5 * (cov + cov.T)
    # the map's pose error does not average out over points: its position part moves every point of a keyframe
    # together, its orientation part moves them by the angle times their range (the lever arm, a few cm at 3 m
    # for 1 deg) — and the query's pose follows its points; the errors of `views` keyframes with independent pose
    # errors average (1/sqrt(views))
    lever = np.radians(map_sigma_deg) * float(np.median(np.maximum(z, 0.0))) / np.sqrt(views) if len(z) else 0.0
    cov[:3, :3] += np.eye(3) * (map_sigma_m ** 2 + lever ** 2)
    cov[3:, 3:] += np.eye(3) * np.radians(map_sigma_deg) ** 2
    return cov


def split_half_covariance(T_map_cam: np.ndarray, uv: np.ndarray, X: np.ndarray, intr: Intrinsics,
                          loss_scale_px: float, min_points: int = 6) -> np.ndarray:
    """What the inliers disagree on, in the parametrisation of pose_covariance: the pose refined on the top and the
    bottom half of the inliers (and on the left and right halves), their difference δ taken as one sample of an
    error the first-order model does not see (lens model, a rolling shutter, a keyframe's pose or depth off, points
    on a moving part). Two independent halves each hold half the information, so δ has about 4x the full pose's
    covariance: δδᵀ/4 per split. Zero when a half has too few points to be refined."""
    uv, X = np.asarray(uv, np.float64), np.asarray(X, np.float64)
    out = np.zeros((6, 6))
    if len(uv) < 2 * min_points:
        return out
    camera = _pinhole(intr)
    start = poselib.CameraPose()
    T_cam_map = invert(np.asarray(T_map_cam, np.float64))
    start.R, start.t = T_cam_map[:3, :3], T_cam_map[:3, 3]
    bundle = {"loss_type": "CAUCHY", "loss_scale": float(loss_scale_px), "max_iterations": 25}
    for axis in (0, 1):  # left / right, then top / bottom
        upper = uv[:, axis] > np.median(uv[:, axis])
        halves = []
        for part in (upper, ~upper):
            if part.sum() < min_points:
                return np.zeros((6, 6))
            pose, _ = poselib.refine_absolute_pose(uv[part], X[part], start, camera, bundle)
            halves.append(invert(make_T(np.asarray(pose.R), np.asarray(pose.t))))
        a, b = halves
        d = np.concatenate([a[:3, 3] - b[:3, 3], Rotation.from_matrix(a[:3, :3] @ b[:3, :3].T).as_rotvec()])
        out += np.outer(d, d) / 4.0
    return out
