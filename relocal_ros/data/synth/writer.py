"""Frames on disk in the 7-Scenes layout that every reader of the package understands:
SEQ/frame-XXXXXX.color.png (RGB 8-bit), .depth.png (uint16 millimetres, 0 = no surface), .pose.txt (4x4
camera-to-world, OpenCV axes, metres). PNG encoding is deterministic, so equal frames give byte-identical files."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

DEPTH_SCALE = 1000.0  # depth PNG units per metre


def frame_base(seq_dir: Path, index: int) -> Path:
    return Path(seq_dir) / f"frame-{index:06d}"


def write_frame(base: Path, rgb: np.ndarray, depth: np.ndarray, T_world_cam: np.ndarray | None) -> None:
    """Write base.color.png, base.depth.png and (when a pose is given) base.pose.txt."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or depth.shape != rgb.shape[:2]:
        raise ValueError(f"expected HxWx3 uint8 RGB and HxW depth, got {rgb.shape} {rgb.dtype} and {depth.shape}")
    base = Path(base)
    if not cv2.imwrite(str(base) + ".color.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {base}.color.png")
    # beyond 65.534 m (never indoors) depth is dropped rather than clipped to a wrong value; 65535 means invalid
    mm = np.round(np.nan_to_num(depth, nan=0.0, posinf=0.0) * DEPTH_SCALE)
    mm = np.where((mm > 0) & (mm < 65535), mm, 0).astype(np.uint16)
    if not cv2.imwrite(str(base) + ".depth.png", mm):
        raise OSError(f"could not write {base}.depth.png")
    if T_world_cam is not None:
        np.savetxt(str(base) + ".pose.txt", T_world_cam, fmt="%.9f")
