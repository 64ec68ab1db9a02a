#!/usr/bin/env python3
"""Refusal figures: queries from a place that is not in the map must get no pose. Prints the false-accept rate
(poses published for out-of-map queries) both ways between a real map (TUM fr1_rpy, first 60 %) and a synthetic
scene, next to the in-map refusal rate, with the solver thresholds in force."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from relocal_ros.data.sources import open_source  # noqa: E402
from relocal_ros.data.splits import split_tum  # noqa: E402
from relocal_ros.data.synth import generate_scene  # noqa: E402
from relocal_ros.mapping.builder import build_map  # noqa: E402
from relocal_ros.pipeline import Relocalizer, default_conf  # noqa: E402


def accepted(reloc, source) -> tuple[int, int]:
    n = sum(reloc.localize(source[i]).accepted for i in range(len(source)))
    return n, len(source)


def main():
    data = Path(os.environ.get("RELOCAL_DATA_DIR", REPO.parent / "shared" / "data"))
    rpy = data / "tum_rgbd" / "rgbd_dataset_freiburg1_rpy"
    print("solver thresholds:", {k: v for k, v in default_conf()["solver"].items()
                                 if k.startswith(("min_", "max_position"))})
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        scene = generate_scene(work / "synth", 7, progress=False)
        synth_map = Relocalizer(build_map(open_source(scene / "seq-01"), progress=False))
        synth_q = open_source(scene / "seq-02", with_ground_truth=False)
        rows = [("synthetic map", "synthetic queries (in map)", *accepted(synth_map, synth_q))]
        if (rpy / "rgb.txt").is_file():
            m, q = split_tum(rpy, work / "m", work / "q", 0.6)
            real_map = Relocalizer(build_map(open_source(m), progress=False))
            real_q = open_source(q, with_ground_truth=False)
            rows += [("fr1_rpy map", "fr1_rpy queries (in map)", *accepted(real_map, real_q)),
                     ("fr1_rpy map", "synthetic queries (not in map)", *accepted(real_map, synth_q)),
                     ("synthetic map", "fr1_rpy queries (not in map)", *accepted(synth_map, real_q))]
        else:
            print(f"(real data not found under {data}: cross-scene rows skipped)")
    print("| map | queries | poses published | rate |\n|---|---|---|---|")
    for m, q, n, total in rows:
        print(f"| {m} | {q} | {n} of {total} | {100.0 * n / total:.1f} % |")


if __name__ == "__main__":
    main()
