"""Camera poses in a scene, camera-to-world with OpenCV axes (x right, y down, z forward) in a z-up world.
Dense: 6-DoF walks (height, pitch and roll vary); sparse: a ground robot (x, y, yaw at a fixed height), as in the
ExReNet paper's two sampling modes."""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from relocal_ros.geometry.poses import make_T

# world (z up) <- camera looking along world +x with zero pitch/roll: cam z = world x, cam x = -world y, cam y = -z
_BASE = np.column_stack([[0, -1, 0], [0, 0, -1], [1, 0, 0]]).astype(float)


def camera_pose(x, y, z, yaw, pitch=0.0, roll=0.0) -> np.ndarray:
    """yaw about world z (0 = looking along +x), pitch up positive, roll about the viewing axis; radians."""
    R_world = Rotation.from_euler("ZYX", [yaw, -pitch, roll]).as_matrix()
    return make_T(R_world @ _BASE, [x, y, z])


def ellipse_walk(room, n, rng, scale, outward=True, dense=True, phase=0.0, margin=0.6):
    cx, cy = (room.x0 + room.x1) / 2, (room.y0 + room.y1) / 2
    ax = max((room.x1 - room.x0) / 2 - margin, 0.2) * scale
    ay = max((room.y1 - room.y0) / 2 - margin, 0.2) * scale
    poses = []
    for i in range(n):
        a = phase + 2 * np.pi * i / n
        x, y = cx + ax * np.cos(a), cy + ay * np.sin(a)
        look = a if outward else a + np.pi
        yaw = look + rng.normal(0, 0.35)
        if dense:
            poses.append(camera_pose(x, y, rng.uniform(1.2, 1.7), yaw, rng.normal(-0.1, 0.12), rng.normal(0, 0.06)))
        else:
            poses.append(camera_pose(x, y, 1.0, yaw))
    return poses


def corner_views(room, height=1.0, margin=0.6):
    """Four sparse references from the room's corners, looking at its centre (the 'four corner' case)."""
    cx, cy = (room.x0 + room.x1) / 2, (room.y0 + room.y1) / 2
    poses = []
    for x, y in ((room.x0 + margin, room.y0 + margin), (room.x1 - margin, room.y0 + margin),
                 (room.x1 - margin, room.y1 - margin), (room.x0 + margin, room.y1 - margin)):
        poses.append(camera_pose(x, y, height, np.arctan2(cy - y, cx - x)))
    return poses
