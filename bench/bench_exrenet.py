#!/usr/bin/env python3
"""ExReNet relative poses beside SIFT + 5-point on the same image pairs at the same image size, and its latency.

Pairs
  synthetic  held-out scenes of our generator (seeds never trained on), ExReNet's dense and sparse sampling rules
  fr1_rpy    TUM fr1_rpy frame pairs 0.05–0.6 m / < 30 deg apart by ground truth (../shared/data)
  fr1_desk   each fr1_desk frame with the fr1_rpy frame nearest to it by ground truth (another recording)
Both methods get the same canonical 160 x 120 views (undistorted, f = 131.25 px), the size ExReNet runs at;
SIFT + 5-point (OpenCV findEssentialMat + recoverPose, ratio test 0.8) is also run on the full 640 x 480 images of
the real pairs as a reference. Errors: rotation (deg), angle between translation directions (deg); a method that
returns nothing for a pair counts as 180 deg / 90 deg there (failures are also counted).

Latency: one query against 5 keyframes with 100 MC-dropout samples each (query encoding + regressor + sampled
head; keyframe features precomputed as at map load), 2 CPU threads, ONNX Runtime; GPU backends when present."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from relocal_ros.geometry.poses import invert, pose_error  # noqa: E402
from relocal_ros.networks.exrenet.model import canonical_intrinsics, canonical_view  # noqa: E402
from relocal_ros.networks.exrenet.train import VALIDATION_SEEDS  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "tum_rgbd"


def sift_five_point(img_r: np.ndarray, img_q: np.ndarray, K: np.ndarray, sift=None):
    """T_kf_query (unit translation) from SIFT matches + 5-point RANSAC, or None."""
    sift = sift or cv2.SIFT_create()
    g = [cv2.cvtColor(i, cv2.COLOR_RGB2GRAY) for i in (img_r, img_q)]
    (k1, d1), (k2, d2) = (sift.detectAndCompute(x, None) for x in g)
    if d1 is None or d2 is None or len(k1) < 5 or len(k2) < 5:
        return None
    m = cv2.BFMatcher(cv2.NORM_L2).knnMatch(d1, d2, k=2)
    good = [a for a, *b in m if b and a.distance < 0.8 * b[0].distance]
    if len(good) < 5:
        return None
    p1 = np.float64([k1[x.queryIdx].pt for x in good])
    p2 = np.float64([k2[x.trainIdx].pt for x in good])
    try:
        E, mask = cv2.findEssentialMat(p1, p2, K, method=cv2.RANSAC, prob=0.999, threshold=1.0)
    except cv2.error:  # OpenCV 5 asserts on degenerate sets (zero parallax, collinear points): a failure here
        return None
    if E is None or E.shape != (3, 3):
        return None
    _, R, t, _ = cv2.recoverPose(E, p1, p2, K, mask=mask)
    T_q_r = np.eye(4)
    T_q_r[:3, :3], T_q_r[:3, 3] = R, t.ravel()
    return invert(T_q_r)   # query camera in the keyframe frame


def errors(T_est, T_gt) -> tuple[float, float]:
    if T_est is None:
        return 180.0, 90.0
    _, rot = pose_error(T_est, T_gt)
    a, b = T_est[:3, 3], T_gt[:3, 3]
    cos = a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)
    return float(rot), float(np.degrees(np.arccos(np.clip(cos, -1, 1))))


def synthetic_pairs(n: int, seed: int):
    from relocal_ros.data.synth import build_scene
    from relocal_ros.data.synth.pairs import sample_pair
    from relocal_ros.data.synth.renderer import Renderer
    intr = canonical_intrinsics()
    rng = np.random.default_rng(seed)
    out, s = [], 0
    while len(out) < n:
        scene, tex = build_scene(VALIDATION_SEEDS + 500 + s)
        s += 1
        r = Renderer(scene.boxes, tex, intr, scene.light, scene.ambient, scene.intensity)
        try:
            for _ in range(min(20, n - len(out))):
                p = sample_pair(scene, r, rng, "dense" if rng.random() < 0.7 else "sparse")
                if p is not None:
                    out.append((p.rgb_a, intr, p.rgb_b, intr, invert(p.T_a) @ p.T_b, None))
        finally:
            r.release()
    return out


def tum_pairs(n: int, seed: int):
    from relocal_ros.data.tum import TumSequence
    rpy = TumSequence(DATA / "rgbd_dataset_freiburg1_rpy")
    frames = [rpy[i] for i in range(len(rpy))]
    frames = [f for f in frames if f.pose is not None]
    rng = np.random.default_rng(seed)
    cands = []
    for i in range(len(frames)):
        for j in range(i + 1, len(frames)):
            d, a = pose_error(frames[i].pose, frames[j].pose)
            if 0.05 < d < 0.6 and a < 30:
                cands.append((i, j))
    pick = rng.choice(len(cands), min(n, len(cands)), replace=False) if cands else []
    rpy_pairs = []
    for k in pick:
        i, j = cands[k]
        a, b = frames[i], frames[j]
        rpy_pairs.append((a.rgb, a.intrinsics, b.rgb, b.intrinsics, invert(a.pose) @ b.pose, (a, b)))
    desk = TumSequence(DATA / "rgbd_dataset_freiburg1_desk")
    desk_pairs = []
    for i in range(len(desk)):
        q = desk[i]
        if q.pose is None:
            continue
        scores = [pose_error(f.pose, q.pose) for f in frames]
        k = int(np.argmin([d + a / 30.0 for d, a in scores]))
        f = frames[k]
        desk_pairs.append((f.rgb, f.intrinsics, q.rgb, q.intrinsics, invert(f.pose) @ q.pose, (f, q)))
    return rpy_pairs, desk_pairs


def run_pairs(name: str, pairs, runner) -> None:
    K = canonical_intrinsics().K
    rows = {"exrenet": [], "sift+5pt (160x120)": [], "sift+5pt (640x480)": []}
    scale_err = []
    sift = cv2.SIFT_create()
    for img_r, intr_r, img_q, intr_q, T_gt, full in pairs:
        vr, vq = canonical_view(img_r, intr_r), canonical_view(img_q, intr_q)
        fr, cr = runner.encode(vr)
        fq, cq = runner.encode(vq)
        p = runner.predict(fr[None], cr[None], fq, cq)[0]
        rows["exrenet"].append(errors(p.T_kf_query, T_gt))
        scale_err.append(abs(p.scale - np.linalg.norm(T_gt[:3, 3])))
        rows["sift+5pt (160x120)"].append(errors(sift_five_point(vr, vq, K, sift), T_gt))
        if full is not None:
            a, b = full
            ua = cv2.undistort(a.rgb, a.intrinsics.K, np.array(a.intrinsics.dist))
            ub = cv2.undistort(b.rgb, b.intrinsics.K, np.array(b.intrinsics.dist))
            rows["sift+5pt (640x480)"].append(errors(sift_five_point(ua, ub, a.intrinsics.K, sift), T_gt))
    print(f"\n{name}: {len(pairs)} pairs (median baseline {np.median([np.linalg.norm(p[4][:3, 3]) for p in pairs]):.2f} m, "
          f"{np.median([pose_error(np.eye(4), p[4])[1] for p in pairs]):.1f} deg)")
    print(f"  {'method':<22} {'rot med':>8} {'dir med':>8} {'rot<5':>6} {'dir<15':>7} {'failed':>7}")
    ident = [errors(np.eye(4) @ np.diag([1, 1, 1, 1]), p[4])[0] for p in pairs]
    for m, e in rows.items():
        if not e:
            continue
        e = np.array(e)
        failed = np.mean((e[:, 0] == 180.0) & (e[:, 1] == 90.0))
        print(f"  {m:<22} {np.median(e[:, 0]):8.2f} {np.median(e[:, 1]):8.2f} {np.mean(e[:, 0] < 5):6.0%} "
              f"{np.mean(e[:, 1] < 15):7.0%} {failed:7.0%}")
    print(f"  {'identity (no motion)':<22} {np.median(ident):8.2f} {'':>8}")
    print(f"  exrenet scale: median |s - |t*|| = {np.median(scale_err):.3f} m")


def latency(runner, repeats: int) -> None:
    rng = np.random.default_rng(0)
    views = [(rng.random((120, 160, 3)) * 255).astype(np.uint8) for _ in range(6)]
    feats = [runner.encode(v) for v in views[:5]]
    fr, cr = np.stack([f[0] for f in feats]), np.stack([f[1] for f in feats])
    for _ in range(5):
        runner.predict(fr, cr, *runner.encode(views[5]))
    tot, enc, reg = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fq, cq = runner.encode(views[5])
        t1 = time.perf_counter()
        runner.predict(fr, cr, fq, cq)
        t2 = time.perf_counter()
        tot.append(t2 - t0), enc.append(t1 - t0), reg.append(t2 - t1)
    ms = lambda x, q: np.percentile(x, q) * 1e3  # noqa: E731
    print(f"  {runner.backend_name:<14} total p50 {ms(tot, 50):6.1f} ms  p95 {ms(tot, 95):6.1f} ms   "
          f"(query encoder p50 {ms(enc, 50):.1f} ms, regressor + {runner.mc_samples} MC samples x 5 p50 "
          f"{ms(reg, 50):.1f} ms)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None)
    p.add_argument("--pairs", type=int, default=200)
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-accuracy", action="store_true")
    a = p.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    from relocal_ros.networks.backends import cuda_available, tensorrt_available
    from relocal_ros.networks.exrenet.runtime import ExReNetRunner
    runner = ExReNetRunner(a.weights, "onnxruntime", 100, a.threads)
    print(f"ExReNet weights: {a.weights or 'models/exrenet_synthetic.pt'}  ({runner.info})")
    if not a.skip_accuracy:
        run_pairs("synthetic (held-out scenes)", synthetic_pairs(a.pairs, 1), runner)
        if DATA.is_dir():
            rpy, desk = tum_pairs(a.pairs, 2)
            run_pairs("TUM fr1_rpy", rpy, runner)
            run_pairs("TUM fr1_desk vs nearest fr1_rpy frame", desk, runner)
        else:
            print(f"\nreal data skipped: {DATA} not found")
    print(f"\nlatency, 1 query x 5 keyframes x 100 MC samples, {a.threads} CPU threads, {a.repeats} runs")
    latency(runner, a.repeats)
    if tensorrt_available():
        latency(ExReNetRunner(a.weights, "tensorrt", 100), a.repeats)
    if cuda_available():
        latency(ExReNetRunner(a.weights, "torch", 100), a.repeats)
    if not (tensorrt_available() or cuda_available()):
        print("  (no GPU here: TensorRT / CUDA rows not measured)")


if __name__ == "__main__":
    main()
