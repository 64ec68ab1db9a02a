#!/usr/bin/env python3
"""Synthetic generator throughput on this machine:
- frames/s of the moderngl (EGL, llvmpipe) rasteriser vs the numpy ray caster on the same poses, at 128x128 and
  640x480 (render + RGB and metric depth in numpy);
- wall time of the default demo scene (generate_scene defaults: 640x480, PNGs written, one process per core);
- training pairs/hour with generate_pairs (128x128, dense and sparse ExReNet sampling, PNGs written, one process
  per core)."""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from relocal_ros.data.synth import build_scene, generate_pairs, generate_scene, scene_intrinsics  # noqa: E402
from relocal_ros.data.synth.cameras import random_pose  # noqa: E402
from relocal_ros.data.synth.raycast import raycast_render  # noqa: E402
from relocal_ros.data.synth.renderer import Renderer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200, help="rasteriser frames per size")
    ap.add_argument("--scenes", type=int, default=4, help="scenes per pair-generation run")
    ap.add_argument("--pairs", type=int, default=25, help="pairs per scene")
    a = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores")
    scene, textures = build_scene(0)
    rng = np.random.default_rng(0)
    poses = [random_pose(scene, rng, scene_intrinsics(640, 480), dense=True) for _ in range(a.frames)]
    for w, h in ((128, 128), (640, 480)):
        intr = scene_intrinsics(w, h)
        r = Renderer(scene.boxes, textures, intr, scene.light, scene.ambient, scene.intensity)
        r.render(poses[0])
        t = time.perf_counter()
        for T in poses:
            r.render(T)
        gl_fps = len(poses) / (time.perf_counter() - t)
        r.release()
        n_rc = 20 if w == 128 else 3
        t = time.perf_counter()
        for T in poses[:n_rc]:
            raycast_render(scene.boxes, textures, T, intr, scene.light, scene.ambient, scene.intensity)
        rc_fps = n_rc / (time.perf_counter() - t)
        print(f"render {w}x{h} ({len(scene.boxes)} boxes): moderngl {gl_fps:7.1f} frames/s, "
              f"numpy ray caster {rc_fps:6.2f} frames/s (same poses, RGB + metric depth)")
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        generate_scene(Path(d) / "s", 0, progress=False)
        n = sum(1 for _ in (Path(d) / "s").glob("seq-*/*.color.png"))
        print(f"default demo scene ({n} frames at 640x480, PNGs written, {os.cpu_count()} processes): "
              f"{time.perf_counter() - t:.1f} s")
        for mode in ("dense", "sparse"):
            t = time.perf_counter()
            generate_pairs(Path(d) / mode, 0, a.scenes, a.pairs, size=128, mode=mode, progress=False)
            dt = time.perf_counter() - t
            n = a.scenes * a.pairs
            print(f"training pairs ({mode}, 128x128, {a.scenes} scenes x {a.pairs}, written, {os.cpu_count()} "
                  f"processes): {n / dt * 3600:,.0f} pairs/hour ({dt:.1f} s)")


if __name__ == "__main__":
    main()
