#!/usr/bin/env python3
"""The hard benchmark: real scenes the default was not tuned on, each reported on its own beside the two peers
run on the same map and query frames (never pooled).

Scenes (from ../shared/data, each skipped with a note when absent):
  fr1_rpy-sparse   map = first 60 % of TUM fr1_rpy with keyframes >= 0.3 m / 20 deg apart, queries = the other 40 %
  fr1_rpy-reversed[-sparse]  the same recording the other way round: map = its last 60 % (keyframes as
                   `relocal build-map` spaces them by default; -sparse: >= 0.3 m / 20 deg apart), queries = the
                   first 40 %; never tuned on (first run 2026-12-07)
  fr1_desk         the sparse map of fr1_rpy-sparse; queries = the 5 frames of fr1_desk (another recording of the
                   office)
  fr1_rpy vs fr1_desk map  the other way round: map = the 5 fr1_desk frames, queries = all 181 fr1_rpy frames
  sun3d-frag1      SUN3D study room, fragment 1: map = its first 60 %, queries = the rest
  sun3d-frag2      the same for fragment 2
  sun3d-fragN-reversed  the other way round: map = the fragment's last 60 %, queries = its first 40 % (never tuned
                   on, first run 2026-12-07)
  sun3d-fragN-sparse  the same splits with keyframes >= 0.3 m / 20 deg apart: 1 (fragment 1) or 2 keyframes, the
                   queries 0.27-0.28 m (median) from the nearest one, 15 deg (fragment 1) or 3 deg (fragment 2)
  sun3d-cross      map = all of fragment 1, queries = fragment 2 (a different view of repetitive cubicles; the two
                   fragments' ground truths disagree by ~10 cm, so "correct" here is 15 cm / 10 deg)
  stairs           7-Scenes stairs sample: map = seq-02 + seq-03 (TrainSplit), queries = seq-01 + seq-04
  out-of-map       the fr1_rpy sparse map, queries = the SUN3D fragment-2 frames (every answer is wrong)
  synthetic N      `relocal synth --seed N --wide-queries 40 --sensor-model`: map = seq-01 (the mapping walk),
                   queries = seq-04 (40 views 0.5-1.5 m and 30-60 deg off the walk), every frame through the sensor
                   model (depth noise ~z^2, holes at depth edges, motion blur, exposure changes); seeds 9001-9004
                   are the ones the rules were set on, 9005-9008 are held out (never tuned on)

Methods: the product's default (`relocal localize` with no options: RGB-D when the query has depth), the same
without the query's depth (RGB only), the earlier default (global mutual-NN only, no guided matching, no depth),
and the peers: XFeat + LighterGlue + keyframe depth + PnP (640x480, 5 references pooled, hloc-like) and SIFT +
keyframe depth + PnP (640x480, Lowe ratio 0.8, 5 references pooled).

Columns: share of queries within 5 cm/5 deg and 10 cm/10 deg (refusals count as failures), answered, wrong
(accepted and off by > 25 cm or > 10 deg), confidently wrong (the issue's "a pose off by > 10 cm or 10 deg is either
refused or carries a covariance that says so": accepted, off by more than the scene's tolerance, with the truth
outside its published 6-DoF 95 % ellipsoid; out-of-map: every answer), the share of accepted poses whose ground
truth lies inside the published 95 % ellipsoid (position 3-DoF / 6-DoF), and latency per query (localize(), map
loading excluded).
`--dump FILE` writes every accepted or refused hypothesis's acceptance scores with its error (for plots)."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from relocal_ros.data.sources import open_source  # noqa: E402
from relocal_ros.data.tum import read_file_list  # noqa: E402
from relocal_ros.evaluation.metrics import CHI2_95, confidently_wrong, mahalanobis_sq  # noqa: E402
from relocal_ros.geometry.poses import pose_error  # noqa: E402
from relocal_ros.mapping.builder import build_map  # noqa: E402
from relocal_ros.mapping.keyframe_map import KeyframeMap  # noqa: E402
from relocal_ros.pipeline import Relocalizer  # noqa: E402

FINETUNE = "finetune"  # a build-conf key of this benchmark, not of build_map: (method, seconds) of train-scene
PEER = {"num_references": 5, "use_depth": False, "guided_matching": False, "fallback_matcher": ""}
METHODS = {
    # name: (map build conf, relocalizer conf)
    "relocal default": ({}, {}),
    "relocal RGB only": ({}, {"inference": {"use_depth": False}}),
    "relocal + LighterGlue fallback": ({}, {"inference": {"fallback_matcher": "lighterglue"}}),
    "relocal earlier default (mnn, no depth)": ({}, {"inference": {"use_depth": False, "guided_matching": False,
                                                                   "num_references": 3, "fallback_matcher": ""}}),
    "peer XFeat+LighterGlue+depth+PnP": ({"extractor_conf": {"width": 640, "height": 480}},
                                         {"inference": {**PEER, "matcher": "lighterglue"}}),
    "peer SIFT+depth+PnP": ({"extractor": "sift", "rotations": [0.0]},
                            {"inference": {**PEER, "min_similarity": 0.0, "max_ratio": 0.8}}),
}
# learned methods (issue #17), each with the query's depth vetting its evidence (the default) and without it;
# xfeat_relative is ExReNet's classical twin (same solver). Not in the default run: `--methods` names them.
LEARNED = {
    "learned SANet (depth-checked)": ({}, {"inference": {"method": "sanet"}}),
    "learned SANet, RGB only": ({}, {"inference": {"method": "sanet", "use_depth": False}}),
    # the same after `relocal train-scene MAP --method sanet --budget 300` on a copy of the map (its own cache entry:
    # the shipped-weights rows never see the map's fine-tuned weights)
    "learned SANet fine-tuned on the map, 300 s (depth-checked)": ({FINETUNE: ("sanet", 300.0)},
                                                                  {"inference": {"method": "sanet"}}),
    "learned ExReNet (depth-checked)": ({}, {"inference": {"method": "exrenet"}}),
    "learned ExReNet, RGB only": ({}, {"inference": {"method": "exrenet", "use_depth": False}}),
    "classical twin xfeat_relative (depth-checked)": ({}, {"inference": {"method": "xfeat_relative"}}),
    "classical twin xfeat_relative, RGB only": ({}, {"inference": {"method": "xfeat_relative", "use_depth": False}}),
}
# settings measured against the default before a change of default (run on request, like the learned methods)
VARIANTS = {
    "relocal default, 5 references": ({}, {"inference": {"num_references": 5}}),
    "relocal default, no extra references": ({}, {"inference": {"extra_references": 0}}),
    "relocal default, 1 extra reference": ({}, {"inference": {"extra_references": 1}}),
    "relocal RGB only, no extra references": ({}, {"inference": {"use_depth": False, "extra_references": 0}}),
    "relocal default, 4 extra references": ({}, {"inference": {"extra_references": 4}}),
    # keyframes also stored turned by +-90 deg in the image plane (for cameras that roll that far)
    "relocal default, +-90 deg copies too": ({"rotations": [0.0, 45.0, -45.0, 90.0, -90.0]}, {}),
    # full-resolution XFeat for map and queries (issue #16 item 2), as many keypoints as the default, then twice
    "relocal default, XFeat 640x480": ({"extractor_conf": {"width": 640, "height": 480}}, {}),
    "relocal default, XFeat 640x480, 2048 keypoints": (
        {"extractor_conf": {"width": 640, "height": 480, "max_keypoints": 2048}}, {}),
    # a lower similarity for the global mutual-NN matches (docs/measurements.md "Five measurements, no change")
    "relocal default, mnn similarity 0.75": ({}, {"inference": {"min_similarity": 0.75}}),
    "relocal default, mnn similarity 0.7": ({}, {"inference": {"min_similarity": 0.7}}),
    "relocal default, mnn similarity 0.7, ratio 0.95": ({}, {"inference": {"min_similarity": 0.7, "max_ratio": 0.95}}),
    # the covariance without the image-wide pixel shift (same poses and decisions; coverage only)
    "relocal default, covariance without the common pixel shift": ({}, {"solver": {"common_pixel_sigma": 0.0}}),
    # guided-only support refused whatever the query's depth says (docs/measurements.md "The depth vouches")
    "relocal default, the depth does not vouch": ({}, {"solver": {"depth_vouches": False}}),
    # a query's references matched and their own hypotheses tried on one thread (the default uses two)
    "relocal default, one search thread": ({}, {"inference": {"search_threads": 1}}),
    # RGB only, a pose confirmed by the finer brightness score alone (solver photometric_band_confirmation off)
    "relocal RGB only, without the band confirmation": ({}, {"inference": {"use_depth": False},
                                                             "solver": {"photometric_band_confirmation": 1.1}}),
    "learned SANet, RGB only, without the band confirmation": ({}, {"inference": {"method": "sanet", "use_depth": False},
                                                                    "solver": {"photometric_band_confirmation": 1.1}}),
    # the LighterGlue fallback on fewer of the references' and the query's strongest keypoints, or on one reference
    "relocal + LighterGlue fallback, 256 keypoints": ({}, {"inference": {"fallback_matcher": "lighterglue",
                                                                         "fallback_keypoints": 256}}),
    "relocal + LighterGlue fallback, 384 keypoints": ({}, {"inference": {"fallback_matcher": "lighterglue",
                                                                         "fallback_keypoints": 384}}),
    "relocal + LighterGlue fallback, 1 reference": ({}, {"inference": {"fallback_matcher": "lighterglue",
                                                                       "fallback_references": 1}}),
    # the covariance without what the inliers' halves disagree on (solver split_half_weight; same poses and decisions)
    "relocal default, covariance without the split-half term": ({}, {"solver": {"split_half_weight": 0.0}}),
}
DEFAULT_METHODS = list(METHODS)
METHODS.update(LEARNED)
METHODS.update(VARIANTS)


def subset_tum(src: Path, out: Path, stamps: list[str], with_gt: bool) -> Path:
    """A TUM folder listing only `stamps` of src (images linked, not copied)."""
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("rgb", "depth"):
        if not (out / sub).exists():
            os.symlink(src.resolve() / sub, out / sub, target_is_directory=True)
    keep = set(stamps)
    for name in ("rgb.txt", "depth.txt"):
        entries = read_file_list(src / name)
        if name == "depth.txt":  # TUM depth stamps differ from the colour ones: keep those nearest the kept colours
            t = np.array([float(s) for s in stamps])
            entries = [(s, f) for s, f in entries if np.min(np.abs(t - float(s))) <= 0.02]
        else:
            entries = [(s, f) for s, f in entries if s in keep]
        (out / name).write_text("# subset\n" + "".join(f"{s} {f}\n" for s, f in entries))
    for name in ("calibration.yaml",) + (("groundtruth.txt",) if with_gt else ()):
        if (src / name).is_file() and not (out / name).exists():
            os.symlink(src.resolve() / name, out / name)
    return out


# The rules of the hard benchmark (README "Results", docs/measurements.md) were set on the real scenes and
# TUNED_SEEDS. No setting was ever chosen on HELD_OUT_SEEDS (first run 2026-12-04): the check that those choices
# transfer to scenes they never saw.
TUNED_SEEDS = (9001, 9002, 9003, 9004)
HELD_OUT_SEEDS = (9005, 9006, 9007, 9008)


def protocol_split(stamps: list[str], reverse: bool = False) -> tuple[list[str], list[str]]:
    """(map stamps, query stamps): the first 60 % of a recording and the rest (the rule of `relocal_ros.data.splits.
    split_tum`), or, reversed, the last 60 % and the first 40 % (a split no rule was chosen on)."""
    n_map = int(round(0.6 * len(stamps)))
    if reverse:
        return stamps[len(stamps) - n_map:], stamps[:len(stamps) - n_map]
    return stamps[:n_map], stamps[n_map:]


def scenes(data: Path, work: Path, synthetic_seeds=()):
    """(name, map source, map build overrides, query source, ground-truth lookup, correct (m, deg))."""
    rpy = data / "tum_rgbd" / "rgbd_dataset_freiburg1_rpy"
    desk = data / "tum_rgbd" / "rgbd_dataset_freiburg1_desk"
    sun = data / "sun3d_3dmatch_sample" / "studyroom"
    stairs = data / "7scenes_kapture_sample" / "stairs"
    sparse = {"min_translation": 0.3, "min_rotation_deg": 20.0}
    if (rpy / "rgb.txt").is_file():
        st = [s for s, _ in read_file_list(rpy / "rgb.txt")]
        map_st, query_st = protocol_split(st)
        m = subset_tum(rpy, work / "rpy_map", map_st, True)
        q = subset_tum(rpy, work / "rpy_query", query_st, False)
        gt = open_source(rpy).track
        yield "fr1_rpy-sparse", m, sparse, q, gt, (0.10, 10.0)
        # the same recording the other way round, never tuned on (first run 2026-12-07): map = its last 60 % as
        # `relocal build-map` makes it by default (and sparse), queries = the first 40 %
        map_st, query_st = protocol_split(st, reverse=True)
        rm = subset_tum(rpy, work / "rpy_rev_map", map_st, True)
        rq = subset_tum(rpy, work / "rpy_rev_query", query_st, False)
        yield "fr1_rpy-reversed", rm, {}, rq, gt, (0.10, 10.0)
        yield "fr1_rpy-reversed-sparse", rm, sparse, rq, gt, (0.10, 10.0)
        if (desk / "rgb.txt").is_file():
            yield "fr1_desk", m, sparse, desk, open_source(desk).track, (0.10, 10.0)
            # the other way round: another recording's 5 frames as the whole map, every fr1_rpy frame a query (the
            # map's views are 0.2-1 m and tens of degrees from most of them; many see nothing the map holds)
            yield ("fr1_rpy vs fr1_desk map", desk, {}, subset_tum(rpy, work / "rpy_all_q", st, False), gt,
                   (0.10, 10.0))
        if (sun / "rgb.txt").is_file():
            f2 = [s for s, _ in read_file_list(sun / "rgb.txt") if float(s) > 60]
            yield "out-of-map (sun3d vs fr1 map)", m, sparse, subset_tum(sun, work / "sun_f2_all_q", f2, False), \
                None, (0.10, 10.0)
    else:
        print(f"(TUM data not found under {data}: skipped)")
    if (sun / "rgb.txt").is_file():
        st = [s for s, _ in read_file_list(sun / "rgb.txt")]
        gt = open_source(sun).track
        frags = {"frag1": [s for s in st if float(s) < 60], "frag2": [s for s in st if float(s) > 60]}
        # each fragment split as the protocol says, then the other way round (never tuned on, 2026-12-07)
        for reverse, tag in ((False, ""), (True, "_rev")):
            for name, fs in frags.items():
                map_st, query_st = protocol_split(fs, reverse)
                yield (f"sun3d-{name}" + ("-reversed" if reverse else ""),
                       subset_tum(sun, work / f"sun_{name}{tag}_map", map_st, True), {},
                       subset_tum(sun, work / f"sun_{name}{tag}_query", query_st, False), gt, (0.10, 10.0))
        for name in frags:  # the same splits, a keyframe only every 0.3 m / 20 deg: 1-2 keyframes
            yield (f"sun3d-{name}-sparse", work / f"sun_{name}_map", sparse, work / f"sun_{name}_query", gt,
                   (0.10, 10.0))
        yield ("sun3d-cross (frag2 vs frag1 map)", subset_tum(sun, work / "sun_frag1_all", frags["frag1"], True), {},
               subset_tum(sun, work / "sun_frag2_all_q", frags["frag2"], False), gt, (0.15, 10.0))
    else:
        print(f"(SUN3D data not found under {data}: skipped)")
    if (stairs / "seq-01").is_dir():
        yield "stairs (7-Scenes sample)", stairs, {"sequences": ["seq-02", "seq-03"],
                                                   "query_sequences": ["seq-01", "seq-04"]}, stairs, None, (0.10, 10.0)
    else:
        print(f"(7-Scenes sample not found under {data}: skipped)")
    for seed in synthetic_seeds:
        scene = work / f"synth_wide_{seed}"
        if not (scene / "seq-04").is_dir():
            from relocal_ros.data.synth import generate_scene
            generate_scene(scene, seed, wide_queries=40, sensor_model=True, progress=False)
        held_out = ", held out" if seed in HELD_OUT_SEEDS else ""
        yield (f"synthetic {seed} (wide baseline, sensor model{held_out})", scene,
               {"sequences": ["seq-01"], "query_sequences": ["seq-04"]}, scene, None, (0.10, 10.0))


class SevenScenesSplit:
    """The listed sequences of a 7-Scenes scene folder as one frame source."""

    def __init__(self, scene: Path, sequences: list[str], with_ground_truth: bool):
        self.parts = [open_source(scene / s, with_ground_truth=with_ground_truth) for s in sequences]
        self.index = [(p, i) for p in self.parts for i in range(len(p))]
        self.intrinsics = self.parts[0].intrinsics

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        p, j = self.index[i]
        return p[j]


def open_split(path: Path, overrides: dict, with_gt: bool, queries: bool = False):
    if "sequences" in overrides:
        return SevenScenesSplit(path, overrides["query_sequences" if queries else "sequences"], with_gt)
    return open_source(path, with_ground_truth=with_gt)


def get_map(work: Path, scene: str, map_path: Path, overrides: dict, build_conf: dict):
    build = {k: v for k, v in overrides.items() if k not in ("sequences", "query_sequences")}
    # keyed by what the map is built from, not by the scene's name: the scenes that share a map (fr1_rpy-sparse,
    # fr1_desk, out-of-map) share one build and one fine-tuning
    key = json.dumps({"map": str(map_path), "sequences": overrides.get("sequences"), **build, **build_conf},
                     sort_keys=True)
    folder = work / "maps" / hashlib.sha256(key.encode()).hexdigest()[:12]
    if (folder / "key.json").is_file():
        return KeyframeMap.load(folder)
    finetune = build_conf.get(FINETUNE)
    conf = {**build, **{k: v for k, v in build_conf.items() if k != FINETUNE}}
    kmap = build_map(open_split(map_path, overrides, True), conf, progress=False)
    kmap.save(folder)
    if finetune:
        from relocal_ros.networks.sanet import finetune as sanet_finetune
        trainers = {"sanet": sanet_finetune.train_scene}
        try:
            meta = trainers[finetune[0]](folder, finetune[1], resume=False, progress=False)
            b, a = meta["validation_before"]["median_error_m"], meta["validation_after"]["median_error_m"]
            print(f"({scene}: {finetune[0]} fine-tuned {meta['seconds_total']:.0f} s on {len(kmap)} keyframes, "
                  f"held-out median {100 * b:.1f} -> {100 * a:.1f} cm)", flush=True)
        except ValueError as e:  # e.g. too few keyframes to hold any out: the row uses the shipped weights
            print(f"({scene}: not fine-tuned: {e})", flush=True)
    (folder / "key.json").write_text(key)  # last: a map whose fine-tuning was interrupted is built again
    return KeyframeMap.load(folder)


def run_scene(scene, map_path, overrides, query_path, gt_track, correct, methods, work, dump):
    queries = open_split(query_path, overrides, False, queries=True)
    truth_src = open_split(query_path, overrides, True, queries=True) if "sequences" in overrides else None
    rows = []
    for mname in methods:
        build_conf, reloc_conf = METHODS[mname]
        kmap = get_map(work, scene, map_path, overrides, build_conf)
        reloc = Relocalizer(kmap, reloc_conf)
        reloc.localize(queries[0])  # warm-up: lazy model loading, ONNX sessions
        n, ok5, ok10, okc, answered, wrong, overconfident, lat, cov3, cov6 = 0, 0, 0, 0, 0, 0, 0, [], [], []
        for i in range(len(queries)):
            f = queries[i]
            truth = (truth_src[i].pose if truth_src is not None else
                     (gt_track.at(float(f.stamp)) if gt_track is not None else None))
            t0 = time.perf_counter()
            est = reloc.localize(f)
            lat.append(time.perf_counter() - t0)
            n += 1
            rec = {"scene": scene, "method": mname, "stamp": f.stamp, "ms": 1000 * lat[-1], "accepted": est.accepted,
                   "reason": est.reason, "inliers": est.inliers, "inlier_ratio": est.inlier_ratio,
                   **{k: v for k, v in est.scores.items() if isinstance(v, (int, float, str))}}
            if est.accepted:
                answered += 1
            hyp = est.T_map_cam if est.T_map_cam is not None else est.candidate
            if hyp is not None and truth is not None:
                dt, dr = pose_error(hyp, truth)
                rec.update(t_err=dt, r_err=dr)
                if est.accepted:
                    ok5 += dt <= 0.05 and dr <= 5
                    ok10 += dt <= 0.10 and dr <= 10
                    okc += dt <= correct[0] and dr <= correct[1]
                    wrong += dt > max(0.25, 2 * correct[0]) or dr > 10
                    d6 = np.inf  # no covariance: nothing says how wrong the pose may be
                    if est.covariance is not None:
                        d3, d6 = mahalanobis_sq(est.T_map_cam, est.covariance, truth)
                        cov3.append(d3 < CHI2_95[3])
                        cov6.append(d6 < CHI2_95[6])
                        rec.update(d3=d3, d6=d6, sigma_pos=float(np.sqrt(np.trace(est.covariance[:3, :3]))),
                                   sigma_rot_deg=float(np.degrees(np.sqrt(np.trace(est.covariance[3:, 3:])))))
                    overconfident += confidently_wrong(dt, dr, d6, *correct)
            elif est.accepted and gt_track is None and truth_src is None:
                wrong += 1  # out-of-map: any answer is wrong
                overconfident += 1  # ... and no covariance can say how wrong
            if dump is not None:
                dump.write(json.dumps(rec) + "\n")
        lat = np.array(lat) * 1000
        row = {"scene": scene, "method": mname, "keyframes": len(kmap), "queries": n,
               "5cm": 100 * ok5 / n, "10cm": 100 * ok10 / n, "correct": 100 * okc / n, "answered": 100 * answered / n,
               "wrong": 100 * wrong / n, "overconfident": 100 * overconfident / n,
               "cov3": 100 * np.mean(cov3) if cov3 else np.nan,
               "cov6": 100 * np.mean(cov6) if cov6 else np.nan, "p50": np.percentile(lat, 50),
               "p95": np.percentile(lat, 95), "correct_def": f"{correct[0] * 100:.0f}cm/{correct[1]:.0f}deg"}
        print(fmt(row), flush=True)
        rows.append(row)
    return rows


HEADER = ("| scene | method | keyframes | queries | 5cm/5° | 10cm/10° | correct (tolerance) | answered | wrong | "
          "confidently wrong | in 95 % ellipsoid 3-DoF / 6-DoF | p50 / p95 ms |\n|" + "---|" * 12)


def fmt(r):
    return (f"| {r['scene']} | {r['method']} | {r['keyframes']} | {r['queries']} | {r['5cm']:.1f} % | "
            f"{r['10cm']:.1f} % | {r['correct']:.1f} % ({r['correct_def']}) | {r['answered']:.1f} % | "
            f"{r['wrong']:.1f} % | {r['overconfident']:.1f} % | {r['cov3']:.0f} % / {r['cov6']:.0f} % | "
            f"{r['p50']:.0f} / {r['p95']:.0f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("RELOCAL_DATA_DIR", REPO.parent / "shared" / "data")))
    ap.add_argument("--work", type=Path, default=REPO / "out" / "bench_hard", help="splits and cached maps")
    ap.add_argument("--methods", nargs="*", default=DEFAULT_METHODS, choices=list(METHODS),
                    help="default: the product's variants and the peers; the learned methods on request")
    ap.add_argument("--scenes", nargs="*", default=None, help="substrings of scene names to run (default all)")
    ap.add_argument("--dump", type=Path, default=None, help="JSON lines of every query's scores and errors")
    ap.add_argument("--synthetic-seeds", type=int, nargs="*", default=[*TUNED_SEEDS, *HELD_OUT_SEEDS],
                    help="synthetic wide-baseline scenes (`relocal synth --wide-queries 40 --sensor-model`); "
                         "9005-9008 are held out: no setting was chosen on them")
    a = ap.parse_args()
    import torch
    torch.set_num_threads(2)
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__} on {torch.get_num_threads()} threads\n")
    a.work.mkdir(parents=True, exist_ok=True)
    dump = open(a.dump, "w") if a.dump else None
    print(HEADER)
    rows = []
    for scene, m, ov, q, gt, correct in scenes(a.data, a.work, a.synthetic_seeds):
        if a.scenes and not any(s in scene for s in a.scenes):
            continue
        rows += run_scene(scene, m, ov, q, gt, correct, a.methods, a.work, dump)
    if dump:
        dump.close()
    print("\nsummary\n" + HEADER)
    for r in rows:
        print(fmt(r))


if __name__ == "__main__":
    main()
