#!/usr/bin/env python3
"""Keyframe retrieval recall of the global descriptors, on held-out synthetic scenes and on real TUM RGB-D data.

Methods: densevlad (models/densevlad_sift_k64.npz, learned on synthetic seeds 1000-1002 only), densevlad_nopca (the
same VLAD before PCA-whitening, 8192-d; same extraction, so the same time), raw_pixels (32 x 24 thumbnail), netvlad
(relocal_ros.retrieval.netvlad with its shipped weights, when importable), xfeat_vlad (the package default:
FrameEncoder("xfeat") + VLAD, 64 words learned from that dataset's map images, as mapping.builder does when no
vocabulary ships; one upright descriptor per keyframe here, no in-plane rotated copies).

Datasets: synthetic scene(s) rendered at 320 x 240 into a temporary folder (map = seq-01, queries = seq-02; seed 101,
and 102 unless --quick); TUM fr1_rpy (map = every 2nd frame of the first 60 %, queries = the remaining 40 %) and
fr1_desk queries against that fr1_rpy map (same office, same mocap world frame), when shared/data is present.
Ground truth: the readers' poses. A query is a hit at k when one of its top-k map frames has frustum overlap >= 0.5,
where overlap = the MEAN of RelocNet's two directed frustum overlaps (Algorithm 1, D = 4 m, 0.1 m voxels; the same
convention as scripts/train_netvlad.py). Queries with no map frame at overlap >= 0.5 are excluded (count printed).
Everything runs on one thread; times are per query image, descriptor only (search is negligible at these sizes).
Progress goes to stderr; the full table is printed to stdout at the end.

    python bench/bench_retrieval.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import faiss  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from relocal_ros.data.sources import open_source  # noqa: E402
from relocal_ros.data.synth import generate_scene  # noqa: E402
from relocal_ros.data.synth.overlap import _frustum_voxels, _in_frustum, frustum_overlap  # noqa: E402
from relocal_ros.geometry.poses import invert  # noqa: E402

THRESHOLD = 0.5
MAX_DEPTH, VOXEL = 4.0, 0.1


def overlap_matrix(T_q: list, T_m: list, intr) -> np.ndarray:
    """Q x M mean of the two directed frustum overlaps; frustum_overlap's computation with the voxel grid built once."""
    vox = _frustum_voxels(intr, MAX_DEPTH, VOXEL)

    def directed(Ta, Tb):
        T = invert(Tb) @ Ta
        return float(_in_frustum(vox @ T[:3, :3].T + T[:3, 3], intr, MAX_DEPTH).mean())

    O = np.zeros((len(T_q), len(T_m)))
    for i, a in enumerate(T_q):
        for j, b in enumerate(T_m):
            if np.linalg.norm(a[:3, 3] - b[:3, 3]) > 2.5 * MAX_DEPTH:  # frusta cannot meet
                continue
            O[i, j] = 0.5 * (directed(a, b) + directed(b, a))
    # the shortcut must agree with the package function
    i, j = np.unravel_index(np.argmax(O), O.shape)
    ref = 0.5 * (frustum_overlap(T_q[i], T_m[j], intr, MAX_DEPTH, VOXEL) + frustum_overlap(T_m[j], T_q[i], intr,
                                                                                             MAX_DEPTH, VOXEL))
    assert abs(ref - O[i, j]) < 1e-9, (ref, O[i, j])
    return O


def load_frames(source, indices) -> list:
    out = []
    for i in indices:
        f = source[i]
        if f.pose is not None:
            out.append((f.rgb, f.pose))
    return out


# ------------------------------------------------------------------------------------------------ methods
def make_methods() -> tuple[list, list[str]]:
    from relocal_ros.retrieval.densevlad import DenseVladDescriptor
    from relocal_ros.retrieval.global_descriptors import make_global_descriptor
    notes = []
    dv = make_global_descriptor("densevlad")
    methods = [("densevlad", dv), ("raw_pixels", make_global_descriptor("raw_pixels"))]
    assert isinstance(dv, DenseVladDescriptor)
    try:
        from relocal_ros.retrieval import netvlad as nv
        if not Path(nv.DEFAULT_WEIGHTS).is_file():
            raise FileNotFoundError(f"weights {nv.DEFAULT_WEIGHTS} missing")
        methods.append(("netvlad", make_global_descriptor("netvlad", {"threads": 1})))
    except Exception as e:  # noqa: BLE001 - any reason makes it unavailable, and the reason is printed
        notes.append(f"netvlad: not available ({type(e).__name__}: {e})")
    methods.append(("xfeat_vlad", None))  # built per dataset: its vocabulary comes from the map
    return methods, notes


class XfeatVlad:
    """The package default: XFeat + VLAD with a vocabulary learned from the map images (mapping.builder, 'map')."""

    def __init__(self, map_images):
        from relocal_ros.retrieval.encoder import FrameEncoder
        from relocal_ros.retrieval.vlad import learn_vocabulary
        from relocal_ros.matching.features import make_extractor
        ex = make_extractor("xfeat", {"threads": 1})
        self.map_feats = [ex(img) for img in map_images]
        vocab = learn_vocabulary(np.concatenate([f.descriptors for f in self.map_feats]), 64)
        self.encoder = FrameEncoder("xfeat", {"threads": 1}, vocab)
        self.map_desc = np.stack([self.encoder.vlad(f.descriptors) for f in self.map_feats])
        h, w = map_images[0].shape[:2]
        self.encoder.warm_up(w, h)  # its ONNX session is built per image size: not part of a query's time

    def __call__(self, rgb):
        return self.encoder(rgb)[1]


