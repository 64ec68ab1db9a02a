"""Synthetic indoor RGB-D scenes, rendered headless on the CPU (moderngl over EGL on Mesa llvmpipe), written in the
7-Scenes layout so that every tool of the package reads them:

    SCENE/calibration.yaml            ideal pinhole intrinsics (f = 525 px at 640 wide), depth_scale 1000
    SCENE/scene.json                  the procedural scene (seed, rooms, boxes with textures, light) for reproducibility
    SCENE/seq-01/frame-XXXXXX.*       mapping walk: per room an outer and an inner loop of 6-DoF poses looking out
                                      at the walls and furniture (n_map frames in all)
    SCENE/seq-02/frame-XXXXXX.*       query walk through the same rooms: a loop between the two mapping loops, with
                                      other phase, heights and headings (n_query frames), so each query has map
                                      views that overlap it
    SCENE/seq-03/frame-000000..3      sparse "four corner references" case: one view from each corner of the first
                                      room towards its centre, at 1 m like a ground robot (x, y, yaw) ...
    SCENE/seq-03/frame-000004..       ... followed by ground-robot queries (random x, y, yaw at 1 m) in that room
    each frame: .color.png (RGB), .depth.png (uint16 mm, 0 = nothing), .pose.txt (4x4 camera-to-world, OpenCV axes)

World frame: z up, floor at z = 0. The same seed gives byte-identical files whatever the number of workers: poses
are drawn in the parent before any parallel work, and rasterisation on llvmpipe is deterministic. Training pairs
for the learned stages come from pairs.generate_pairs."""
from __future__ import annotations

import json
import os
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from relocal_ros.data.synth.cameras import scene_intrinsics, trajectories
from relocal_ros.data.synth.pairs import generate_pairs
from relocal_ros.data.synth.scene import Scene, make_scene
from relocal_ros.data.synth.textures import texture_set
from relocal_ros.data.synth.writer import DEPTH_SCALE, frame_base, write_frame
from relocal_ros.geometry.camera import save_calibration_yaml

__all__ = ["generate_scene", "generate_pairs", "scene_intrinsics", "build_scene"]


def build_scene(seed: int) -> tuple[Scene, np.ndarray]:
    """(scene layout, N x 256 x 256 x 3 texture stack) for a seed."""
    textures, roles = texture_set(np.random.default_rng([seed, 0]))
    return make_scene(seed, roles), textures


_worker = {}


def _init_worker(seed, width, height, sensor_model=False):
    from relocal_ros.data.synth.renderer import Renderer
    scene, textures = build_scene(seed)
    _worker["sensor_model"] = (seed if sensor_model else None)
    _worker["renderer"] = Renderer(scene.boxes, textures, scene_intrinsics(width, height), scene.light,
                                   scene.ambient, scene.intensity)


def _render_job(job):
    base, T = job
    rgb, depth = _worker["renderer"].render(T)
    if _worker.get("sensor_model") is not None:  # per-frame draws from (seed, sequence, frame): reproducible
        from relocal_ros.data.synth.sensor import apply_sensor_model
        seq, frame = Path(base).parent.name, Path(base).name
        key = [_worker["sensor_model"], 7] + [int(c) for c in (seq + frame) if c.isdigit()]
        rgb, depth = apply_sensor_model(rgb, depth, np.random.default_rng(key))
    write_frame(Path(base), rgb, depth, T)
    return base


def generate_scene(out_dir, seed: int, *, width: int = 640, height: int = 480, n_map: int = 120,
                   n_query: int = 60, workers: int | None = None, progress: bool = True, wide_queries: int = 0,
                   sensor_model: bool = False) -> Path:
    """Generate the scene for `seed` into out_dir (layout in the module docstring) and return out_dir.
    workers: processes, each with its own GL context (default: one per core). wide_queries: also seq-04, that many
    wide-baseline queries; sensor_model: every frame degraded as a real RGB-D sensor would (synth/sensor.py)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scene, _ = build_scene(seed)
    intr = scene_intrinsics(width, height)
    seqs = trajectories(scene, seed, n_map, n_query, intr, n_wide_queries=wide_queries)
    # the poses are the renderer's own: exact, which the map records so that the solver adds no map-pose error
    # (only its least map error for what the pipeline itself adds, solver min_map_sigma_*)
    save_calibration_yaml(out / "calibration.yaml", intr, DEPTH_SCALE, extra={"pose_sigma_m": 0.0, "pose_sigma_deg": 0.0},
                          comment=f"relocal synth seed {seed}: ideal pinhole, depth PNG in millimetres")
    (out / "scene.json").write_text(json.dumps(scene.to_dict(), indent=1))
    jobs = []
    for name, poses in seqs.items():
        (out / name).mkdir(exist_ok=True)
        jobs += [(str(frame_base(out / name, i)), T) for i, T in enumerate(poses)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    bar = tqdm(total=len(jobs), desc=f"synth seed {seed}", unit="frame", disable=not progress)
    if workers == 1:
        _init_worker(seed, width, height, sensor_model)
        try:
            for j in jobs:
                _render_job(j)
                bar.update()
        finally:
            _worker.pop("renderer").release()
    else:  # one GL context per process; spawn, because an EGL context does not survive fork
        with get_context("spawn").Pool(workers, _init_worker, (seed, width, height, sensor_model)) as pool:
            for _ in pool.imap_unordered(_render_job, jobs, chunksize=8):
                bar.update()
    bar.close()
    return out
