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


@dataclass
class PoseEstimate:
    stamp: str
    accepted: bool
    T_map_cam: np.ndarray | None = None     # camera-to-map when accepted
    covariance: np.ndarray | None = None    # 6x6 (x, y, z, rot x, rot y, rot z) in the map frame, ROS order
    inliers: int = 0
    inlier_ratio: float = 0.0
    reason: str = ""                        # why refused (or a short note when accepted)
    timings: dict = field(default_factory=dict)  # seconds per stage
