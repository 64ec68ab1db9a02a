"""Soak benchmark: a bag looped at 30 Hz through the three real node processes for 10 minutes on this machine.
Prints RSS per process over time (growth after warm-up), image->pose latency p50/p95/max, frames sent / dropped /
refused and why, pose accuracy against the ground truth, the REP-105 map->odom error, the last /diagnostics, and
saves a plot of memory and latency over time.

    python bench/soak.py [--minutes 10] [--bag data/default/queries_bag --map data/default/map] [--out build/soak]

Defaults use the demo's synthetic scene (run `make demo` once to create data/default)."""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=30.0, help="camera rate (Hz)")
    ap.add_argument("--bag", type=Path, default=ROOT / "data" / "default" / "queries_bag")
    ap.add_argument("--map", type=Path, default=ROOT / "data" / "default" / "map")
    ap.add_argument("--warm-up", type=float, default=60.0, help="seconds excluded from the RSS growth figure")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "soak")
    a = ap.parse_args(argv)
    if not a.bag.exists() or not (a.map / "CURRENT").exists():
        print(f"soak: need a bag ({a.bag}) and a map ({a.map}); run `make demo` once to create them",
              file=sys.stderr)
        return 2
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(20, 200)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from relocal_ros.evaluation.soak import plot_soak, run_soak
    from relocal_ros.nodes.runner import GraphProcesses
    a.out.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="soak-logs-"))
    graph = GraphProcesses(str(a.map), extra=["-p", "inference_node:reliable_images:=true",
                                              "-p", "pose_solver:base_frame:=base_link"], log_dir=logs).start()

    def progress(t, report):
        if int(t) % 60 == 0:
            rss = ", ".join(f"{n} {s[-1][1]:.0f}" for n, s in report.rss.items() if s)
            print(f"  t={t:5.0f} s  images {report.images_sent}  poses {len(report.poses)}  RSS MiB: {rss}",
                  flush=True)

    try:
        report = run_soak(a.bag, a.minutes * 60.0, graph, rate_hz=a.rate, progress=progress)
    finally:
        graph.stop()
    s = report.summary(a.warm_up)
    png = plot_soak(report, a.out / "soak.png")
    (a.out / "soak.json").write_text(json.dumps(s, indent=1, default=str))
    inf, sol = s["inference_diagnostics"], s["solver_diagnostics"]
    print(f"\nsoak: {a.minutes:.1f} min at {a.rate:.0f} Hz, map {a.map}, bag {a.bag}")
    print(f"images sent {s['images_sent']}, received by the inference node {inf.get('images_received')}, "
          f"dropped as stale while busy {inf.get('frames_dropped')}, refused {inf.get('refused', 0)} "
          f"(last reason: {inf.get('last_refusal', '-')}), bad input {inf.get('bad_input', 0)}, "
          f"internal errors {inf.get('internal_errors', 0)}")
    print(f"evidence -> solver {sol.get('evidence_received')}, solver refused {sol.get('refused', 0)}, "
          f"poses published {sol.get('poses_published')}, poses matched to sent images {s['poses_published']}")
    print(f"latency image->pose ms: p50 {s['latency_ms_p50']:.0f}  p95 {s['latency_ms_p95']:.0f}  "
          f"max {s['latency_ms_max']:.0f}")
    print(f"accuracy: {100 * s['within_5cm_5deg']:.1f} % within 5 cm/5 deg, {s['wrong_over_25cm_10deg']} poses "
          f"off by > 25 cm or 10 deg; map->odom median error {s['map_odom_median_cm']:.2f} cm / "
          f"{s['map_odom_median_deg']:.2f} deg (TF skipped for want of odom: "
          f"{sol.get('tf_skipped_no_odom_at_stamp', 0)})")
    for name, samples in report.rss.items():
        after = [m for t, m in samples if t >= a.warm_up]
        print(f"RSS {name:18s} at warm-up end {after[0] if after else float('nan'):7.1f} MiB, max after "
              f"{max(after) if after else float('nan'):7.1f} MiB, growth {s['rss_growth_mib_after_warm_up'].get(name, float('nan')):+.1f} MiB")
    print(f"alive at end: {s['alive_at_end']}")
    print(f"plot: {png}\nfigures: {a.out / 'soak.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
