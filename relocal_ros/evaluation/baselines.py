"""Classical baselines measured beside the product in the benchmarks (never on the inference path).

SIFT + 5-point: relative pose to the best retrieved keyframe from the essential matrix (OpenCV findEssentialMat +
recoverPose); the unknown scale of the translation is fixed by comparing triangulated inlier depths with the
keyframe's measured depth. The PnP baselines (SIFT or XFeat + LighterGlue, lifted with keyframe depth) are the
product pipeline with another extractor/matcher configuration, see bench/bench_localization.py."""
from __future__ import annotations

import time

import cv2
import numpy as np

from relocal_ros.estimates import PoseEstimate
from relocal_ros.geometry.camera import undistort_points
from relocal_ros.geometry.poses import invert, make_T
from relocal_ros.mapping.keyframe_map import KeyframeMap
from relocal_ros.matching.features import mutual_nearest_neighbours


class SiftFivePointBaseline:
    def __init__(self, keyframe_map: KeyframeMap, min_inliers: int = 15, ratio: float = 0.8):
        if keyframe_map.extractor != "sift":
            raise ValueError("the 5-point baseline needs a map built with --extractor sift")
        self.map, self.min_inliers, self.ratio = keyframe_map, min_inliers, ratio

    def localize(self, frame) -> PoseEstimate:
        t0 = time.perf_counter()
        est = PoseEstimate(frame.stamp, accepted=False)
        feats, gdesc = self.map.encoder(frame.rgb)
        _, ids = self.map.index.search(gdesc, 1)
        kf = self.map.keyframes[int(ids[0])]
        m = mutual_nearest_neighbours(feats.descriptors, kf.features.descriptors, 0.0, self.ratio)
        if len(m) < self.min_inliers:
            est.reason = f"{len(m)} matches"
            return est
        K = frame.intrinsics.K
        pq = undistort_points(feats.keypoints[m[:, 0]], frame.intrinsics).astype(np.float64)
        pk = undistort_points(kf.features.keypoints[m[:, 1]], kf.intrinsics).astype(np.float64)
        # both cameras share K here (same sensor for map and query)
        try:
            E, mask = cv2.findEssentialMat(pk, pq, K, method=cv2.RANSAC, prob=0.999, threshold=1.0)
        except cv2.error:  # OpenCV 5 asserts on degenerate sets (zero parallax, collinear points)
            E = None
        if E is None or E.shape != (3, 3):
            est.reason = "no essential matrix"
            return est
        n, R, t, mask = cv2.recoverPose(E, pk, pq, K, mask=mask)
        inl = mask.ravel() > 0
        if n < self.min_inliers:
            est.reason = f"{n} inliers"
            return est
        # scale: triangulated depths (unit baseline) vs the keyframe's measured depths of the same points
        P0 = K @ np.hstack([np.eye(3), np.zeros((3, 1))])
        P1 = K @ np.hstack([R, t])
        Xh = cv2.triangulatePoints(P0, P1, pk[inl].T, pq[inl].T)
        z_tri = Xh[2] / Xh[3]
        X_map = kf.points3d[m[inl, 1]]
        T_kf_map = invert(kf.T_map_cam)
        z_meas = (X_map @ T_kf_map[:3, :3].T + T_kf_map[:3, 3])[:, 2]
        ok = np.isfinite(z_meas) & (z_tri > 1e-6) & (z_meas > 0)
        if ok.sum() < 5:
            est.reason = "no depth to fix the scale"
            return est
        scale = float(np.median(z_meas[ok] / z_tri[ok]))
        T_q_kf = make_T(R, t.ravel() * scale)
        est.accepted, est.T_map_cam, est.inliers = True, kf.T_map_cam @ invert(T_q_kf), int(n)
        est.timings["total"] = time.perf_counter() - t0
        return est
