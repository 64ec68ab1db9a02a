"""The pose solver's output rules, without ROS (unit-tested on their own):

* MapOdomKeeper: the latest map→odom (or map→base_link where there is no odom frame) and when to send it again.
  Costmaps and controllers look transforms up at "now"; a transform sent only at image times (and not at all while
  refusing) is stale for them. As AMCL does, the last accepted transform is re-sent from a timer, post-dated by
  `transform_tolerance`, until a newer accepted pose replaces it. The first one is also sent at its image's stamp
  so that lookups between that stamp and now + tolerance succeed at once (later ones are not: a sample older than
  those already post-dated would be interpolated with them).
* OneShotRequests: `~/relocalize` calls, each answered by exactly one published initial pose.
* base_tf_problem: what to say while base_link→camera is unknown (never publish the camera's pose as the base's).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from relocal_ros.geometry.poses import invert


@dataclass(frozen=True)
class StampedTransform:
    T: np.ndarray           # parent_T_child
    parent: str
    child: str
    stamp_ns: int


def map_odom_from(T_map_base: np.ndarray, T_odom_base: np.ndarray | None) -> np.ndarray:
    """REP-105: map→odom such that map→odom→base equals the estimated map→base at the image time."""
    return T_map_base if T_odom_base is None else T_map_base @ invert(T_odom_base)


class MapOdomKeeper:
    def __init__(self, tolerance_s: float = 0.5):
        self.tolerance_ns = int(round(tolerance_s * 1e9))
        self._lock = threading.Lock()
        self._T = None
        self._parent = self._child = ""
        self.updates = 0
        self.sent = 0

    def update(self, T_parent_child: np.ndarray, parent: str, child: str, image_stamp_ns: int,
               now_ns: int) -> list[StampedTransform]:
        """A newly accepted transform; returns what to send now: stamped now + tolerance, and for the first one
        (or after the frames changed) also at the image stamp."""
        with self._lock:
            first = self._T is None or (parent, child) != (self._parent, self._child)
            self._T, self._parent, self._child = np.array(T_parent_child, float), parent, child
            self.updates += 1
            out = [StampedTransform(self._T, parent, child, now_ns + self.tolerance_ns)]
            if first and image_stamp_ns < now_ns + self.tolerance_ns:
                out.insert(0, StampedTransform(self._T, parent, child, image_stamp_ns))
            self.sent += len(out)
            return out

    def due(self, now_ns: int) -> StampedTransform | None:
        """What the timer re-sends: the latest transform stamped now + tolerance, or None before the first."""
        with self._lock:
            if self._T is None:
                return None
            self.sent += 1
            return StampedTransform(self._T, self._parent, self._child, now_ns + self.tolerance_ns)

    @property
    def latest(self) -> StampedTransform | None:
        with self._lock:
            return None if self._T is None else StampedTransform(self._T, self._parent, self._child, 0)

    def clear(self) -> None:
        with self._lock:
            self._T = None


class OneShotRequests:
    """Counts relocalization requests; take() is True once per request (then the pose goes out on initialpose)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending = 0
        self.requested = self.answered = 0

    def request(self) -> None:
        with self._lock:
            # several calls before the next accepted pose ask for the same thing: one initial pose answers them
            self._pending = 1
            self.requested += 1

    def take(self) -> bool:
        with self._lock:
            if not self._pending:
                return False
            self._pending = 0
            self.answered += 1
            return True

    @property
    def pending(self) -> bool:
        return bool(self._pending)


def base_tf_problem(base_frame: str, camera_frame: str, since_start_s: float, grace_s: float) -> tuple[str, str]:
    """(level, message) while the base→camera transform is unknown: a warning during `grace_s` after start (a
    restarted solver hears /tf_static only after discovery), an error afterwards. Either way no base pose."""
    msg = f"no TF {base_frame} -> {camera_frame or '<empty frame_id>'}"
    if since_start_s < grace_s:
        return "warn", f"{msg} yet (waiting for /tf_static)"
    return "error", f"{msg}: no pose can be published for {base_frame} (publish the camera's mounting transform, " \
                    f"or set allow_camera_pose to get the camera's pose on relocalization/camera_pose)"
