"""The one in-memory unit every reader yields and every stage consumes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol

import cv2
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


class FrameFormatError(ValueError):
    """A file's image or depth cannot belong to its source's camera: that frame is refused, not the run."""


# 3DMatch's and SUN3D's camera file: a plain-text 3x3 matrix, read when a folder has no calibration.yaml
CAMERA_MATRIX_FILE = "camera-intrinsics.txt"


def first_image_size(paths, fallback: Intrinsics) -> tuple[int, int]:
    """(width, height) of the first of these images that decodes; the fallback's size when none does (each unreadable
    image is refused on its own later, with its name)."""
    for path in paths:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is not None:
            return img.shape[1], img.shape[0]
    return fallback.width, fallback.height


def check_colour_size(bgr: np.ndarray, intr: Intrinsics, name: str) -> None:
    """Refuse a decoded colour image whose size is not the calibration's: its pixels would be read with another
    camera's focal length and centre, and the pose would be wrong without any check noticing."""
    h, w = bgr.shape[:2]
    if (w, h) != (intr.width, intr.height):
        raise FrameFormatError(f"{name}: image is {w}x{h}, the source's calibration is {intr.width}x{intr.height}")


def depth_in_metres(raw: np.ndarray, size: tuple[int, int], scale: float, name: str) -> np.ndarray:
    """A depth PNG's array -> H x W float32 metres, refused with the reason when it cannot be depth aligned to an
    image of `size` (width, height): several channels, 8 bits (a colour or preview image saved as depth), or
    another resolution (unaligned depth)."""
    if raw.ndim != 2 or raw.dtype not in (np.uint16, np.float32):
        channels = 1 if raw.ndim == 2 else raw.shape[2]
        raise FrameFormatError(f"{name}: depth must be one 16-bit or float channel, got {channels} x {raw.dtype}")
    if (raw.shape[1], raw.shape[0]) != tuple(size):
        raise FrameFormatError(f"{name}: depth is {raw.shape[1]}x{raw.shape[0]}, its colour image "
                               f"{size[0]}x{size[1]} (aligned depth of the same size is needed)")
    return raw.astype(np.float32) / scale
