"""Textures that need no download. Materials are procedural (FastNoise Lite noise through pyfastnoiselite, numpy
planks/tiles/stripes) or the material photos that ship in the scikit-image wheel (brick, gravel, grass: CC0,
ambientCG); posters and pictures are the photographs in that wheel (CC0 / public domain per skimage.data's
docstrings) and matplotlib's sample grace_hopper.jpg (a US Navy photograph, public domain).
Every material has strong local contrast on purpose: the localizer matches keypoints, and a blank wall gives none."""
from __future__ import annotations

import cv2
import numpy as np

SIZE = 256
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "page", "moon", "clock", "horse",
          "text", "hubble_deep_field", "immunohistochemistry", "retina", "cell", "colorwheel", "grace_hopper")
MATERIAL_PHOTOS = ("brick", "gravel", "grass")
WALL_KINDS = ("stucco", "wallpaper", "stripes", "tiles", "blotches", "marble")


def _noise(rng: np.random.Generator, size: int, kind: str = "fbm", frequency: float = 4.0) -> np.ndarray:
    """FastNoise Lite over the unit square, normalised to [0, 1]."""
    from pyfastnoiselite.pyfastnoiselite import CellularReturnType, FastNoiseLite, FractalType, NoiseType
    gen = FastNoiseLite(int(rng.integers(0, 2**31 - 1)))
    gen.frequency = frequency / size
    if kind == "cells":
        gen.noise_type = NoiseType.NoiseType_Cellular
        gen.cellular_return_type = CellularReturnType.CellularReturnType_Distance2Sub
    else:
        gen.noise_type = NoiseType.NoiseType_OpenSimplex2
        gen.fractal_type = FractalType.FractalType_Ridged if kind == "ridged" else FractalType.FractalType_FBm
        gen.fractal_octaves = 5
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    n = gen.gen_from_coords(np.stack([x.ravel(), y.ravel()])).reshape(size, size).astype(np.float32)
    return (n - n.min()) / max(float(n.max() - n.min()), 1e-6)


def _tint(grey, rng, base=None):
    base = rng.uniform(0.25, 0.95, 3) if base is None else np.asarray(base)
    return np.clip(grey[..., None] * base[None, None] * 255 * rng.uniform(0.9, 1.2), 0, 255).astype(np.uint8)


def procedural(kind: str, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """One SIZE x SIZE x 3 uint8 material."""
    n = _noise(rng, size, "fbm", frequency=float(rng.uniform(3, 8)))
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == "stucco":          # rough plaster with visible blotches
        g = 0.35 + 0.65 * n ** 1.5
    elif kind == "wallpaper":     # a regular motif over a noisy ground, like printed paper
        k = int(rng.integers(4, 9))
        motif = np.cos(2 * np.pi * k * x) * np.cos(2 * np.pi * k * y)
        g = 0.4 + 0.3 * (motif > rng.uniform(0.2, 0.6)) + 0.3 * _noise(rng, size, "cells", 10.0)
    elif kind == "marble":        # veins from a domain-warped sine
        g = 0.55 + 0.45 * np.abs(np.sin((x * rng.uniform(3, 8) + 4 * _noise(rng, size, "ridged", 5.0)) * np.pi))
    elif kind == "planks":
        boards = np.floor(y * rng.integers(4, 9))
        grain = np.sin((x * rng.uniform(20, 60) + 6 * n + boards * 3.7) * np.pi) * 0.5 + 0.5
        g = 0.45 + 0.35 * grain * (0.7 + 0.3 * n) + 0.1 * ((boards % 2) == 0)
        g[(y * 8 % 1) < 0.02] *= 0.4
        return _tint(g, rng, rng.uniform([0.55, 0.35, 0.15], [0.9, 0.65, 0.4]))
    elif kind == "tiles":
        k = rng.integers(4, 9)
        mortar = ((x * k) % 1 < 0.05) | ((y * k) % 1 < 0.05)
        g = np.where(mortar, 0.3, 0.6 + 0.4 * n)
    elif kind == "stripes":
        g = 0.5 + 0.35 * np.sign(np.sin(x * np.pi * rng.integers(6, 20))) * (0.6 + 0.4 * n)
    elif kind == "blotches":
        g = (n > rng.uniform(0.4, 0.6)).astype(np.float32) * 0.5 + 0.3 + 0.2 * _noise(rng, size, "cells", 12.0)
    else:
        raise ValueError(f"unknown procedural material {kind!r}")
    return _tint(g.astype(np.float32), rng)


def photo(name: str, size: int = SIZE) -> np.ndarray:
    """A photograph bundled with an installed package, as SIZE x SIZE x 3 uint8 RGB."""
    if name == "grace_hopper":
        from matplotlib import cbook
        img = cv2.cvtColor(cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))),
                           cv2.COLOR_BGR2RGB)
    else:
        from skimage import data
        if name not in PHOTOS + MATERIAL_PHOTOS:
            raise ValueError(f"{name!r} is not one of the offline images {PHOTOS + MATERIAL_PHOTOS}")
        img = getattr(data, name)()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    if img.dtype != np.uint8:  # boolean (horse) and float images
        img = img.astype(np.float32)
        img = (255 * (img - img.min()) / max(float(np.ptp(img)), 1e-6)).astype(np.uint8)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def texture_set(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """(N x SIZE x SIZE x 3 uint8, {role: [indices]}) for one scene; deterministic for the generator's state."""
    tex, roles = [], {"wall": [], "floor": [], "ceiling": [], "furniture": [], "poster": []}

    def add(role, image):
        roles[role].append(len(tex))
        tex.append(image)

    for kind in WALL_KINDS:
        add("wall", procedural(kind, rng))
    add("wall", _tint(photo("brick")[..., 0].astype(np.float32) / 255, rng))
    for kind in ("planks", "tiles"):
        add("floor", procedural(kind, rng))
    for name in ("gravel", "grass"):
        add("floor", _tint(photo(name)[..., 0].astype(np.float32) / 255, rng))
    for kind in ("stucco", "tiles"):
        add("ceiling", procedural(kind, rng))
    for kind in ("planks", "blotches", "stripes", "marble"):
        add("furniture", procedural(kind, rng))
    for name in rng.permutation(PHOTOS)[:10]:
        add("poster", photo(str(name)))
    return np.stack(tex), roles