def evaluate(name, map_frames, query_frames, intr, methods, lines):
    t0 = time.time()
    O = overlap_matrix([T for _, T in query_frames], [T for _, T in map_frames], intr)
    valid = O.max(1) >= THRESHOLD
    lines.append(f"\n== {name}: {len(map_frames)} map frames, {len(query_frames)} queries, "
                 f"{int((~valid).sum())} excluded (no map frame with overlap >= {THRESHOLD}); "
                 f"ground truth {time.time() - t0:.0f} s")
    lines.append(f"{'method':<17} {'dim':>5} {'R@1':>7} {'R@5':>7} {'ms/query':>9}")
    print(lines[-2], file=sys.stderr, flush=True)
    if not valid.any():
        lines.append("(no evaluable query)")
        return
    rand_hits1 = np.mean([(O[q] >= THRESHOLD).mean() for q in np.flatnonzero(valid)])
    for mname, m in methods:
        map_imgs = [img for img, _ in map_frames]
        if mname == "xfeat_vlad":
            m = XfeatVlad(map_imgs)
            M = m.map_desc
        elif mname == "densevlad":
            Mv = np.stack([m.vlad_vector(img) for img in map_imgs])
            M = np.stack([m.project(v) for v in Mv])
        else:
            M = np.stack([m(img) for img in map_imgs])
        Q, Qn, times = [], [], []
        for img, _ in query_frames:
            t = time.perf_counter()
            if mname == "densevlad":
                v = m.vlad_vector(img)
                d = m.project(v)
                Qn.append(v)
            else:
                d = m(img)
            times.append(time.perf_counter() - t)
            Q.append(d)
        results = [(mname, M, np.stack(Q))]
        if mname == "densevlad":
            results.append(("densevlad_nopca", Mv, np.stack(Qn)))
        for rname, Md, Qd in results:
            index = faiss.IndexFlatIP(Md.shape[1])
            index.add(np.ascontiguousarray(Md, np.float32))
            _, top = index.search(np.ascontiguousarray(Qd[valid], np.float32), 5)
            hits = O[np.flatnonzero(valid)[:, None], top] >= THRESHOLD
            lines.append(f"{rname:<17} {Md.shape[1]:>5} {hits[:, :1].any(1).mean():>7.3f} {hits.any(1).mean():>7.3f} "
                         f"{1000 * np.mean(times):>9.1f}")
            print(lines[-1], file=sys.stderr, flush=True)
    lines.append(f"{'(random ranking)':<17} {'':>5} {rand_hits1:>7.3f} {'':>7} {'':>9}   expected R@1 of a random pick")
    print(lines[-1], file=sys.stderr, flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one synthetic scene, every 2nd query, fewer TUM queries")
    ap.add_argument("--seeds", type=int, nargs="+", help="held-out synthetic seeds (default 101 102; --quick 101)")
    ap.add_argument("--data", type=Path, help="folder for rendered scenes (default: a temporary folder)")
    ap.add_argument("--shared-data", type=Path, default=Path(os.environ.get("RELOCAL_DATA_DIR",
                                                                             REPO.parent / "shared" / "data")))
    a = ap.parse_args(argv)
    cv2.setNumThreads(1)
    faiss.omp_set_num_threads(1)
    seeds = a.seeds or ([101] if a.quick else [101, 102])
    if {1000, 1001, 1002}.intersection(seeds):
        ap.error("seeds 1000-1002 trained the DenseVLAD model; evaluate on other seeds")
    qstep = 2 if a.quick else 1
    methods, notes = make_methods()
    lines = [f"bench_retrieval{' --quick' if a.quick else ''}: recall@k, hit = a top-k map frame with mean frustum "
             f"overlap >= {THRESHOLD}; 1 thread"] + notes
    for n in notes:
        print(n, file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench_retrieval_") as tmp:
        root = a.data or Path(tmp)
        for seed in seeds:
            folder = root / f"synth_{seed}"
            if not (folder / "seq-02").is_dir():
                generate_scene(folder, seed, width=320, height=240, workers=1, progress=False)
            ms, qs = open_source(folder / "seq-01"), open_source(folder / "seq-02")
            evaluate(f"synthetic seed {seed} (320x240, map seq-01, queries seq-02)", load_frames(ms, range(len(ms))),
                     load_frames(qs, range(0, len(qs), qstep)), ms.intrinsics, methods, lines)
    rpy = a.shared_data / "tum_rgbd" / "rgbd_dataset_freiburg1_rpy"
    desk = a.shared_data / "tum_rgbd" / "rgbd_dataset_freiburg1_desk"
    if (rpy / "rgb.txt").is_file():
        src = open_source(rpy)
        split = int(0.6 * len(src))
        map_frames = load_frames(src, range(0, split, 2))
        evaluate(f"TUM fr1_rpy (map: every 2nd of first 60 %, queries: last 40 %{', every 2nd' if a.quick else ''})",
                 map_frames, load_frames(src, range(split, len(src), qstep)), src.intrinsics, methods, lines)
        if (desk / "rgb.txt").is_file():
            dsrc = open_source(desk)
            evaluate("TUM fr1_desk queries vs the fr1_rpy map", map_frames, load_frames(dsrc, range(len(dsrc))),
                     src.intrinsics, methods, lines)
        else:
            lines.append(f"\nfr1_desk: skipped ({desk} not found)")
    else:
        lines.append(f"\nreal data: skipped ({rpy} not found; set RELOCAL_DATA_DIR)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
