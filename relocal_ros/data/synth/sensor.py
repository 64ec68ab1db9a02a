"""A consumer RGB-D sensor's imperfections applied to rendered frames (the hard benchmark's synthetic scenes):
axial depth noise growing with z² (structured light / active stereo, solver.pnp.depth_sensor_sigma's model), depth
holes along depth edges (the shadow and flying-pixel filtering real sensors leave there) and random dropouts,
linear motion blur of the colour image, and exposure changes (gain, offset, gamma).

Every draw comes from the rng passed in, so a frame's imperfections are reproducible from the scene seed and the
frame index."""
from __future__ import annotations

import cv2
import numpy as np

from relocal_ros.solver.pnp import depth_sensor_sigma


def noisy_depth(depth: np.ndarray, rng: np.random.Generator, edge_jump: float = 0.05,
                hole_rate: float = 0.01) -> np.ndarray:
    d = np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)
    valid = d > 0
    noisy = d + rng.normal(0, 1, d.shape).astype(np.float32) * depth_sensor_sigma(d).astype(np.float32)
    # holes where neighbouring depths jump (both sides, 2 px wide) and sparse random dropouts
    hi = cv2.dilate(d, np.ones((3, 3), np.uint8))
    lo = cv2.erode(np.where(valid, d, np.float32(1e9)), np.ones((3, 3), np.uint8))
    edge = (hi - lo) > edge_jump * np.maximum(d, 1e-3)
    edge = cv2.dilate(edge.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    holes = edge | (rng.random(d.shape) < hole_rate)
    return np.where(valid & ~holes, noisy, 0).astype(np.float32)


def degraded_colour(rgb: np.ndarray, rng: np.random.Generator, max_blur_px: int = 9) -> np.ndarray:
    img = rgb.astype(np.float32) / 255.0
    length = int(rng.integers(1, max_blur_px + 1))
    if length > 1:  # linear motion blur along a random direction
        k = np.zeros((length, length), np.float32)
        k[length // 2, :] = 1.0 / length
        A = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), float(rng.uniform(0, 180)), 1.0)
        k = cv2.warpAffine(k, A, (length, length))
        img = cv2.filter2D(img, -1, k / max(k.sum(), 1e-6))
    gain, offset, gamma = rng.uniform(0.6, 1.4), rng.uniform(-0.05, 0.05), rng.uniform(0.8, 1.25)
    img = np.clip(img * gain + offset, 0, 1) ** gamma
    img = img + rng.normal(0, 0.01, img.shape).astype(np.float32)  # sensor noise
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def apply_sensor_model(rgb: np.ndarray, depth: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return degraded_colour(rgb, rng), noisy_depth(depth, rng)
