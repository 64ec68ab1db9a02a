"""Training pairs as ExReNet samples them: a random reference pose in a room, a second pose near it, kept when the
views overlap by more than o_max (share of scene coordinates within 0.2 m), are closer than d_max and turned by
less than gamma_max. Dense: 6-DoF (30 %, 0.6 m, 30 deg); sparse: ground-robot poses (10 %, no distance bound)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from relocal_ros.data.synth.cameras import camera_pose
from relocal_ros.data.synth.overlap import coordinate_overlap
from relocal_ros.geometry.poses import make_T, pose_error

MODES = {"dense": dict(o_max=0.30, d_max=0.6, gamma_max=30.0), "sparse": dict(o_max=0.10, d_max=np.inf, gamma_max=180.0)}


@dataclass
class Pair:
    T_a: np.ndarray
    T_b: np.ndarray
    rgb_a: np.ndarray
    depth_a: np.ndarray
    rgb_b: np.ndarray
    depth_b: np.ndarray
    overlap: float


def _random_pose(room, rng, dense: bool, margin=0.6):
    x = rng.uniform(room.x0 + margin, room.x1 - margin)
    y = rng.uniform(room.y0 + margin, room.y1 - margin)
    if dense:
        return camera_pose(x, y, rng.uniform(1.1, 1.8), rng.uniform(-np.pi, np.pi), rng.normal(-0.1, 0.15),
                           rng.normal(0, 0.08))
    return camera_pose(x, y, 1.0, rng.uniform(-np.pi, np.pi))


def sample_pair(scene, renderer, rng, mode: str = "dense", max_tries: int = 50) -> Pair | None:
    lim = MODES[mode]
    dense = mode == "dense"
    for _ in range(max_tries):
        room = scene.rooms[rng.integers(len(scene.rooms))]
        Ta = _random_pose(room, rng, dense)
        if dense:  # the second view near the first: a small random motion
            Tb = _perturb(Ta, rng)
        else:
            Tb = _random_pose(room, rng, dense)
        dt, dr = pose_error(Ta, Tb)
        if dt > lim["d_max"] or dr > lim["gamma_max"]:
            continue
        rgb_a, da = renderer.render(Ta)
        rgb_b, db = renderer.render(Tb)
        ov = min(coordinate_overlap(da, Ta, db, Tb, renderer.intr), coordinate_overlap(db, Tb, da, Ta, renderer.intr))
        if ov > lim["o_max"]:
            return Pair(Ta, Tb, rgb_a, da, rgb_b, db, ov)
    return None


def _perturb(T, rng):
    dR = Rotation.from_rotvec(rng.normal(0, np.radians(12), 3)).as_matrix()
    return T @ make_T(dR, rng.normal(0, 0.25, 3))
