#!/usr/bin/env python3
"""Accuracy and per-query latency of relocal_ros beside classical baselines, on the same map and query frames.

Datasets (each reported when present):
  fr1_rpy   map = first 60 % of the frames of TUM fr1_rpy, queries = the remaining 40 %   (../shared/data)
  fr1_desk  same map, queries = the 5 frames of TUM fr1_desk (another recording, same office and world frame)
  synthetic map = seq-01, queries = seq-02 of a scene from `relocal synth` (generated if missing)

Methods: the product's default (XFeat + VLAD retrieval + mutual-NN + keyframe depth + PnP-RANSAC), its variants,
and baselines: SIFT + 5-point, SIFT + keyframe depth + PnP, XFeat + LighterGlue + keyframe depth + PnP.
Latency is wall time of one localize() call on this machine (torch on 2 threads), map loading excluded.
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
from relocal_ros.data.splits import split_tum  # noqa: E402
from relocal_ros.evaluation.baselines import SiftFivePointBaseline  # noqa: E402
from relocal_ros.evaluation.metrics import CHI2_95, mahalanobis_sq  # noqa: E402
from relocal_ros.geometry.poses import pose_error  # noqa: E402
from relocal_ros.mapping.builder import build_map  # noqa: E402
from relocal_ros.pipeline import Relocalizer  # noqa: E402

SIFT_MNN = {"min_similarity": 0.0, "max_ratio": 0.8, "use_depth": False, "guided_matching": False}
PEER = {"use_depth": False, "guided_matching": False}  # the baselines match globally, as published
METHODS = {
    # name: (map build conf, relocalizer conf, kind)
    "relocal xfeat512+mnn (default)": ({"extractor": "xfeat"}, {}, "pnp"),
    "relocal xfeat640+mnn": ({"extractor": "xfeat", "extractor_conf": {"width": 640, "height": 480}}, {}, "pnp"),
    "relocal xfeat320+mnn": ({"extractor": "xfeat", "extractor_conf": {"width": 320, "height": 240}}, {}, "pnp"),
    # SIFT is rotation invariant: its maps store one rotation, as the classical baselines do
    "baseline SIFT+5-point": ({"extractor": "sift", "rotations": [0.0]}, None, "5pt"),
    "baseline SIFT+depth+PnP": ({"extractor": "sift", "rotations": [0.0]}, {"inference": SIFT_MNN}, "pnp"),
    "baseline XFeat+LighterGlue+depth+PnP": ({"extractor": "xfeat"}, {"inference": {**PEER, "matcher": "lighterglue"}},
                                             "pnp"),
    # the covariance without the image-wide pixel shift (solver common_pixel_sigma; same poses and decisions)
    "relocal default, covariance without the common pixel shift": ({"extractor": "xfeat"},
                                                                    {"solver": {"common_pixel_sigma": 0.0}}, "pnp"),
    "relocal PnP with DSAC++ soft-inlier scoring": ({"extractor": "xfeat"}, {"solver": {"pnp_scoring": "soft_inlier"}}, "pnp"),
    # relative poses (essential matrix per retrieved keyframe, scale from its depth) combined three ways
    "relative: ExReNet triangulation+RANSAC": ({"extractor": "xfeat"}, {"inference": {
        "method": "xfeat_relative", "num_references": 5}, "solver": {"fusion": "exrenet"}}, "pnp"),
    "relative: RelocNet Huber IRLS": ({"extractor": "xfeat"}, {"inference": {
        "method": "xfeat_relative", "num_references": 5}, "solver": {"fusion": "irls"}}, "pnp"),
    "relative: RRPR single neighbour": ({"extractor": "xfeat"}, {"inference": {
        "method": "xfeat_relative", "num_references": 5}, "solver": {"fusion": "rrpr"}}, "pnp"),
}


def datasets(data_dir: Path, synthetic: Path | None, work: Path):
    rpy = data_dir / "tum_rgbd" / "rgbd_dataset_freiburg1_rpy"
    desk = data_dir / "tum_rgbd" / "rgbd_dataset_freiburg1_desk"
    if (rpy / "rgb.txt").is_file():
        m, q = split_tum(rpy, work / "rpy_map", work / "rpy_query", 0.6)
        gt = open_source(rpy)
        yield "fr1_rpy", open_source(m), open_source(q, with_ground_truth=False), gt
        if (desk / "rgb.txt").is_file():
            yield "fr1_desk", open_source(m), open_source(desk, with_ground_truth=False), open_source(desk)
    else:
        print(f"(real data not found under {data_dir}: real-data rows skipped)")
    if synthetic is not None:
        yield "synthetic", open_source(synthetic / "seq-01"), open_source(synthetic / "seq-02", with_ground_truth=False), \
            open_source(synthetic / "seq-02")


def ground_truth_by_stamp(gt_source) -> dict:
    return {gt_source[i].stamp: gt_source[i].pose for i in range(len(gt_source))}


def run(name, map_src, queries, gt, methods, max_queries):
    gt_pose = ground_truth_by_stamp(gt)
    idx = np.arange(len(queries))
    if max_queries and len(idx) > max_queries:
        idx = idx[np.linspace(0, len(idx) - 1, max_queries).round().astype(int)]
    maps = {}
    rows = []
    for mname in methods:
        build_conf, reloc_conf, kind = METHODS[mname]
        key = repr(sorted(build_conf.items()))
        if key not in maps:
            maps[key] = build_map(map_src, build_conf, progress=False)
        kmap = maps[key]
        loc = SiftFivePointBaseline(kmap) if kind == "5pt" else Relocalizer(kmap, reloc_conf)
        loc.localize(queries[int(idx[0])])  # warm-up (lazy model loading)
        terr, rerr, lat, n_gt, refused, wrong, cal_pos, cal_all = [], [], [], 0, 0, 0, [], []
        for i in idx:
            f = queries[int(i)]
            truth = gt_pose.get(f.stamp)
            t0 = time.perf_counter()
            est = loc.localize(f)
            lat.append(time.perf_counter() - t0)
            if truth is None:
                continue
            n_gt += 1
            if not est.accepted:
                refused += 1
                continue
            dt, dr = pose_error(est.T_map_cam, truth)
            if est.covariance is not None:
                d_pos, d_all = mahalanobis_sq(est.T_map_cam, est.covariance, truth)
                cal_pos.append(d_pos < CHI2_95[3])
                cal_all.append(d_all < CHI2_95[6])
            terr.append(dt)
            rerr.append(dr)
            wrong += dt > 0.25 or dr > 10
        terr, rerr, lat = np.array(terr), np.array(rerr), np.array(lat) * 1000

        def share(t, r):
            return 100.0 * np.sum((terr <= t) & (rerr <= r)) / max(n_gt, 1)
        rows.append((name, mname, len(kmap), n_gt,
                     np.median(terr) * 100 if len(terr) else np.nan, np.median(rerr) if len(rerr) else np.nan,
                     share(0.05, 5), share(0.10, 10), share(0.25, 10), 100.0 * refused / max(n_gt, 1),
                     100.0 * wrong / max(n_gt, 1), np.percentile(lat, 50), np.percentile(lat, 95),
                     100.0 * np.mean(cal_pos) if cal_pos else np.nan, 100.0 * np.mean(cal_all) if cal_all else np.nan))
        print(fmt(rows[-1]), flush=True)
    return rows


HEADER = ("| data | method | keyframes | queries | median t (cm) | median r (deg) | 5cm/5deg | 10cm/10deg | "
          "25cm/10deg | refused | wrong >25cm/10deg | p50 ms | p95 ms | truth in 95 % ellipsoid: position | 6-DoF |\n|"
          + "---|" * 15)


def fmt(r):
    return (f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.1f} | {r[5]:.2f} | {r[6]:.1f} % | {r[7]:.1f} % | "
            f"{r[8]:.1f} % | {r[9]:.1f} % | {r[10]:.1f} % | {r[11]:.0f} | {r[12]:.0f} | {r[13]:.0f} % | {r[14]:.0f} % |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("RELOCAL_DATA_DIR", REPO.parent / "shared" / "data")))
    ap.add_argument("--synthetic", type=Path, default=None, help="scene from `relocal synth` (default: generate seed 0)")
    ap.add_argument("--no-synthetic", action="store_true")
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--max-queries", type=int, default=0, help="evenly subsample queries (0 = all)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__} on {torch.get_num_threads()} threads\n")
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        synthetic = None
        if not a.no_synthetic:
            synthetic = a.synthetic
            if synthetic is None:
                from relocal_ros.data.synth import generate_scene
                synthetic = generate_scene(work / "synthetic", 0, progress=False)
        print(HEADER)
        rows = []
        for name, m, q, gt in datasets(a.data, synthetic, work):
            rows += run(name, m, q, gt, a.methods, a.max_queries)
    print("\nsummary")
    print(HEADER)
    for r in rows:
        print(fmt(r))


if __name__ == "__main__":
    main()
