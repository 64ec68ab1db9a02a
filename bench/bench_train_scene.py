#!/usr/bin/env python3
"""How good the per-map DSAC++ head gets within a training budget on this machine: a ~500-keyframe synthetic map
(`relocal synth` scene, mapping walk seq-01 with n_map frames), trained from scratch with budgets of 2, 5 and 10
minutes (each a full schedule of the three steps), then evaluated on the held-out query walk seq-02:
median translation / rotation error, share within 5 cm/5 deg and 10 cm/10 deg, refused share, median scene-
coordinate error — beside the feature-matching baseline (xfeat_pnp, the product default) on the same frames.

    nice -n 10 .venv/bin/python bench/bench_train_scene.py [--n-map 500] [--budgets 120 300 600] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from relocal_ros.data.sources import open_source  # noqa: E402
from relocal_ros.estimates import QueryEvidence  # noqa: E402
from relocal_ros.geometry.poses import pose_error  # noqa: E402
from relocal_ros.mapping.builder import build_map  # noqa: E402
from relocal_ros.mapping.keyframe_map import KeyframeMap  # noqa: E402
from relocal_ros.networks.dsacpp.model import cell_pixels, ground_truth_scene_coordinates  # noqa: E402
from relocal_ros.networks.dsacpp.runtime import DsacppRunner  # noqa: E402
from relocal_ros.networks.dsacpp.train import train_scene  # noqa: E402
from relocal_ros.pipeline import PoseSolver, Relocalizer  # noqa: E402

DSACPP_SOLVER = {"pnp_scoring": "soft_inlier", "max_reproj_error": 10.0, "min_inlier_ratio": 0.1}


def summarise(name, errs, refused, lat, sc_err=None):
    e = np.array(errs).reshape(-1, 2)
    n = len(lat)

    def share(t, r):
        return 100.0 * np.sum((e[:, 0] <= t) & (e[:, 1] <= r)) / max(n, 1)
    sc = f"{np.median(sc_err) * 100:.1f}" if sc_err is not None and len(sc_err) else "-"
    return (f"| {name} | {n} | {np.median(e[:, 0]) * 100 if len(e) else np.nan:.1f} | "
            f"{np.median(e[:, 1]) if len(e) else np.nan:.2f} | {share(0.05, 5):.1f} % | {share(0.10, 10):.1f} % | "
            f"{100.0 * refused / max(n, 1):.1f} % | {sc} | {np.percentile(lat, 50) * 1000:.0f} | "
            f"{np.percentile(lat, 95) * 1000:.0f} |")


HEADER = ("| method | queries | median t (cm) | median r (deg) | 5cm/5deg | 10cm/10deg | refused | median scene-coord "
          "error (cm) | p50 ms | p95 ms |\n|" + "---|" * 10)


def evaluate_dsacpp(map_dir, kmap, queries, idx, threads):
    method = DsacppRunner(kmap, {"map_dir": map_dir, "threads": threads})
    if method.problem:
        raise RuntimeError(method.problem)
    solver = PoseSolver(DSACPP_SOLVER)
    errs, refused, lat, sc = [], 0, [], []
    for i in idx:
        f = queries[int(i)]
        t0 = time.perf_counter()
        ev = QueryEvidence(f.stamp, f.intrinsics, "dsacpp")
        method.infer(f, [], ev)
        est = solver.solve(ev)
        lat.append(time.perf_counter() - t0)
        truth = ground_truth_scene_coordinates(cell_pixels(f.intrinsics.width, f.intrinsics.height), f.depth,
                                               f.intrinsics, f.pose)
        ok = np.isfinite(truth).all(1)
        sc.append(np.linalg.norm(method.predict(f.rgb)[ok] - truth[ok], axis=1))
        if not est.accepted:
            refused += 1
            continue
        errs.append(pose_error(est.T_map_cam, f.pose))
    return errs, refused, lat, np.concatenate(sc) if sc else np.zeros(0)


def evaluate_baseline(kmap, queries, idx):
    loc = Relocalizer(kmap)
    loc.localize(queries[int(idx[0])])  # warm-up
    errs, refused, lat = [], 0, []
    for i in idx:
        f = queries[int(i)]
        t0 = time.perf_counter()
        est = loc.localize(f)
        lat.append(time.perf_counter() - t0)
        if not est.accepted:
            refused += 1
            continue
        errs.append(pose_error(est.T_map_cam, f.pose))
    return errs, refused, lat


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1, help="synthetic scene seed (1: one room 6.4 x 4 m)")
    ap.add_argument("--n-map", type=int, default=500)
    ap.add_argument("--n-query", type=int, default=60)
    ap.add_argument("--budgets", type=float, nargs="*", default=[120, 300, 600])
    ap.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime threads (the machine is shared)")
    ap.add_argument("--work", type=Path, default=None, help="keep the scene and map here (default: a temp dir)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__} on {torch.get_num_threads()} threads; "
          f"load average at start {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or Path(tmp)
        scene = work / f"synth_seed{a.seed}_n{a.n_map}"
        if not (scene / "seq-02").is_dir():
            from relocal_ros.data.synth import generate_scene
            t0 = time.perf_counter()
            generate_scene(scene, a.seed, n_map=a.n_map, n_query=a.n_query, workers=1, progress=False)
            print(f"scene generated in {time.perf_counter() - t0:.0f} s", flush=True)
        map_dir = work / f"map_seed{a.seed}_n{a.n_map}"
        if not (map_dir / "CURRENT").is_file():
            t0 = time.perf_counter()
            build_map(open_source(scene / "seq-01"), {"rotations": [0.0], "min_translation": 0.0,
                                                      "min_rotation_deg": 0.0}, progress=False).save(map_dir)
            print(f"map built in {time.perf_counter() - t0:.0f} s", flush=True)
        kmap = KeyframeMap.load(map_dir)
        queries = open_source(scene / "seq-02")
        idx = np.arange(len(queries))
        print(f"map: {len(kmap)} keyframes; queries: {len(idx)} held-out frames (seq-02)\n", flush=True)
        rows = [summarise("baseline xfeat_pnp (feature matching, same map)", *evaluate_baseline(kmap, queries, idx))]
        print(rows[-1], flush=True)
        for budget in a.budgets:
            t0 = time.perf_counter()
            meta = train_scene(map_dir, budget_s=budget, resume=False, progress=False, conf={"threads": a.threads})
            wall = time.perf_counter() - t0
            print(f"trained {budget:.0f} s budget: wall {wall:.0f} s, iterations {meta['iterations']}, "
                  f"validation scene-coord median {meta.get('val_median_cm', float('nan')):.1f} cm "
                  f"(mean-point baseline {meta.get('val_baseline_median_cm', float('nan')):.1f} cm)", flush=True)
            rows.append(summarise(f"dsacpp after {budget / 60:.0f} min training", *evaluate_dsacpp(
                map_dir, kmap, queries, idx, a.threads)))
            print(rows[-1], flush=True)
    print("\nsummary")
    print(HEADER)
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
