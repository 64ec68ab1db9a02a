#!/usr/bin/env python3
"""Synthetic generator throughput on this machine: frames/s of the moderngl (EGL, llvmpipe) renderer at 128x128
and 640x480 (render + read-back of RGB and metric depth), the scene generation time of the default demo scene,
and training pairs/hour (dense and sparse ExReNet sampling: two renders + two overlap computations per try)."""
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from relocal_ros.data.synth import build_scene, generate_scene  # noqa: E402
from relocal_ros.data.synth.cameras import ellipse_walk  # noqa: E402
from relocal_ros.data.synth.pairs import sample_pair  # noqa: E402
from relocal_ros.data.synth.renderer import Renderer  # noqa: E402
from relocal_ros.geometry.camera import Intrinsics  # noqa: E402


def main():
    scene, textures = build_scene(0)
    rng = np.random.default_rng(0)
    poses = ellipse_walk(scene.rooms[0], 200, rng, scale=0.6)
    for w, h in ((128, 128), (640, 480)):
        r = Renderer(scene.boxes, textures, Intrinsics(0.82 * w, 0.82 * w, (w - 1) / 2, (h - 1) / 2, w, h), scene.light)
        r.render(poses[0])
        t = time.perf_counter()
        for T in poses:
            r.render(T)
        print(f"render {w}x{h}: {len(poses) / (time.perf_counter() - t):.0f} frames/s (RGB + metric depth read back)")
        if w == 128:
            for mode in ("dense", "sparse"):
                t, n = time.perf_counter(), 0
                for _ in range(100):
                    n += sample_pair(scene, r, rng, mode) is not None
                dt = time.perf_counter() - t
                print(f"pairs ({mode}, 128x128): {n / dt * 3600:,.0f} pairs/hour on one core ({n} of 100 attempts)")
        r.release()
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        generate_scene(Path(d) / "s", 0, progress=False)
        print(f"default demo scene (184 frames at 640x480, PNG written, 2 processes): {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
