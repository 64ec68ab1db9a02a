"""What flows between the pipeline stages: inference → QueryEvidence → solver → PoseEstimate.
Plain dataclasses so the CLI, tests and the ROS nodes share one vocabulary (nodes convert them to relocal_msgs)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from relocal_ros.geometry.camera import Intrinsics


@dataclass
class RelativePoseHypothesis:
    keyframe_id: int
    T_map_kf: np.ndarray            # keyframe camera-to-map
    T_kf_query: np.ndarray          # query camera in the keyframe camera frame
    scale: float = float("nan")     # metres; NaN when the network gives only a direction
    uncertainty: float = float("nan")   # MC-dropout angular sd of the translation direction (deg); NaN: not sampled
    translation_samples: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # MC query centres, kf frame
    # share of the query's depth samples that agree with the keyframes' depth under this hypothesis (set by the
    # engine's check, solver/verification.py); the solver drops those below its floor. NaN: not checked
    dense_consistency: float = float("nan")
    # RGB-only queries: the keyframe's high-passed brightness drawn into the query under this hypothesis, correlated
    # with the query's (solver/verification.py); the solver drops those below min_photometric_agreement. NaN: not checked
    photometric_agreement: float = float("nan")


@dataclass
class QueryEvidence:
    stamp: str
    intrinsics: Intrinsics
    method: str
    image_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))  # N x 2 pixels
    map_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))    # N x 3 map frame
    weights: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))         # N
    keyframe_ids: list[int] = field(default_factory=list)
    hypotheses: list[RelativePoseHypothesis] = field(default_factory=list)
    inference_seconds: float = 0.0
    refusal: str = ""               # non-empty: inference already knows no pose can follow, and why
    map_sigma_m: float = float("nan")    # accuracy of the map's keyframe poses as the map states it; NaN: unknown
    map_sigma_deg: float = float("nan")
    # per correspondence: found without any pose hypothesis (global matching); False for guided matches, which were
    # chosen to fit a hypothesis and so cannot vouch for it. Empty: all independent
    independent: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    # RGB-D queries: image_points lifted with the query's own depth (camera frame, NaN where it has none); empty
    # when the query has no depth or the method does not use it
    query_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    dense_consistency: float = float("nan")  # solver/verification.py: share of judged query depth samples that agree
    dense_judged: int = 0                    # with the retrieved keyframes' depth (NaN / 0: not checked)
    dense_samples: int = 0                   # query depth samples lifted for the check
    dense_photometric: float = float("nan")  # brightness correlation at the consistent samples (reported)
    # RGB-only queries: the retrieved keyframes' high-passed brightness drawn into the query under the evidence's
    # PnP pose, correlated with the query's (solver/verification.py). NaN: not checked
    photometric_agreement: float = float("nan")
    # ... and the same in the band between a 1 and a 3 px blur, which may confirm a pose but never refuses one
    photometric_band: float = float("nan")
    fallback: bool = False                   # the fallback matcher ran (weak first evidence): costs latency
    # the pose the method (or the engine's check) derived from this evidence and checked (dense_* or
    # photometric_agreement judge it): the solver scores and publishes it instead of searching again (RGB-D scene
    # coordinates: Kabsch + ICP, which no PnP over the cells reproduces; soft-inlier PnP: no second identical search)
    checked_pose: np.ndarray | None = None   # 4x4 camera-to-map, or None
    # the method left the query's depth unused this time (SANet with one reference keyframe): the engine checks its
    # evidence against that depth as it does a depth-blind method's
    depth_unused: bool = False


@dataclass
class PoseEstimate:
    stamp: str
    accepted: bool
    T_map_cam: np.ndarray | None = None     # camera-to-map when accepted
    covariance: np.ndarray | None = None    # 6x6 (x, y, z, rot x, rot y, rot z) in the map frame, ROS order
    inliers: int = 0
    inlier_ratio: float = 0.0
    reason: str = ""                        # why refused (or a short note when accepted)
    scores: dict = field(default_factory=dict)   # acceptance evidence (inliers, coverage, dense consistency, ...)
    candidate: np.ndarray | None = None     # the best hypothesis, also when refused (for evaluation, never published)
    timings: dict = field(default_factory=dict)  # seconds per stage
