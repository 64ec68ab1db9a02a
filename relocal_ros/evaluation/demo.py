"""`make demo`: the whole product on the embedded default data, no network.

1. the default synthetic scene (seed 0, deterministic; generated on first run into data/default),
2. a ROS 2 bag of its query trajectory (colour, aligned depth, camera_info, ground truth),
3. a keyframe map of its mapping trajectory,
4. the three nodes started as separate processes, the bag replayed into them with its original timing,
5. the published poses scored against the ground truth: median errors, shares within 5 cm/5 deg and
   25 cm/5 deg, and image→pose latency p50/p95."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO / "data" / "default")
    ap.add_argument("--rate", type=float, default=1.0, help="replay speed factor")
    a = ap.parse_args(argv)

    from relocal_ros.data.bags import write_bag
    from relocal_ros.data.sources import open_source
    from relocal_ros.data.synth import generate_scene
    from relocal_ros.evaluation.metrics import evaluate_trajectory
    from relocal_ros.evaluation.replay import replay_bag
    from relocal_ros.mapping.builder import build_map
    from relocal_ros.nodes.runner import GraphProcesses

    scene = a.data / "scene"
    if not (scene / "calibration.yaml").is_file():
        print(f"[1/4] generating the default synthetic scene -> {scene}")
        generate_scene(scene, 0)
    else:
        print(f"[1/4] default synthetic scene: {scene}")
    queries = open_source(scene / "seq-02")
    bag = a.data / "queries_bag"
    if not bag.exists():
        print(f"[2/4] writing the query bag -> {bag}")
        write_bag(queries, bag, storage="mcap", rate_hz=5.0)  # 7-Scenes-style stamps are 1 s apart: play at 5 Hz
    map_dir = a.data / "map"
    print(f"[3/4] building the map from {scene / 'seq-01'} -> {map_dir}")
    t0 = time.perf_counter()
    kmap = build_map(open_source(scene / "seq-01"), progress=False)
    kmap.save(map_dir)
    print(f"      {len(kmap)} keyframes in {time.perf_counter() - t0:.1f} s")
    # a DDS domain of its own, so a demo never talks to a robot on the same network
    os.environ.setdefault("ROS_DOMAIN_ID", "77")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    print("[4/4] replaying the bag through keyframe_indexer + inference_node + pose_solver (3 processes)")
    est = a.data / "estimate.txt"
    # the bag's camera_link is the camera body frame (there is no robot): its pose is what the solver publishes
    args = ["-p", "pose_solver:base_frame:=camera_link", "-p", "inference_node:reliable_images:=true"]
    with GraphProcesses(str(map_dir), extra=args, log_dir=a.data):
        report = replay_bag(bag, est, rate=a.rate, base_frame="camera_link")
    gt = a.data / "ground_truth.txt"
    from relocal_ros.data.trajectory import write_tum_trajectory
    posed = [queries[i] for i in range(len(queries))]
    write_tum_trajectory(gt, [f.stamp for f in posed], [f.pose for f in posed])
    acc = evaluate_trajectory(est, gt, queries=[f.stamp for f in posed])
    lat = np.asarray(report.latencies_s) * 1000
    print("\nresults on the default synthetic scene (live ROS 2 graph)")
    print(f"  images replayed: {report.images_sent}, poses published: {report.poses_received}, "
          f"refused/dropped: {report.images_sent - report.poses_received}")
    print("  " + acc.format().replace("\n", "\n  "))
    print(f"  within 25 cm / 5 deg: {acc.share_within(0.25, 5.0) * 100:.1f} %")
    if len(lat):
        print(f"  latency image->pose: p50 {np.percentile(lat, 50):.0f} ms, p95 {np.percentile(lat, 95):.0f} ms")
    print(f"\nestimate: {est}\nground truth: {gt}\n(try: relocal evaluate {est} {gt})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
