"""Accuracy of an estimated trajectory against ground truth (kept off the inference path)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from relocal_ros.data.trajectory import PoseTrack, read_tum_trajectory
from relocal_ros.geometry.poses import pose_error

THRESHOLDS = ((0.05, 5.0), (0.10, 10.0), (0.25, 10.0))


@dataclass
class AccuracyReport:
    n_estimates: int
    n_queries: int                      # denominator: queries with ground truth (refused ones count as failures)
    translation_errors: np.ndarray      # per evaluated estimate
    rotation_errors: np.ndarray
    no_ground_truth: list = field(default_factory=list)

    def share_within(self, t: float, r: float) -> float:
        if self.n_queries == 0:
            return float("nan")
        return float(np.sum((self.translation_errors <= t) & (self.rotation_errors <= r)) / self.n_queries)

    def format(self) -> str:
        med_t = float(np.median(self.translation_errors)) if len(self.translation_errors) else float("nan")
        med_r = float(np.median(self.rotation_errors)) if len(self.rotation_errors) else float("nan")
        lines = [f"evaluated: {len(self.translation_errors)} estimates of {self.n_queries} queries "
                 f"({self.n_queries - len(self.translation_errors)} refused or missing count as failures)",
                 f"median translation error: {med_t * 100:.2f} cm",
                 f"median rotation error:    {med_r:.2f} deg"]
        for t, r in THRESHOLDS:
            lines.append(f"within {t * 100:.0f} cm / {r:.0f} deg: {self.share_within(t, r) * 100:.1f} %")
        if self.no_ground_truth:
            lines.append(f"skipped (no ground truth at that time): {len(self.no_ground_truth)}")
        return "\n".join(lines)


def load_ground_truth(path) -> tuple[callable, list[str] | None]:
    """-> (lookup(stamp) -> 4x4 or None, list of query stamps or None). GROUND_TRUTH may be a TUM trajectory file,
    a TUM folder (its groundtruth.txt; its rgb.txt lists the queries) or a 7-Scenes scene/sequence folder."""
    path = Path(path)
    if path.is_file():
        track = PoseTrack.from_file(path)
        return (lambda s: track.at(float(s))), None
    from relocal_ros.data.sevenscenes import SevenScenesSequence, is_sevenscenes_folder
    from relocal_ros.data.tum import is_tum_folder, read_file_list
    if is_tum_folder(path):
        if not (path / "groundtruth.txt").is_file():
            raise FileNotFoundError(f"{path}: TUM folder without groundtruth.txt")
        track = PoseTrack.from_file(path / "groundtruth.txt")
        return (lambda s: track.at(float(s))), [s for s, _ in read_file_list(path / "rgb.txt")]
    if is_sevenscenes_folder(path):
        seq = SevenScenesSequence(path)
        poses = {}
        from relocal_ros.data.sevenscenes import SEQUENCE_STRIDE, read_pose_file
        for stamp, colour in seq.items:
            p = Path(str(colour).rsplit(".color.", 1)[0] + ".pose.txt")
            if p.is_file():
                poses[int(stamp)] = read_pose_file(p)
        # a folder not named seq-NN (a split copied into a plain folder) numbers its frames as sequence 0: they
        # match the other side's frame numbers when that side holds one sequence; two named sequences never mix
        seqs = {k // SEQUENCE_STRIDE for k in poses}
        only = seqs.pop() if len(seqs) == 1 else None

        def lookup(s):
            k = int(float(s))
            T = poses.get(k)
            if T is None and only is not None and (k // SEQUENCE_STRIDE == 0 or only == 0):
                T = poses.get(only * SEQUENCE_STRIDE + k % SEQUENCE_STRIDE)
            return T
        return lookup, [str(k) for k in poses]
    raise ValueError(f"{path}: ground truth must be a TUM trajectory file, a TUM folder or a 7-Scenes folder")


def evaluate_trajectory(est_path, gt_path, queries: list[str] | None = None) -> AccuracyReport:
    stamps, poses = read_tum_trajectory(est_path)
    lookup, _ = load_ground_truth(gt_path)
    terr, rerr, missing = [], [], []
    for s, T in zip(stamps, poses):
        gt = lookup(s)
        if gt is None:
            missing.append(s)
            continue
        t, r = pose_error(T, gt)
        terr.append(t)
        rerr.append(r)
    # The denominator is the query set only when the caller names it: a ground-truth folder usually holds the
    # map frames too, so its own image list is not the query list.
    if queries is not None:
        n_queries = sum(1 for q in queries if lookup(q) is not None)
    else:
        n_queries = len(terr)
    return AccuracyReport(len(stamps), n_queries, np.array(terr), np.array(rerr), missing)


# chi-square 95 % quantiles for 3 and 6 degrees of freedom
CHI2_95 = {3: 7.814727903, 6: 12.591587243}


def mahalanobis_sq(T_est: np.ndarray, covariance: np.ndarray, T_gt: np.ndarray) -> tuple[float, float]:
    """(position d², full 6-DoF d²) of the ground truth under the estimate's covariance, in the parametrisation of
    geometry_msgs/PoseWithCovariance used throughout (position in the map frame, rotation as a left perturbation
    about the map axes). Inside the 95 % ellipsoid when d² < CHI2_95[3] (position) or CHI2_95[6] (pose)."""
    from scipy.spatial.transform import Rotation
    e = np.concatenate([T_gt[:3, 3] - T_est[:3, 3],
                        Rotation.from_matrix(T_gt[:3, :3] @ T_est[:3, :3].T).as_rotvec()])
    C = 0.5 * (covariance + covariance.T)
    d_pos = float(e[:3] @ np.linalg.solve(C[:3, :3], e[:3]))
    d_all = float(e @ np.linalg.solve(C, e))
    return d_pos, d_all


def confidently_wrong(t_err: float, r_err_deg: float, d6: float, tol_m: float = 0.10,
                      tol_deg: float = 10.0) -> bool:
    """Off by more than the tolerance with the truth outside the 6-DoF 95 % ellipsoid (d6 from mahalanobis_sq; inf
    when no covariance was published): wrong, and the covariance does not say so (issue #16: such a pose must be
    refused or carry a covariance that covers it)."""
    return (t_err > tol_m or r_err_deg > tol_deg) and not d6 < CHI2_95[6]


@dataclass
class CoverageReport:
    n: int                 # estimates with both a covariance and ground truth
    inside_position: int   # ground truth inside the 95 % ellipsoid of the position (3-DoF)
    inside_pose: int       # ... of the full pose (6-DoF)
    missing_covariance: int
    confidently_wrong: int  # off by > 10 cm or 10 deg, truth outside the 6-DoF ellipsoid (confidently_wrong())

    def format(self) -> str:
        if self.n == 0:
            return "covariance: no estimate has both a covariance line and ground truth"
        out = (f"ground truth inside the published 95 % ellipsoid: position (3-DoF) "
               f"{100 * self.inside_position / self.n:.1f} %, full pose (6-DoF) {100 * self.inside_pose / self.n:.1f} %"
               f" of {self.n} estimates (well calibrated: 90-97 %)"
               f"\nconfidently wrong (off by > 10 cm or 10 deg, truth outside the 6-DoF ellipsoid): "
               f"{self.confidently_wrong} of {self.n}")
        if self.missing_covariance:
            out += f"\nestimates without a covariance line: {self.missing_covariance}"
        return out


def covariance_coverage(est_path, cov_path, gt_path) -> CoverageReport:
    """Share of ground-truth poses inside the 95 % ellipsoid of each estimate's published covariance."""
    from relocal_ros.data.trajectory import read_covariances
    stamps, poses = read_tum_trajectory(est_path)
    covs = read_covariances(cov_path)
    lookup, _ = load_ground_truth(gt_path)
    n = in3 = in6 = missing = overconfident = 0
    for s, T in zip(stamps, poses):
        gt = lookup(s)
        if gt is None:
            continue
        if s not in covs:
            missing += 1
            continue
        d3, d6 = mahalanobis_sq(T, covs[s], gt)
        n += 1
        in3 += d3 < CHI2_95[3]
        in6 += d6 < CHI2_95[6]
        overconfident += confidently_wrong(*pose_error(T, gt), d6)
    return CoverageReport(n, in3, in6, missing, overconfident)
