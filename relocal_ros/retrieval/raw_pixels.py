"""The raw-pixel retrieval baseline: the whole image shrunk to a thumbnail, as a vector. Grey, resized to 32 x 24 with
area averaging, zero-mean (so a global brightness offset does not change it) and L2-normalised (nor a global gain),
compared by cosine similarity like every global descriptor of the package."""
from __future__ import annotations

import cv2
import numpy as np


class RawPixelDescriptor:
    name = "raw_pixels"

    def __init__(self, width: int = 32, height: int = 24):
        if width < 2 or height < 2:
            raise ValueError(f"thumbnail size must be at least 2 x 2, got {width} x {height}")
        self.width, self.height = int(width), int(height)

    @property
    def dim(self) -> int:
        return self.width * self.height

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 \
                or rgb.size == 0:
            raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {getattr(rgb, 'dtype', type(rgb))} "
                             f"{getattr(rgb, 'shape', '')}")
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
        h, w = grey.shape
        shrink = w >= self.width and h >= self.height
        thumb = cv2.resize(grey, (self.width, self.height),
                           interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR).reshape(-1)
        thumb = thumb - thumb.mean()
        n = float(np.linalg.norm(thumb))
        return (thumb / n if n > 1e-6 else np.zeros_like(thumb)).astype(np.float32)
