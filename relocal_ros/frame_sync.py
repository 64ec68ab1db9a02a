"""Pairs colour, aligned depth and camera_info messages by stamp, keeping only the newest complete frame: a busy
consumer gets the latest image and the stale ones are counted as dropped, never queued without bound. Plain Python
(no ROS) so the pairing rules are tested on their own; the nodes feed it from their subscriptions."""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass
class SyncedFrame:
    stamp_ns: int
    color: Any
    depth: Any | None
    camera_info: Any
    extra: Any | None = None


class FrameSynchronizer:
    def __init__(self, use_depth: bool = True, max_dt_s: float = 0.02, max_pending: int = 8,
                 clock_jump_s: float = 1.0, need_extra: bool = False, depth_optional_after_s: float | None = None):
        """depth_optional_after_s: None, every colour image waits for its depth (mapping needs it); a number, a
        colour image stamped that long after the newest depth image received (or before any) goes on alone: a
        camera without aligned depth, or whose depth stream stopped, still gets colour-only answers."""
        self.use_depth, self.need_extra = use_depth, need_extra
        self.depth_optional_ns = None if depth_optional_after_s is None else int(depth_optional_after_s * 1e9)
        self._newest_depth_ns = None
        self.colour_only = 0      # colour images handed out without depth because no depth stream was alive
        self.max_dt_ns = int(max_dt_s * 1e9)
        self.max_pending = max_pending
        self.clock_jump_ns = int(clock_jump_s * 1e9)
        self._colors: OrderedDict[int, Any] = OrderedDict()
        self._depths: OrderedDict[int, Any] = OrderedDict()
        self._extras: OrderedDict[int, Any] = OrderedDict()
        self._info = None
        self._latest_ns = None
        self._lock = threading.Lock()
        self.dropped = 0          # complete or incomplete frames superseded by a newer one
        self.clock_resets = 0
        self.stale = 0            # images not newer than one already handed out: duplicated or out of order
        self._last_popped_ns = None

    def _check_clock(self, t_ns: int) -> None:
        if self._latest_ns is not None and t_ns < self._latest_ns - self.clock_jump_ns:
            # bag loop or simulated time reset: pairing across the jump would join unrelated data
            self._colors.clear()
            self._depths.clear()
            self._extras.clear()
            self._newest_depth_ns = None
            self.clock_resets += 1
            self._latest_ns = t_ns
            self._last_popped_ns = None
        self._latest_ns = t_ns if self._latest_ns is None else max(self._latest_ns, t_ns)

    @staticmethod
    def _bounded_put(d: OrderedDict, t_ns: int, item, limit: int) -> int:
        d[t_ns] = item
        evicted = 0
        while len(d) > limit:
            d.popitem(last=False)
            evicted += 1
        return evicted

    def add_color(self, t_ns: int, msg) -> None:
        """Returns False (and counts it as stale) for an image no newer than one already handed out: a duplicate
        or an out-of-order delivery would give a second or an older pose after a newer one."""
        with self._lock:
            self._check_clock(t_ns)
            if (self._last_popped_ns is not None and t_ns <= self._last_popped_ns) or t_ns in self._colors:
                self.stale += 1
                return False
            self.dropped += self._bounded_put(self._colors, t_ns, msg, self.max_pending)
            return True

    def add_depth(self, t_ns: int, msg) -> None:
        with self._lock:
            self._check_clock(t_ns)
            self._bounded_put(self._depths, t_ns, msg, self.max_pending * 2)
            self._newest_depth_ns = t_ns if self._newest_depth_ns is None else max(self._newest_depth_ns, t_ns)

    def _depth_expected(self, t_ns: int) -> bool:
        if not self.use_depth:
            return False
        if self.depth_optional_ns is None:
            return True
        return self._newest_depth_ns is not None and t_ns - self._newest_depth_ns <= self.depth_optional_ns

    def add_extra(self, t_ns: int, item) -> None:
        """A third stamped stream that must be paired too (e.g. the mapping pose of the keyframe indexer)."""
        with self._lock:
            self._check_clock(t_ns)
            self._bounded_put(self._extras, t_ns, item, self.max_pending * 2)

    def set_camera_info(self, msg) -> None:
        with self._lock:
            self._info = msg

    @property
    def has_camera_info(self) -> bool:
        return self._info is not None

    def _match(self, d: OrderedDict, t_ns: int):
        best = min(d, key=lambda k: abs(k - t_ns), default=None)
        return best if best is not None and abs(best - t_ns) <= self.max_dt_ns else None

    def pop_latest(self) -> SyncedFrame | None:
        """The newest colour image whose partners have arrived; older colour images are dropped. An image whose
        depth may still come stays pending (until max_pending newer images push it out)."""
        with self._lock:
            if self._info is None:
                return None
            for t_ns in reversed(list(self._colors)):
                depth_key = self._match(self._depths, t_ns) if self.use_depth else None
                extra_key = self._match(self._extras, t_ns) if self.need_extra else None
                if (depth_key is None and self._depth_expected(t_ns)) or (self.need_extra and extra_key is None):
                    continue
                if self.use_depth and depth_key is None:
                    self.colour_only += 1
                older = [k for k in self._colors if k < t_ns]
                self.dropped += len(older)
                for k in older:
                    del self._colors[k]
                color = self._colors.pop(t_ns)
                self._last_popped_ns = t_ns
                depth = self._depths.pop(depth_key) if depth_key is not None else None
                extra = self._extras.pop(extra_key) if extra_key is not None else None
                for d in (self._depths, self._extras):
                    for k in [k for k in d if k < t_ns - self.max_dt_ns]:
                        del d[k]
                return SyncedFrame(t_ns, color, depth, self._info, extra)
            return None
