"""TUM trajectory files (`timestamp tx ty tz qx qy qz qw`, camera-to-world) and pose lookup at image times."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from relocal_ros.geometry.poses import T_from_tq, make_T, tq_from_T


def read_tum_trajectory(path: Path) -> tuple[list[str], np.ndarray]:
    """-> (stamps as written, N x 4 x 4 poses). Comment lines (#) and blank lines are skipped."""
    stamps, poses = [], []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        if len(parts) != 8:
            raise ValueError(f"{path}:{lineno}: expected 8 fields 'timestamp tx ty tz qx qy qz qw', got {len(parts)}")
        vals = [float(p) for p in parts[1:]]
        if not np.all(np.isfinite(vals)) or np.linalg.norm(vals[3:]) < 1e-6:
            raise ValueError(f"{path}:{lineno}: non-finite value or zero quaternion")
        stamps.append(parts[0])
        poses.append(T_from_tq(vals[:3], vals[3:]))
    return stamps, np.array(poses).reshape(-1, 4, 4)


def format_tum_line(stamp: str, T: np.ndarray) -> str:
    t, q = tq_from_T(T)
    return f"{stamp} " + " ".join(f"{v:.6f}" for v in (*t, *q))


def format_covariance_line(stamp: str, covariance: np.ndarray) -> str:
    """COV.txt line: the stamp as in EST.txt, then the 36 entries of the row-major 6x6 covariance (ROS order)."""
    return f"{stamp} " + " ".join(f"{v:.9g}" for v in np.asarray(covariance, float).reshape(36))


def read_covariances(path: Path) -> dict[str, np.ndarray]:
    """COV.txt -> {stamp as written: 6x6}."""
    out = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 37:
            raise ValueError(f"{path}:{lineno}: expected a stamp and 36 covariance entries, got {len(parts)} fields")
        C = np.array([float(v) for v in parts[1:]]).reshape(6, 6)
        if not np.all(np.isfinite(C)):
            raise ValueError(f"{path}:{lineno}: non-finite covariance entry")
        out[parts[0]] = C
    return out


def write_tum_trajectory(path: Path, stamps, poses, header: str = "") -> None:
    lines = [f"# {h}" for h in header.splitlines()] + [format_tum_line(s, T) for s, T in zip(stamps, poses)]
    Path(path).write_text("\n".join(lines) + "\n")


class PoseTrack:
    """A time-stamped pose track (e.g. 100 Hz motion capture) queried at image times by SLERP between the two
    bracketing samples. Refuses (None) when the bracketing samples are further apart than `max_gap` seconds, since
    interpolating across a gap during fast rotation gives poses off by degrees."""

    def __init__(self, times: np.ndarray, poses: np.ndarray, max_gap: float = 0.05):
        order = np.argsort(times)
        self.times = np.asarray(times, dtype=float)[order]
        self.poses = np.asarray(poses)[order]
        self.max_gap = max_gap

    @classmethod
    def from_file(cls, path: Path, max_gap: float = 0.05) -> "PoseTrack":
        stamps, poses = read_tum_trajectory(path)
        return cls(np.array([float(s) for s in stamps]), poses, max_gap)

    def __len__(self) -> int:
        return len(self.times)

    def at(self, t: float) -> np.ndarray | None:
        if len(self.times) == 0:
            return None
        i = int(np.searchsorted(self.times, t))
        if i < len(self.times) and abs(self.times[i] - t) < 1e-6:
            return self.poses[i].copy()
        if i == 0 or i == len(self.times):
            return None
        t0, t1 = self.times[i - 1], self.times[i]
        if t1 - t0 > self.max_gap:
            return None
        a = (t - t0) / (t1 - t0)
        rots = Rotation.from_matrix(np.stack([self.poses[i - 1][:3, :3], self.poses[i][:3, :3]]))
        R = Slerp([0.0, 1.0], rots)([a]).as_matrix()[0]
        p = (1 - a) * self.poses[i - 1][:3, 3] + a * self.poses[i][:3, 3]
        return make_T(R, p)
