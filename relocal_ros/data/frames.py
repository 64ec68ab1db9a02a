"""The one in-memory unit every reader yields and every stage consumes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol

import numpy as np

from relocal_ros.geometry.camera import Intrinsics


@dataclass
class RGBDFrame:
    stamp: str                    # the image timestamp exactly as its source writes it (rgb.txt, bag stamp, index)
    rgb: np.ndarray               # H x W x 3 uint8, RGB order
    depth: np.ndarray | None      # H x W float32 metres aligned to rgb; 0 or NaN = no measurement; None = no depth
    intrinsics: Intrinsics
    pose: np.ndarray | None = None  # 4x4 camera-to-world (T_world_cam), None when unknown (query folders)
    name: str = ""                # file name or topic, for messages

    @property
    def time(self) -> float:
        return float(self.stamp)


class FrameSource(Protocol):
    """A finite, re-iterable sequence of frames (a dataset folder, a bag, a synthetic scene)."""
    intrinsics: Intrinsics

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[RGBDFrame]: ...
    def __getitem__(self, i: int) -> RGBDFrame: ...
