"""Training pairs as ExReNet samples them: two acceptable views of the same room, kept when each sees more than
o_max of the other's scene coordinates (within 0.2 m), their centres are closer than d_max and their rotation
differs by less than gamma_max. Dense: 6-DoF poses, the second a random motion of the first (30 %, 0.6 m, 30 deg);
sparse: two ground-robot poses drawn independently in the room (10 %; the paper gives no distance or angle bound
for this set, so none is applied).

On disk (generate_pairs): OUT/calibration.yaml (one camera for all), OUT/scene-XXXX/{scene.json, frame-XXXXXX.*}
in the 7-Scenes frame layout, and OUT/pairs.txt with one line per pair:
    scene-XXXX/frame-A scene-XXXX/frame-B overlap distance_m angle_deg"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from relocal_ros.data.synth.cameras import acceptable_view, random_pose, scene_intrinsics
from relocal_ros.data.synth.overlap import mutual_overlap
from relocal_ros.data.synth.writer import DEPTH_SCALE, frame_base, write_frame
from relocal_ros.geometry.camera import save_calibration_yaml
from relocal_ros.geometry.poses import make_T, pose_error

MODES = {"dense": dict(o_max=0.30, d_max=0.6, gamma_max=30.0),
         "sparse": dict(o_max=0.10, d_max=np.inf, gamma_max=180.0)}


@dataclass
class Pair:
    T_a: np.ndarray
    T_b: np.ndarray
    rgb_a: np.ndarray
    depth_a: np.ndarray
    rgb_b: np.ndarray
    depth_b: np.ndarray
    overlap: float


def _perturb(T, rng):
    dR = Rotation.from_rotvec(rng.normal(0, np.radians(12), 3)).as_matrix()
    return T @ make_T(dR, rng.normal(0, 0.25, 3))


def sample_pair(scene, renderer, rng: np.random.Generator, mode: str = "dense", max_tries: int = 50) -> Pair | None:
    """One pair within the mode's bounds, or None after max_tries candidate pairs (each rendered and measured)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, not {mode!r}")
    lim, dense, intr = MODES[mode], mode == "dense", renderer.intr
    for _ in range(max_tries):
        T_a = random_pose(scene, rng, intr, dense)
        if dense:
            T_b = _perturb(T_a, rng)
            if not acceptable_view(scene, T_b, intr):
                continue
        else:
            T_b = random_pose(scene, rng, intr, dense, room=scene.room_at(*T_a[:2, 3]))
        dist, angle = pose_error(T_a, T_b)
        if dist >= lim["d_max"] or angle >= lim["gamma_max"]:
            continue
        rgb_a, depth_a = renderer.render(T_a)
        rgb_b, depth_b = renderer.render(T_b)
        overlap = mutual_overlap(depth_a, T_a, depth_b, T_b, intr)
        if overlap > lim["o_max"]:
            return Pair(T_a, T_b, rgb_a, depth_a, rgb_b, depth_b, overlap)
    return None


def scene_seed(seed: int, index: int) -> int:
    """Independent, reproducible seed of the index-th scene of a pair set."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _scene_pairs(job) -> list[str]:
    from relocal_ros.data.synth import build_scene
    from relocal_ros.data.synth.renderer import Renderer
    out, seed, index, n_pairs, size, mode = job
    s = scene_seed(seed, index)
    scene, textures = build_scene(s)
    name = f"scene-{index:04d}"
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scene.json").write_text(json.dumps(scene.to_dict(), indent=1))
    renderer = Renderer(scene.boxes, textures, scene_intrinsics(size, size), scene.light, scene.ambient,
                        scene.intensity)
    rng = np.random.default_rng([s, 2])
    lines = []
    try:
        while len(lines) < n_pairs:
            p = sample_pair(scene, renderer, rng, mode)
            if p is None:
                raise RuntimeError(f"{name} (seed {s}): no {mode} pair within the bounds after 50 tries")
            k = 2 * len(lines)
            write_frame(frame_base(folder, k), p.rgb_a, p.depth_a, p.T_a)
            write_frame(frame_base(folder, k + 1), p.rgb_b, p.depth_b, p.T_b)
            dist, angle = pose_error(p.T_a, p.T_b)
            lines.append(f"{name}/frame-{k:06d} {name}/frame-{k + 1:06d} {p.overlap:.4f} {dist:.4f} {angle:.3f}")
    finally:
        renderer.release()
    return lines


def generate_pairs(out_dir, seed: int, n_scenes: int, pairs_per_scene: int, size: int = 128, mode: str = "dense",
                   workers: int | None = None, progress: bool = True) -> Path:
    """Render n_scenes procedural scenes with pairs_per_scene pairs each (size x size pixels, ExReNet's 128 by
    default) into out_dir; deterministic for (seed, n_scenes, pairs_per_scene, size, mode). Returns pairs.txt."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, not {mode!r}")
    if n_scenes < 1 or pairs_per_scene < 1 or size < 16:
        raise ValueError("need n_scenes >= 1, pairs_per_scene >= 1 and size >= 16")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_calibration_yaml(out / "calibration.yaml", scene_intrinsics(size, size), DEPTH_SCALE,
                          comment=f"relocal synth pairs seed {seed} mode {mode}")
    jobs = [(str(out), seed, i, pairs_per_scene, size, mode) for i in range(n_scenes)]
    workers = max(1, min(workers or os.cpu_count() or 1, n_scenes))
    bar = tqdm(total=n_scenes, desc=f"{mode} pairs", unit="scene", disable=not progress)
    results = []
    if workers == 1:
        for j in jobs:
            results.append(_scene_pairs(j))
            bar.update()
    else:  # one GL context per process; spawn, because an EGL context does not survive fork
        with get_context("spawn").Pool(workers) as pool:
            for lines in pool.imap(_scene_pairs, jobs):
                results.append(lines)
                bar.update()
    bar.close()
    pairs_txt = out / "pairs.txt"
    pairs_txt.write_text("# frame_a frame_b overlap distance_m angle_deg\n"
                         + "".join(line + "\n" for lines in results for line in lines))
    return pairs_txt
