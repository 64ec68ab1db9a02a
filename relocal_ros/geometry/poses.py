"""Rigid transforms as 4x4 numpy arrays. Naming: T_a_b maps points from frame b into frame a
(so a camera pose camera-to-map is T_map_cam). Quaternions are (x, y, z, w) as in TUM and ROS."""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def make_T(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t).reshape(3)
    return T


def invert(T: np.ndarray) -> np.ndarray:
    R, t = T[:3, :3], T[:3, 3]
    return make_T(R.T, -R.T @ t)


def T_from_tq(t, q_xyzw) -> np.ndarray:
    return make_T(Rotation.from_quat(np.asarray(q_xyzw, dtype=float)).as_matrix(), t)


def tq_from_T(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q = Rotation.from_matrix(T[:3, :3]).as_quat()
    if q[3] < 0:  # canonical sign so files are reproducible
        q = -q
    return T[:3, 3].copy(), q


def is_rigid(T: np.ndarray, tol: float = 1e-3) -> bool:
    T = np.asarray(T, dtype=float)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        return False
    R = T[:3, :3]
    return (np.allclose(R @ R.T, np.eye(3), atol=tol) and abs(np.linalg.det(R) - 1) < tol
            and np.allclose(T[3], [0, 0, 0, 1], atol=tol))


def orthonormalize(T: np.ndarray) -> np.ndarray:
    """Nearest rigid transform (SVD), e.g. for 7-Scenes poses printed with 7 digits."""
    U, _, Vt = np.linalg.svd(T[:3, :3])
    R = U @ Vt
    if np.linalg.det(R) < 0:
        R = U @ np.diag([1, 1, -1]) @ Vt
    return make_T(R, T[:3, 3])


def pose_error(T_est: np.ndarray, T_gt: np.ndarray) -> tuple[float, float]:
    """(translation error in metres, rotation error in degrees) between two camera-to-world poses."""
    dt = float(np.linalg.norm(T_est[:3, 3] - T_gt[:3, 3]))
    dR = T_est[:3, :3].T @ T_gt[:3, :3]
    cos = np.clip((np.trace(dR) - 1) / 2, -1.0, 1.0)
    return dt, float(np.degrees(np.arccos(cos)))


