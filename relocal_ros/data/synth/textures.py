"""Textures that need no download: procedural materials (numpy value noise, planks, tiles, stripes) and photographs
that ship inside the scikit-image wheel (CC0 / public domain per skimage.data's docstrings) for posters, and its
brick/gravel/grass material photos (CC0, ambientCG)."""
from __future__ import annotations

import cv2
import numpy as np

SIZE = 256
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "page", "moon", "clock", "horse",
          "text", "hubble_deep_field", "immunohistochemistry", "retina", "cell", "colorwheel")
MATERIAL_PHOTOS = ("brick", "gravel", "grass")


def _value_noise(rng, size, octaves=5):
    out = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = 2 ** (o + 2)
        grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
        out += amp * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.55
    out /= total
    return (out - out.min()) / max(float(out.max() - out.min()), 1e-6)


def _tint(grey, rng, base=None):
    base = rng.uniform(0.25, 0.95, 3) if base is None else np.asarray(base)
    return np.clip(grey[..., None] * base[None, None] * 255 * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)


def procedural(kind: str, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    n = _value_noise(rng, size)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == "plaster":
        g = 0.75 + 0.25 * n
    elif kind == "planks":
        boards = np.floor(y * rng.integers(4, 9))
        grain = np.sin((x * rng.uniform(20, 60) + 6 * n + boards * 3.7) * np.pi) * 0.5 + 0.5
        g = 0.45 + 0.35 * grain * (0.7 + 0.3 * n) + 0.1 * ((boards % 2) == 0)
        g[(y * 8 % 1) < 0.02] *= 0.4
        return _tint(g, rng, rng.uniform([0.55, 0.35, 0.15], [0.9, 0.65, 0.4]))
    elif kind == "tiles":
        k = rng.integers(4, 9)
        mortar = ((x * k) % 1 < 0.05) | ((y * k) % 1 < 0.05)
        g = np.where(mortar, 0.35, 0.7 + 0.3 * n)
    elif kind == "stripes":
        g = 0.5 + 0.35 * np.sign(np.sin(x * np.pi * rng.integers(6, 20))) * (0.6 + 0.4 * n)
    elif kind == "blotches":
        g = (n > rng.uniform(0.4, 0.6)).astype(np.float32) * 0.5 + 0.3 + 0.2 * n
    else:
        raise ValueError(kind)
    return _tint(g.astype(np.float32), rng)


def photo(name: str, size: int = SIZE) -> np.ndarray:
    from skimage import data
    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    if img.dtype != np.uint8:  # boolean (horse) and float images
        img = img.astype(np.float32)
        img = (255 * (img - img.min()) / max(float(np.ptp(img)), 1e-6)).astype(np.uint8)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def texture_set(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """(N x SIZE x SIZE x 3 uint8, {role: [indices]}) for one scene."""
    tex, roles = [], {"wall": [], "floor": [], "ceiling": [], "furniture": [], "poster": []}
    for kind in ("plaster", "stripes", "tiles", "blotches"):
        roles["wall"].append(len(tex))
        tex.append(procedural(kind, rng))
    for kind in ("planks", "tiles"):
        roles["floor"].append(len(tex))
        tex.append(procedural(kind, rng))
    for name in MATERIAL_PHOTOS:
        roles["floor" if name != "brick" else "wall"].append(len(tex))
        tex.append(_tint(photo(name)[..., 0].astype(np.float32) / 255, rng))
    roles["ceiling"].append(len(tex))
    tex.append(procedural("plaster", rng))
    for kind in ("planks", "blotches", "stripes"):
        roles["furniture"].append(len(tex))
        tex.append(procedural(kind, rng))
    for name in rng.permutation(PHOTOS)[:8]:
        roles["poster"].append(len(tex))
        tex.append(photo(str(name)))
    return np.stack(tex), roles
