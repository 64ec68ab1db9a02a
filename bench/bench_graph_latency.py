#!/usr/bin/env python3
"""Image -> pose latency through the live three-node graph beside the same frames in process.

fr1_rpy (../shared/data): map = first 60 %, queries = the rest written as a bag (colour + aligned depth +
camera_info, 7.5 Hz as recorded: every 4th frame of the 30 Hz sequence), replayed through relocal-graph's three
processes (the inference node with `use_depth`) at the recorded rate and slower; the in-process figure is
`Relocalizer.localize()` on the same frames. Prints poses published, accuracy and latency p50/p95 per rate."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from relocal_ros.data.bags import bag_from_dataset  # noqa: E402
from relocal_ros.data.sources import open_source  # noqa: E402
from relocal_ros.data.splits import split_tum  # noqa: E402
from relocal_ros.evaluation.metrics import evaluate_trajectory  # noqa: E402
from relocal_ros.evaluation.replay import replay_bag  # noqa: E402
from relocal_ros.mapping.builder import build_map  # noqa: E402
from relocal_ros.nodes.runner import GraphProcesses  # noqa: E402
from relocal_ros.pipeline import Relocalizer  # noqa: E402


WHERE_IMAGES_GO = ("images_received", "frames_dropped", "stale_or_duplicate_stamps", "bad_input", "refused",
                   "evidence_published", "evidence_received", "poses_published", "last_refusal")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("RELOCAL_DATA_DIR", REPO.parent / "shared" / "data")))
    ap.add_argument("--rates", type=float, nargs="*", default=[1.0, 0.4], help="replay speed factors")
    ap.add_argument("--node-arg", action="append", default=[], dest="ros_args", metavar="ARG",
                    help="a node parameter, repeatable: --node-arg pose_solver:tf_broadcast:=false (where the time goes)")
    ap.add_argument("--log-dir", type=Path, default=None, help="keep the nodes' logs here (default: dropped)")
    a = ap.parse_args()
    rpy = a.data / "tum_rgbd" / "rgbd_dataset_freiburg1_rpy"
    if not (rpy / "rgb.txt").is_file():
        sys.exit(f"fr1_rpy not found under {a.data}")
    os.environ.setdefault("ROS_DOMAIN_ID", "78")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        m, q = split_tum(rpy, work / "m", work / "q", 0.6)
        kmap = build_map(open_source(m), progress=False)
        kmap.save(work / "map")
        bag = work / "queries_bag"
        bag_from_dataset(open_source(q), bag)
        queries = open_source(q, with_ground_truth=False)
        reloc = Relocalizer(kmap)
        reloc.localize(queries[0])
        lat = []
        for i in range(len(queries)):
            f = queries[i]
            t0 = time.perf_counter()
            reloc.localize(f)
            lat.append(time.perf_counter() - t0)
        lat = np.array(lat) * 1000
        print(f"in process: {len(queries)} queries, p50 {np.percentile(lat, 50):.0f} ms, "
              f"p95 {np.percentile(lat, 95):.0f} ms ({1000 / lat.mean():.1f} Hz sustainable)")
        args = ["-p", "pose_solver:base_frame:=camera_link", "-p", "inference_node:reliable_images:=true",
                "-p", "inference_node:use_depth:=true", *[x for arg in a.ros_args for x in ("-p", arg)]]
        for rate in a.rates:
            est = work / f"est_{rate}.txt"
            logs = a.log_dir / f"rate_{rate}" if a.log_dir else work
            logs.mkdir(parents=True, exist_ok=True)
            with GraphProcesses(str(work / "map"), extra=args, log_dir=logs):
                report = replay_bag(bag, est, rate=rate, base_frame="camera_link")
            acc = evaluate_trajectory(est, rpy / "groundtruth.txt", [queries[i].stamp for i in range(len(queries))])
            gl = np.asarray(report.latencies_s) * 1000
            print(f"live graph at {7.5 * rate:.1f} Hz: {report.images_sent} images, {report.poses_received} poses, "
                  f"within 5 cm/5 deg {acc.share_within(0.05, 5) * 100:.1f} %, "
                  f"latency p50 {np.percentile(gl, 50):.0f} ms, p95 {np.percentile(gl, 95):.0f} ms"
                  if len(gl) else f"live graph at {7.5 * rate:.1f} Hz: no pose")
            if report.to_evidence_s:
                def p(x):
                    x = np.asarray(x) * 1000
                    return f"{np.percentile(x, 50):.0f}/{np.percentile(x, 95):.0f}"
                print(f"  where the time goes (p50/p95 ms): image published -> evidence received "
                      f"{p(report.to_evidence_s)}, of which the inference node's compute {p(report.inference_s)}; "
                      f"evidence -> pose received {p(report.evidence_to_pose_s)}")
            # where images went missing: the nodes' own counts, from their last /diagnostics
            for name, values in sorted(report.diagnostics.items()):
                keep = {k: v for k, v in values.items() if k in WHERE_IMAGES_GO}
                if keep:
                    print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in keep.items()))


if __name__ == "__main__":
    main()
