"""Mapping poses as robots publish them, without ROS: a stamped history of one frame's pose in some frame
(amcl_pose: base_link in map; nav_msgs/Odometry: child_frame_id in odom; a SLAM system's PoseStamped: the camera
in map), interpolated to an image's stamp (linear position, SLERP rotation), and composed to the camera's pose in
the map with the transforms TF gives: T_map_cam(t) = T_map_header(t) · T_header_frame(t) · T_frame_cam.

Never extrapolated: an image before the first or after the newest pose (beyond `tolerance_s`) has no pose yet,
and two poses further apart than `max_interval_s` are not interpolated across (the robot may have turned)."""
from __future__ import annotations

import threading
from bisect import bisect_left, insort
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from relocal_ros.geometry.poses import make_T

POSE_MSG_TYPES = ("PoseStamped", "PoseWithCovarianceStamped", "Odometry")


@dataclass(frozen=True)
class StampedPose:
    stamp_ns: int
    T: np.ndarray          # header frame <- pose frame
    header_frame: str
    pose_frame: str        # the frame whose pose it is ('' when the message does not say: PoseStamped & co.)


def pose_from_msg(msg, msg_type: str) -> tuple[int, np.ndarray, str, str]:
    """(stamp ns, 4x4, header frame, child frame or '') from a PoseStamped, PoseWithCovarianceStamped or
    Odometry message (rclpy or any object with the same fields)."""
    from relocal_ros.geometry.poses import T_from_tq
    if msg_type == "PoseStamped":
        p, child = msg.pose, ""
    elif msg_type == "PoseWithCovarianceStamped":
        p, child = msg.pose.pose, ""
    elif msg_type == "Odometry":
        p, child = msg.pose.pose, str(msg.child_frame_id)
    else:
        raise ValueError(f"mapping pose type must be one of {POSE_MSG_TYPES}, got {msg_type!r}")
    T = T_from_tq([p.position.x, p.position.y, p.position.z],
                  [p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w])
    stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
    return stamp, T, str(msg.header.frame_id), child


class PoseHistory:
    def __init__(self, max_interval_s: float = 0.5, tolerance_s: float = 0.005, cache_s: float = 30.0,
                 clock_jump_s: float = 1.0):
        self.max_interval_ns = int(max_interval_s * 1e9)
        self.tolerance_ns = int(tolerance_s * 1e9)
        self.cache_ns = int(cache_s * 1e9)
        self.clock_jump_ns = int(clock_jump_s * 1e9)
        self._times: list[int] = []
        self._poses: dict[int, StampedPose] = {}
        self._lock = threading.Lock()
        self.clock_resets = 0
        self.count = 0

    def add(self, pose: StampedPose) -> None:
        with self._lock:
            self.count += 1
            if self._times and pose.stamp_ns < self._times[-1] - self.clock_jump_ns:
                self._times.clear()   # bag loop or simulation reset
                self._poses.clear()
                self.clock_resets += 1
            if pose.stamp_ns not in self._poses:
                insort(self._times, pose.stamp_ns)
            self._poses[pose.stamp_ns] = pose
            cut = bisect_left(self._times, self._times[-1] - self.cache_ns)
            for t in self._times[:cut]:
                del self._poses[t]
            del self._times[:cut]

    def newest_ns(self) -> int | None:
        with self._lock:
            return self._times[-1] if self._times else None

    def at(self, t_ns: int) -> StampedPose | None:
        """The pose at t: exact, interpolated between the two samples around it (at most max_interval apart, same
        frames), or the nearest within tolerance; else None."""
        with self._lock:
            times = self._times
            if not times:
                return None
            i = bisect_left(times, t_ns)
            if i < len(times) and times[i] == t_ns:
                return self._poses[t_ns]
            near = [k for k in (i - 1, i) if 0 <= k < len(times) and abs(times[k] - t_ns) <= self.tolerance_ns]
            if 0 < i < len(times):
                a, b = self._poses[times[i - 1]], self._poses[times[i]]
                if b.stamp_ns - a.stamp_ns <= self.max_interval_ns and \
                        (a.header_frame, a.pose_frame) == (b.header_frame, b.pose_frame):
                    return StampedPose(t_ns, interpolate(a.T, b.T, (t_ns - a.stamp_ns) / (b.stamp_ns - a.stamp_ns)),
                                       a.header_frame, a.pose_frame)
            if near:
                k = min(near, key=lambda k: abs(times[k] - t_ns))
                p = self._poses[times[k]]
                return StampedPose(t_ns, p.T, p.header_frame, p.pose_frame)
            return None

    def clear(self) -> None:
        with self._lock:
            self._times.clear()
            self._poses.clear()


def interpolate(T0: np.ndarray, T1: np.ndarray, a: float) -> np.ndarray:
    R = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([T0[:3, :3], T1[:3, :3]])))([a]).as_matrix()[0]
    return make_T(R, (1 - a) * T0[:3, 3] + a * T1[:3, 3])


def camera_pose_in_map(pose: StampedPose, T_map_header: np.ndarray | None, T_frame_cam: np.ndarray | None):
    """T_map_cam from a mapping pose and the two transforms TF gives (None: unknown -> None)."""
    if T_map_header is None or T_frame_cam is None:
        return None
    return T_map_header @ pose.T @ T_frame_cam
