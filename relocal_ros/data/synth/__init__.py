"""Synthetic indoor RGB-D scenes, rendered headless on the CPU, written in the 7-Scenes layout.

    SCENE/calibration.yaml            pinhole intrinsics, depth_scale 1000 (depth PNG in millimetres)
    SCENE/scene.json                  the procedural scene (seed, rooms, boxes, light) for reproducibility
    SCENE/seq-01/frame-XXXXXX.*       mapping walk: dense 6-DoF poses around every room, looking at the walls
    SCENE/seq-02/frame-XXXXXX.*       query walk: another path through the same rooms (other radius, phase, heights)
    SCENE/seq-03/frame-000000..3      sparse case: four references from the corners of the first room (x, y, yaw
                                      at 1 m, like a ground robot) ...
    SCENE/seq-03/frame-000004..       ... and sparse queries inside that room
    each frame: .color.png (RGB), .depth.png (uint16 mm, 0 = nothing), .pose.txt (4x4 camera-to-world, OpenCV axes)

Deterministic for a seed: the same seed gives byte-identical files (rendering is single-threaded per frame and
poses are drawn before any parallel work)."""
from __future__ import annotations

import json
import os
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from relocal_ros.data.synth.cameras import corner_views, ellipse_walk
from relocal_ros.data.synth.scene import make_scene
from relocal_ros.data.synth.textures import texture_set
from relocal_ros.geometry.camera import Intrinsics, save_calibration_yaml

__all__ = ["generate_scene", "scene_intrinsics", "build_scene"]


def scene_intrinsics(width: int, height: int) -> Intrinsics:
    f = 525.0 * width / 640.0  # the Kinect/7-Scenes field of view at any resolution
    return Intrinsics(f, f, (width - 1) / 2, (height - 1) / 2, width, height)


def build_scene(seed: int):
    rng = np.random.default_rng(seed)
    textures, roles = texture_set(rng)
    return make_scene(seed, roles), textures


def trajectories(scene, seed: int, n_map: int, n_query: int) -> dict:
    rng = np.random.default_rng(seed + 1)
    rooms = scene.rooms
    seqs = {"seq-01": [], "seq-02": [], "seq-03": []}
    for r in rooms:
        k = max(8, n_map // len(rooms))
        seqs["seq-01"] += ellipse_walk(r, k // 2, rng, scale=0.7) + ellipse_walk(r, k - k // 2, rng, scale=0.3, phase=0.4)
        seqs["seq-02"] += ellipse_walk(r, max(4, n_query // len(rooms)), rng, scale=0.5, phase=0.17)
    seqs["seq-03"] = corner_views(rooms[0]) + ellipse_walk(rooms[0], 12, rng, scale=0.45, dense=False, phase=0.3)
    return seqs


_worker = {}


def _init_worker(seed, width, height):
    from relocal_ros.data.synth.renderer import Renderer
    scene, textures = build_scene(seed)
    _worker["r"] = Renderer(scene.boxes, textures, scene_intrinsics(width, height), scene.light, scene.ambient,
                            scene.intensity)


def _render_job(job):
    path, T = job
    rgb, depth = _worker["r"].render(T)
    write_frame(Path(path), rgb, depth, T)
    return path


def write_frame(base: Path, rgb: np.ndarray, depth: np.ndarray, T: np.ndarray) -> None:
    cv2.imwrite(str(base) + ".color.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    mm = np.clip(np.round(np.nan_to_num(depth) * 1000.0), 0, 65535).astype(np.uint16)
    cv2.imwrite(str(base) + ".depth.png", mm)
    np.savetxt(str(base) + ".pose.txt", T, fmt="%.9f")


def generate_scene(out_dir, seed: int, *, width: int = 640, height: int = 480, n_map: int = 120,
                   n_query: int = 60, workers: int | None = None, progress: bool = True) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scene, _ = build_scene(seed)
    intr = scene_intrinsics(width, height)
    seqs = trajectories(scene, seed, n_map, n_query)
    save_calibration_yaml(out / "calibration.yaml", intr, 1000.0,
                          comment=f"relocal synth seed {seed}: ideal pinhole, depth PNG in millimetres")
    (out / "scene.json").write_text(json.dumps(scene.to_dict(), indent=1))
    jobs = []
    for name, poses in seqs.items():
        (out / name).mkdir(exist_ok=True)
        jobs += [(str(out / name / f"frame-{i:06d}"), T) for i, T in enumerate(poses)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    bar = tqdm(total=len(jobs), desc=f"synth seed {seed}", unit="frame", disable=not progress)
    if workers == 1:
        _init_worker(seed, width, height)
        for j in jobs:
            _render_job(j)
            bar.update()
    else:  # one GL context per process; spawn: an EGL context does not survive fork
        with get_context("spawn").Pool(workers, _init_worker, (seed, width, height)) as pool:
            for _ in pool.imap_unordered(_render_job, jobs, chunksize=8):
                bar.update()
    bar.close()
    return out
