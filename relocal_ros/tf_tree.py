"""A small transform tree with time-stamped history: the fallback for tf2_ros where it is not installed (PyPI
ROS 2), fed from /tf and /tf_static by the nodes. Interpolates each edge between its two bracketing samples
(SLERP), answers None rather than extrapolating beyond `tolerance_s`, and forgets the dynamic history when time
jumps backwards (bag loop, simulated time reset) so that images are never paired with stale transforms."""
from __future__ import annotations

import threading
from bisect import bisect_left

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from relocal_ros.geometry.poses import invert, make_T


class TransformTree:
    def __init__(self, cache_s: float = 10.0, tolerance_s: float = 0.05, clock_jump_s: float = 1.0):
        self.cache_ns = int(cache_s * 1e9)
        self.tolerance_ns = int(tolerance_s * 1e9)
        self.clock_jump_ns = int(clock_jump_s * 1e9)
        self._parent: dict[str, str] = {}
        self._static: dict[str, np.ndarray] = {}
        self._times: dict[str, list[int]] = {}
        self._poses: dict[str, list[np.ndarray]] = {}
        self._latest_ns = None
        self._lock = threading.Lock()
        self.clock_resets = 0

    def set_transform(self, parent: str, child: str, T_parent_child: np.ndarray, t_ns: int, static: bool = False):
        with self._lock:
            self._parent[child] = parent
            if static:
                self._static[child] = np.asarray(T_parent_child, float)
                return
            newest = self._times.get(child)
            # a jump is judged per edge: edges are published at different delays (map->odom seconds after the
            # image under load), so only an edge going back in time on itself means a loop or a reset
            if newest and t_ns < newest[-1] - self.clock_jump_ns:
                self._times.clear()
                self._poses.clear()
                self.clock_resets += 1
                self._latest_ns = None
            self._latest_ns = t_ns if self._latest_ns is None else max(self._latest_ns, t_ns)
            times = self._times.setdefault(child, [])
            poses = self._poses.setdefault(child, [])
            i = bisect_left(times, t_ns)
            if i < len(times) and times[i] == t_ns:
                poses[i] = np.asarray(T_parent_child, float)
            else:
                times.insert(i, t_ns)
                poses.insert(i, np.asarray(T_parent_child, float))
            cut = bisect_left(times, self._latest_ns - self.cache_ns)
            if cut:
                del times[:cut], poses[:cut]

    def clear(self) -> None:
        with self._lock:
            self._times.clear()
            self._poses.clear()
            self._latest_ns = None

    def may_still_arrive(self, t_ns: int) -> bool:
        """True while t is newer than every dynamic sample received: data for it may be on its way."""
        return self._latest_ns is None or t_ns > self._latest_ns

    def has_frame(self, frame: str) -> bool:
        return frame in self._parent or frame in self._parent.values()

    def _edge(self, child: str, t_ns: int) -> np.ndarray | None:
        if child in self._static:
            return self._static[child]
        times, poses = self._times.get(child, []), self._poses.get(child, [])
        if not times:
            return None
        i = bisect_left(times, t_ns)
        if i < len(times) and times[i] == t_ns:
            return poses[i]
        if i == 0:
            return poses[0] if times[0] - t_ns <= self.tolerance_ns else None
        if i == len(times):
            return poses[-1] if t_ns - times[-1] <= self.tolerance_ns else None
        t0, t1 = times[i - 1], times[i]
        a = (t_ns - t0) / (t1 - t0)
        R = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([poses[i - 1][:3, :3], poses[i][:3, :3]])))([a])
        return make_T(R.as_matrix()[0], (1 - a) * poses[i - 1][:3, 3] + a * poses[i][:3, 3])

    def _chain_to_root(self, frame: str, t_ns: int):
        """[(frame, T_frame_root ... )]: list of (ancestor, T_ancestor_frame) from the frame up to its root."""
        chain = [(frame, np.eye(4))]
        seen = {frame}
        while chain[-1][0] in self._parent:
            child = chain[-1][0]
            parent = self._parent[child]
            E = self._edge(child, t_ns)
            if E is None or parent in seen:
                return chain, False
            chain.append((parent, E @ chain[-1][1]))
            seen.add(parent)
        return chain, True

    def lookup(self, target: str, source: str, t_ns: int) -> np.ndarray | None:
        """T_target_source at time t (maps points from `source` into `target`), or None."""
        with self._lock:
            if target == source:
                return np.eye(4)
            a, _ = self._chain_to_root(source, t_ns)
            b, _ = self._chain_to_root(target, t_ns)
            in_b = {f: T for f, T in b}
            for f, T_f_source in a:
                if f in in_b:
                    return invert(in_b[f]) @ T_f_source
            return None
