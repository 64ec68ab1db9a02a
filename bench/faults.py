"""Fault benchmark: kill -9 of the real keyframe_indexer process during its ~/save_map service, at random points,
N trials (default 50). After each kill the map directory must hold the previous version bit for bit or the new one
complete (KeyframeMap.load verifies every checksum) — never a mix. Prints how often each happened and how long a
save takes, so that the kill delays are known to cover the whole save.

    python bench/faults.py [--trials 50] [--map data/default/map]"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--map", type=Path, default=ROOT / "data" / "default" / "map")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if not (a.map / "CURRENT").exists():
        print(f"faults: no map at {a.map}; run `make demo` once to create it", file=sys.stderr)
        return 2
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(20, 200)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import rclpy
    from std_srvs.srv import Trigger

    from relocal_ros.mapping.keyframe_map import KeyframeMap, check_after_interrupted_save, version_fingerprint
    work = Path(tempfile.mkdtemp(prefix="relocal-faults-"))
    m = work / "map"
    shutil.copytree(a.map, m)
    t0 = time.perf_counter()
    KeyframeMap.load(m).save(work / "timing")
    save_s = time.perf_counter() - t0
    print(f"map {a.map}: {len(KeyframeMap.load(m))} keyframes, {sum(f.stat().st_size for f in (m / version_fingerprint(m)[0]).iterdir()) / 1e6:.1f} MB; one save in-process {1000 * save_s:.0f} ms")
    rng = random.Random(a.seed)
    rclpy.init()
    node = rclpy.create_node("faults_bench")
    outcomes = {"previous": 0, "new": 0}
    mixes = []
    try:
        for trial in range(a.trials):
            before = version_fingerprint(m)
            p = subprocess.Popen([sys.executable, "-m", "relocal_ros.nodes.keyframe_indexer", "--ros-args",
                                  "-p", f"map_path:={m}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cli = node.create_client(Trigger, "/keyframe_indexer/save_map")
            if not cli.wait_for_service(timeout_sec=90):
                p.kill()
                raise RuntimeError("keyframe_indexer did not offer ~/save_map within 90 s")
            fut = cli.call_async(Trigger.Request())
            # the service round trip adds a few ms before save() starts: cover up to 1.5 save durations
            time.sleep(rng.uniform(0.0, 1.5 * save_s + 0.02))
            p.kill()
            p.wait()
            done = fut.done()
            node.destroy_client(cli)
            try:
                outcome = check_after_interrupted_save(m, before)
                outcomes[outcome] += 1
            except Exception as e:
                mixes.append(f"trial {trial}: {e}")
                outcome = "BROKEN"
            print(f"  trial {trial + 1:2d}/{a.trials}: {'answered' if done else 'killed before answering'}, "
                  f"map is the {outcome} version", flush=True)
    finally:
        node.destroy_node()
        rclpy.shutdown()
    print(f"\nkill -9 of keyframe_indexer during ~/save_map, {a.trials} trials: previous version intact "
          f"{outcomes['previous']}, new version complete {outcomes['new']}, mixed or unloadable {len(mixes)}")
    for line in mixes:
        print("  " + line)
    shutil.rmtree(work, ignore_errors=True)
    return 1 if mixes else 0


if __name__ == "__main__":
    sys.exit(main())
