#!/usr/bin/env python3
"""Scene-coordinate methods beside the relative-pose and feature-matching ones, on the same maps and query frames:

  synthetic  map = seq-01, queries = seq-02 of a held-out synthetic scene (seed --synthetic-seed, generated here)
  fr1_rpy    map = first 60 % of TUM fr1_rpy, queries = the remaining 40 %   (../shared/data)
  fr1_desk   same map, queries = the frames of TUM fr1_desk (another recording, same office and world frame)

Methods, each through relocal_ros.pipeline.Relocalizer(kmap, {"inference": {"method": m}}):
  xfeat_pnp (feature-matching baseline, the product default), exrenet (relative poses), sanet (scene-agnostic
  scene coordinates), dsacpp (per-map head, trained here with `train_scene(map, --dsacpp-budget)` first).
A method whose module or weights are missing is listed as skipped with the reason.

Printed per dataset and method: median translation / rotation error, share within 5 cm/5 deg and 10 cm/10 deg,
refused share, p50/p95 per-query latency (wall time of one localize, CPU), the share of accepted poses whose ground
truth lies inside their published 95 % ellipsoid (position / full pose); for the scene-coordinate methods also
the share of predicted scene coordinates within 5/10/20 cm of the truth (query depth + ground-truth pose), whose
CDFs are saved as a PNG (as SANet's Fig. 6).

    nice -n 10 .venv/bin/python bench/bench_scene_coordinates.py [--dsacpp-budget 300] [--plot cdf.png]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_localization import ground_truth_by_stamp  # noqa: E402

from relocal_ros.data.sources import open_source  # noqa: E402
from relocal_ros.data.splits import split_tum  # noqa: E402
from relocal_ros.evaluation.metrics import CHI2_95, mahalanobis_sq  # noqa: E402
from relocal_ros.geometry.poses import pose_error  # noqa: E402
from relocal_ros.mapping.builder import build_map  # noqa: E402
from relocal_ros.mapping.keyframe_map import KeyframeMap  # noqa: E402
from relocal_ros.networks.dsacpp.model import ground_truth_scene_coordinates  # noqa: E402
from relocal_ros.pipeline import Relocalizer  # noqa: E402

METHODS = {
    # name: relocalizer conf
    "xfeat_pnp": {},
    "exrenet": {"inference": {"method": "exrenet", "num_references": 5}},
    # scene-coordinate methods with the pipeline's defaults for them (soft-inlier PnP, threshold 3.75 % of the
    # image width): what `relocal localize --method sanet|dsacpp` gives
    "sanet": {"inference": {"method": "sanet"}},
    "dsacpp": {"inference": {"method": "dsacpp"}},
}
SCENE_COORDINATE = ("sanet", "dsacpp")
CDF_AT = (0.05, 0.10, 0.20)


def datasets(data_dir: Path, synthetic: Path | None, work: Path):
    """(name, map source key, map source, query source with depth, ground-truth source)."""
    if synthetic is not None:
        yield ("synthetic", "synthetic", open_source(synthetic / "seq-01"),
               open_source(synthetic / "seq-02", with_ground_truth=False), open_source(synthetic / "seq-02"))
    rpy = data_dir / "tum_rgbd" / "rgbd_dataset_freiburg1_rpy"
    desk = data_dir / "tum_rgbd" / "rgbd_dataset_freiburg1_desk"
    if (rpy / "rgb.txt").is_file():
        m, q = split_tum(rpy, work / "rpy_map", work / "rpy_query", 0.6)
        yield "fr1_rpy", "fr1_rpy", open_source(m), open_source(q, with_ground_truth=False), open_source(rpy)
        if (desk / "rgb.txt").is_file():
            yield ("fr1_desk", "fr1_rpy", open_source(m), open_source(desk, with_ground_truth=False),
                   open_source(desk))
    else:
        print(f"(real data not found under {data_dir}: real-data rows skipped)")


def make_localizer(method: str, kmap, threads: int):
    conf = {k: dict(v) for k, v in METHODS[method].items()}
    conf.setdefault("inference", {})["network_threads"] = threads
    try:
        loc = Relocalizer(kmap, conf)
    except (ImportError, FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        return None, f"{type(e).__name__}: {e}"
    problem = getattr(getattr(loc.engine.method, "runner", None), "problem", "")
    return (None, problem) if problem else (loc, "")


def run(name, kmap, queries, gt, methods, threads, max_queries, dump=None):
    truth = ground_truth_by_stamp(gt)
    idx = np.arange(len(queries))
    if max_queries and len(idx) > max_queries:
        idx = idx[np.linspace(0, len(idx) - 1, max_queries).round().astype(int)]
    rows, cdfs = [], {}
    for m in methods:
        loc, why = make_localizer(m, kmap, threads)
        if loc is None:
            print(f"| {name} | {m} | skipped: {why} |", flush=True)
            continue
        loc.localize(queries[int(idx[0])])  # warm-up (lazy model loading, ONNX sessions)
        terr, rerr, lat, n, refused, wrong, sc, inside = [], [], [], 0, 0, 0, [], []
        for i in idx:
            f = queries[int(i)]
            T = truth.get(f.stamp)
            t0 = time.perf_counter()
            ev = loc.engine.infer(f)
            est = loc.solver.solve(ev)
            lat.append(time.perf_counter() - t0)
            if T is None:
                continue
            n += 1
            if m in SCENE_COORDINATE and len(ev.map_points) and f.depth is not None:
                X = ground_truth_scene_coordinates(ev.image_points, f.depth, f.intrinsics, T)
                ok = np.isfinite(X).all(1)
                sc.append(np.linalg.norm(ev.map_points[ok] - X[ok], axis=1))
            if dump is not None:  # bench_hard.py's record: plot_acceptance.py reads both
                hyp = est.T_map_cam if est.accepted else est.candidate
                err = dict(zip(("t_err", "r_err"), pose_error(hyp, T))) if hyp is not None else {}
                dump.write(json.dumps({"scene": name, "method": m, "stamp": f.stamp, "accepted": est.accepted,
                                       "reason": est.reason, "inliers": est.inliers, **err,
                                       **{k: v for k, v in est.scores.items() if isinstance(v, (int, float))}},
                                      default=float) + "\n")
            if not est.accepted:
                refused += 1
                continue
            dt, dr = pose_error(est.T_map_cam, T)
            terr.append(dt)
            rerr.append(dr)
            wrong += dt > 0.25 or dr > 10
            if est.covariance is not None:
                d3, d6 = mahalanobis_sq(est.T_map_cam, est.covariance, T)
                inside.append((d3 < CHI2_95[3], d6 < CHI2_95[6]))
        terr, rerr, lat = np.array(terr), np.array(rerr), np.array(lat) * 1000

        def share(t, r):
            return 100.0 * np.sum((terr <= t) & (rerr <= r)) / max(n, 1)
        sc = np.concatenate(sc) if sc else np.zeros(0)
        if len(sc):
            cdfs[m] = sc
        sc_txt = " / ".join(f"{100.0 * np.mean(sc < c):.0f} %" for c in CDF_AT) if len(sc) else "-"
        cov_txt = " / ".join(f"{100.0 * v:.0f} %" for v in np.mean(inside, axis=0)) if inside else "-"
        rows.append(f"| {name} | {m} | {len(kmap)} | {n} | "
                    f"{np.median(terr) * 100 if len(terr) else np.nan:.1f} | "
                    f"{np.median(rerr) if len(rerr) else np.nan:.2f} | {share(0.05, 5):.1f} % | "
                    f"{share(0.10, 10):.1f} % | {100.0 * refused / max(n, 1):.1f} % | "
                    f"{100.0 * wrong / max(n, 1):.1f} % | "
                    f"{np.percentile(lat, 50):.0f} | "
                    f"{np.percentile(lat, 95):.0f} | {cov_txt} | {sc_txt} |")
        print(rows[-1], flush=True)
    return rows, cdfs


HEADER = ("| data | method | keyframes | queries | median t (cm) | median r (deg) | 5cm/5deg | 10cm/10deg | refused | "
          "wrong >25cm/10deg | p50 ms | p95 ms | truth in 95 % ellipsoid 3/6-DoF | scene coords within 5/10/20 cm |\n|" + "---|" * 14)


def plot_cdfs(all_cdfs: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, max(len(all_cdfs), 1), figsize=(4.5 * max(len(all_cdfs), 1), 3.6), squeeze=False)
    grid = np.linspace(0, 0.5, 201)
    for ax, (data, cdfs) in zip(axes[0], all_cdfs.items()):
        for m, err in cdfs.items():
            ax.plot(grid * 100, [100.0 * np.mean(err < g) for g in grid], label=m)
        for c in CDF_AT:
            ax.axvline(c * 100, color="0.85", lw=0.8)
        ax.set_title(data)
        ax.set_xlabel("scene-coordinate error (cm)")
        ax.set_ylabel("% of predictions")
        ax.set_ylim(0, 100)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("RELOCAL_DATA_DIR", REPO.parent / "shared" / "data")))
    ap.add_argument("--synthetic", type=Path, default=None, help="scene from `relocal synth` (default: generate)")
    ap.add_argument("--synthetic-seed", type=int, default=9100,
                    help="scene seed; 9000+ are never trained on by the networks here (ExReNet, SANet: seeds < 9000)")
    ap.add_argument("--no-synthetic", action="store_true")
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--dsacpp-budget", type=float, default=300.0, help="train-scene seconds per map")
    ap.add_argument("--threads", type=int, default=2, help="torch / ONNX Runtime threads")
    ap.add_argument("--max-queries", type=int, default=0, help="evenly subsample queries (0 = all)")
    ap.add_argument("--plot", type=Path, default=Path("scene_coordinate_cdf.png"))
    ap.add_argument("--work", type=Path, default=None, help="keep maps and trained heads here (default: temp dir)")
    ap.add_argument("--dump", type=Path, default=None,
                    help="JSON lines of every query's acceptance scores and error (for bench/plot_acceptance.py)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__} on {torch.get_num_threads()} threads; "
          f"load average {os.getloadavg()[0]:.1f}\n", flush=True)
    rows, all_cdfs = [], {}
    dump = open(a.dump, "w") if a.dump else None
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or Path(tmp)
        synthetic = None
        if not a.no_synthetic:
            synthetic = a.synthetic
            if synthetic is None:
                synthetic = work / f"synthetic_seed{a.synthetic_seed}"
                if not (synthetic / "seq-02").is_dir():
                    from relocal_ros.data.synth import generate_scene
                    generate_scene(synthetic, a.synthetic_seed, progress=False)
        maps = {}
        print(HEADER)
        for name, key, map_src, queries, gt in datasets(a.data, synthetic, work):
            if key not in maps:
                map_dir = work / f"map_{key}"
                if not (map_dir / "CURRENT").is_file():
                    build_map(map_src, {"extractor": "xfeat"}, progress=False).save(map_dir)
                kmap = KeyframeMap.load(map_dir)
                kmap.path = map_dir  # where DsacppRunner finds the head trained for this map
                if "dsacpp" in a.methods:
                    from relocal_ros.networks.dsacpp.train import train_scene
                    t0 = time.perf_counter()
                    meta = train_scene(map_dir, a.dsacpp_budget, resume=True, progress=False,
                                       conf={"threads": a.threads})
                    print(f"(dsacpp head for {key}: {len(kmap)} keyframes, trained {meta['seconds_total']:.0f} s "
                          f"(this run {time.perf_counter() - t0:.0f} s), validation scene-coord median "
                          f"{meta.get('val_median_cm', float('nan')):.1f} cm vs mean-point "
                          f"{meta.get('val_baseline_median_cm', float('nan')):.1f} cm)", flush=True)
                maps[key] = kmap
            r, cdfs = run(name, maps[key], queries, gt, a.methods, a.threads, a.max_queries, dump)
            rows += r
            if cdfs:
                all_cdfs[name] = cdfs
    if dump:
        dump.close()
    print("\nsummary")
    print(HEADER)
    for r in rows:
        print(r)
    if all_cdfs:
        plot_cdfs(all_cdfs, a.plot)
        print(f"\nscene-coordinate error CDFs: {a.plot}")


if __name__ == "__main__":
    main()
