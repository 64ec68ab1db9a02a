"""Camera poses in a scene, camera-to-world with OpenCV axes (x right, y down, z forward) in a z-up world.
Dense: 6-DoF poses (height, pitch and roll vary); sparse: a ground robot (x, y, yaw at a fixed height), the two
sampling modes of the ExReNet paper. Every pose is checked before use: inside a room, at least 0.4 m from walls and
furniture, and looking at textured content at a distance (a thumbnail ray cast rejects views that stare at a
surface closer than 0.5 m, at mostly floor/ceiling, or out of the house)."""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from relocal_ros.data.synth.raycast import cast
from relocal_ros.geometry.camera import Intrinsics
from relocal_ros.geometry.poses import make_T

# world (z up) <- camera looking along world +x with zero pitch/roll: cam z = world x, cam x = -world y, cam y = -z
_BASE = np.column_stack([[0, -1, 0], [0, 0, -1], [1, 0, 0]]).astype(float)
MIN_CLEARANCE = 0.4     # metres from any wall or piece of furniture
SPARSE_HEIGHT = 1.0     # the ground robot's camera height


def scene_intrinsics(width: int, height: int) -> Intrinsics:
    """The Kinect / 7-Scenes field of view (f = 525 px at 640 wide) at any resolution, ideal pinhole."""
    if width <= 0 or height <= 0:
        raise ValueError(f"invalid image size {width}x{height}")
    f = 525.0 * width / 640.0
    return Intrinsics(f, f, (width - 1) / 2, (height - 1) / 2, width, height)


def camera_pose(x, y, z, yaw, pitch=0.0, roll=0.0) -> np.ndarray:
    """yaw about world z (0 = looking along +x), pitch up positive, roll about the viewing axis; radians."""
    R_world = Rotation.from_euler("ZYX", [yaw, -pitch, roll]).as_matrix()
    return make_T(R_world @ _BASE, [x, y, z])


def acceptable_view(scene, T: np.ndarray, intr: Intrinsics, min_clearance: float = MIN_CLEARANCE,
                    min_depth: float = 0.5, min_median_depth: float = 1.0, max_floor_ceiling: float = 0.5) -> bool:
    x, y, z = T[:3, 3]
    room = scene.room_at(x, y)
    if room is None or not 0.3 < z < room.height - 0.3 or scene.clearance(x, y) < min_clearance:
        return False
    thumb = Intrinsics(intr.fx * 32 / intr.width, intr.fy * 32 / intr.width, (intr.cx + 0.5) * 32 / intr.width - 0.5,
                       (intr.cy + 0.5) * 32 / intr.width - 0.5, 32, max(2, round(32 * intr.height / intr.width)))
    depth, index, *_ = cast(scene.boxes, T, thumb)
    if (index < 0).any() or depth.min() < min_depth or np.median(depth) < min_median_depth:
        return False
    kinds = np.array([b.kind for b in scene.boxes])[index]
    return float(np.isin(kinds, ("floor", "ceiling")).mean()) <= max_floor_ceiling


def _dense_pose(x, y, yaw, rng):
    return camera_pose(x, y, rng.uniform(1.2, 1.7), yaw, rng.normal(-0.1, 0.12), rng.normal(0, 0.06))


def ellipse_walk(scene, room, n, rng, intr: Intrinsics, scale, dense=True, phase=0.0, margin=0.6, tries=12):
    """n poses on an ellipse around the room's centre, looking outwards at the walls and furniture (with noise).
    A rejected pose is retried closer to the centre with another heading; the walk keeps its order."""
    cx, cy = (room.x0 + room.x1) / 2, (room.y0 + room.y1) / 2
    ax = max((room.x1 - room.x0) / 2 - margin, 0.2) * scale
    ay = max((room.y1 - room.y0) / 2 - margin, 0.2) * scale
    poses = []
    for i in range(n):
        a = phase + 2 * np.pi * i / n
        for k in range(tries):
            shrink = 1.0 - 0.07 * k
            x, y = cx + shrink * ax * np.cos(a), cy + shrink * ay * np.sin(a)
            yaw = a + rng.normal(0, 0.35 + 0.1 * k)
            T = _dense_pose(x, y, yaw, rng) if dense else camera_pose(x, y, SPARSE_HEIGHT, yaw)
            if acceptable_view(scene, T, intr):
                break
        poses.append(T)  # after all tries the last candidate stands: the walk must not skip a beat
    return poses


