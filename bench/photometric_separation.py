"""Does the RGB-only photometric check tell right poses from wrong ones, per scene?

For every query of the hard benchmark's scenes with ground truth, the check (solver/verification.py
`photometric_agreement`: the 5 keyframes nearest the pose (`nearest_views`) drawn into the query, high-passed brightness correlated)
scores the true pose and the same pose moved by 10 cm, 25 cm, turned by 5° and 10°, and both (25 cm and 10°), each in
a random direction. Prints, per scene, the percentiles of each and the share that passes `min_photometric_agreement`;
plots the distributions to bench/figures/photometric_separation.png.

    python bench/photometric_separation.py [--scenes fr1 sun3d] [--synthetic-seeds 9001 9002]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import bench_hard  # noqa: E402  (the same scenes, splits and cached maps)
from relocal_ros.pipeline import default_conf  # noqa: E402
from relocal_ros.solver.verification import (grey_thumbnail, keyframe_depth_view, nearest_views,  # noqa: E402
                                             photometric_agreement)

MOVES = {"true": (0.0, 0.0), "10 cm": (0.10, 0.0), "25 cm": (0.25, 0.0), "5°": (0.0, 5.0), "10°": (0.0, 10.0),
         "25 cm + 10°": (0.25, 10.0)}
WRONG = ("25 cm", "10°", "25 cm + 10°")  # off by the benchmark's "wrong" margin


def moved(T: np.ndarray, metres: float, degrees: float, rng) -> np.ndarray:
    d, a = rng.normal(size=3), rng.normal(size=3)
    P = np.eye(4)
    P[:3, :3] = Rotation.from_rotvec(np.radians(degrees) * a / np.linalg.norm(a)).as_matrix()
    P[:3, 3] = metres * d / np.linalg.norm(d)
    return T @ P


def scene_scores(kmap, queries, truths, rng) -> dict[str, list[float]]:
    viewpoints = kmap.viewpoints()
    out = {k: [] for k in MOVES}
    for f, truth in zip(queries, truths):
        grey = grey_thumbnail(f.rgb)
        intr = f.intrinsics.scaled(grey.shape[1], grey.shape[0])
        for name, (m, deg) in MOVES.items():
            T = moved(truth, m, deg, rng) if m or deg else truth
            views = [v for v in (keyframe_depth_view(kmap.keyframes[k]) for k in nearest_views(viewpoints, T))
                     if v is not None]
            out[name].append(photometric_agreement(T, grey, intr, views))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("RELOCAL_DATA_DIR", REPO.parent / "shared" / "data")))
    ap.add_argument("--work", type=Path, default=REPO / "out" / "bench_hard")
    ap.add_argument("--scenes", nargs="*", default=None, help="substrings of scene names (default: all with truth)")
    ap.add_argument("--synthetic-seeds", type=int, nargs="*", default=[9001, 9002])
    ap.add_argument("--plot", type=Path, default=REPO / "bench" / "figures" / "photometric_separation.png")
    a = ap.parse_args()
    threshold = default_conf()["solver"]["min_photometric_agreement"]
    rng = np.random.default_rng(0)
    a.work.mkdir(parents=True, exist_ok=True)
    results = {}
    print(f"threshold min_photometric_agreement = {threshold}\n")
    print("| scene | queries | true: p5 / p50 / p95 | true passing | 10 cm passing | moved >= 25 cm or 10°: p95 / max "
          "| wrong passing |\n|---|---|---|---|---|---|---|")
    for scene, m, ov, q, gt, _ in bench_hard.scenes(a.data, a.work, a.synthetic_seeds):
        if (a.scenes and not any(s in scene for s in a.scenes)) or (gt is None and "sequences" not in ov):
            continue
        kmap = bench_hard.get_map(a.work, scene, m, ov, {})
        queries = bench_hard.open_split(q, ov, True, queries=True)
        frames, truths = [], []
        for i in range(len(queries)):
            f = queries[i]
            truth = f.pose if "sequences" in ov else gt.at(float(f.stamp))
            if truth is not None:
                frames.append(f)
                truths.append(truth)
        if not frames:
            continue
        s = {k: np.asarray(v, float) for k, v in scene_scores(kmap, frames, truths, rng).items()}
        results[scene] = s
        wrong = np.concatenate([s[k] for k in WRONG])
        p = np.nanpercentile(s["true"], [5, 50, 95])
        print(f"| {scene} | {len(frames)} | {p[0]:.2f} / {p[1]:.2f} / {p[2]:.2f} | "
              f"{np.mean(s['true'] >= threshold):.0%} | {np.mean(s['10 cm'] >= threshold):.0%} | "
              f"{np.nanpercentile(wrong, 95):.2f} / {np.nanmax(wrong):.2f} | {np.mean(wrong >= threshold):.1%} |",
              flush=True)
    if results:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        cols = min(5, len(results))
        rows = -(-len(results) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.8 * rows), sharey=True, squeeze=False)
        for ax in axes.flat[len(results):]:
            ax.set_visible(False)
        for ax, (scene, s) in zip(axes.flat, results.items()):
            ax.boxplot([s[k][np.isfinite(s[k])] for k in MOVES], tick_labels=list(MOVES), whis=(5, 95), showfliers=True)
            ax.axhline(threshold, color="red", ls="--", lw=1)
            ax.set_title(scene, fontsize=8)
            ax.tick_params(axis="x", labelrotation=60, labelsize=7)
        for row in axes:
            row[0].set_ylabel("photometric agreement")
        fig.tight_layout()
        a.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(a.plot, dpi=110)
        print(f"\nplot: {a.plot}")


if __name__ == "__main__":
    main()