def random_pose(scene, rng, intr: Intrinsics, dense: bool, room=None, tries: int = 200) -> np.ndarray:
    """A uniformly drawn acceptable pose in a (random) room: 6-DoF when dense, x/y/yaw at fixed height when sparse."""
    for _ in range(tries):
        r = room if room is not None else scene.rooms[rng.integers(len(scene.rooms))]
        x = rng.uniform(r.x0 + MIN_CLEARANCE, r.x1 - MIN_CLEARANCE)
        y = rng.uniform(r.y0 + MIN_CLEARANCE, r.y1 - MIN_CLEARANCE)
        yaw = rng.uniform(-np.pi, np.pi)
        T = _dense_pose(x, y, yaw, rng) if dense else camera_pose(x, y, SPARSE_HEIGHT, yaw)
        if acceptable_view(scene, T, intr):
            return T
    raise RuntimeError(f"no acceptable camera pose found in {tries} tries (scene seed {scene.seed})")


def corner_views(scene, room, intr: Intrinsics, height: float = SPARSE_HEIGHT, margin: float = 0.6):
    """The sparse 'four corner' references: one per room corner, looking at the room's centre. A corner taken by
    furniture moves along the diagonal towards the centre until the camera is clear of it."""
    cx, cy = (room.x0 + room.x1) / 2, (room.y0 + room.y1) / 2
    poses = []
    for x0, y0 in ((room.x0 + margin, room.y0 + margin), (room.x1 - margin, room.y0 + margin),
                   (room.x1 - margin, room.y1 - margin), (room.x0 + margin, room.y1 - margin)):
        for f in np.linspace(0.0, 0.8, 17):
            x, y = x0 + f * (cx - x0), y0 + f * (cy - y0)
            T = camera_pose(x, y, height, np.arctan2(cy - y, cx - x))
            if acceptable_view(scene, T, intr, min_median_depth=0.8):
                break
        poses.append(T)
    return poses


def wide_baseline_queries(scene, map_poses, n, rng, intr: Intrinsics, offset=(0.5, 1.5), turn_deg=(30.0, 60.0),
                          tries: int = 400) -> list:
    """n dense query poses, each leaving a map pose by 0.5-1.5 m (horizontally, random direction, height redrawn)
    and turned 30-60 deg in yaw either way: the viewpoint change of a robot that comes back along another path."""
    out = []
    for _ in range(n):
        for _ in range(tries):
            M = map_poses[rng.integers(len(map_poses))]
            a, r = rng.uniform(-np.pi, np.pi), rng.uniform(*offset)
            x, y = M[0, 3] + r * np.cos(a), M[1, 3] + r * np.sin(a)
            view = M[:3, :3] @ np.array([0.0, 0.0, 1.0])
            yaw = np.arctan2(view[1], view[0]) + rng.choice([-1, 1]) * np.radians(rng.uniform(*turn_deg))
            T = _dense_pose(x, y, yaw, rng)
            if acceptable_view(scene, T, intr):
                out.append(T)
                break
        else:
            raise RuntimeError(f"no acceptable wide-baseline query found in {tries} tries (scene seed {scene.seed})")
    return out


def trajectories(scene, seed: int, n_map: int, n_query: int, intr: Intrinsics, n_sparse_queries: int = 12,
                 n_wide_queries: int = 0) -> dict:
    """{sequence name: [T_world_cam]}: seq-01 mapping walk (two loops per room, outer and inner), seq-02 queries
    (a loop between them with other phase, heights and headings, so every query has map views nearby), seq-03
    the sparse case: four corner references of the first room, then ground-robot queries in that room; seq-04
    (n_wide_queries > 0) wide-baseline queries (wide_baseline_queries)."""
    if n_map < 2 * len(scene.rooms) or n_query < len(scene.rooms):
        raise ValueError(f"need at least {2 * len(scene.rooms)} map and {len(scene.rooms)} query frames")
    rng = np.random.default_rng([seed, 1])
    seqs = {"seq-01": [], "seq-02": [], "seq-03": []}
    for i, r in enumerate(scene.rooms):
        k = n_map // len(scene.rooms) + (i < n_map % len(scene.rooms))
        seqs["seq-01"] += ellipse_walk(scene, r, k - k // 2, rng, intr, scale=0.75)
        seqs["seq-01"] += ellipse_walk(scene, r, k // 2, rng, intr, scale=0.3, phase=0.4)
        q = n_query // len(scene.rooms) + (i < n_query % len(scene.rooms))
        seqs["seq-02"] += ellipse_walk(scene, r, q, rng, intr, scale=0.5, phase=0.17)
    room = scene.rooms[0]
    seqs["seq-03"] = corner_views(scene, room, intr) + [random_pose(scene, rng, intr, dense=False, room=room)
                                                        for _ in range(n_sparse_queries)]
    if n_wide_queries:  # drawn last, from their own stream: seq-01..03 stay byte-identical with or without them
        seqs["seq-04"] = wide_baseline_queries(scene, seqs["seq-01"], n_wide_queries, np.random.default_rng([seed, 4]),
                                               intr)
    return seqs
