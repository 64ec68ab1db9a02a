"""xfeat_relative: per retrieved keyframe, the essential-matrix relative pose from local-feature matches, its scale
from the keyframe's depth -> the solver's relative-pose fusions (ExReNet triangulation + RANSAC, RelocNet IRLS,
RRPR), chosen by the solver's `fusion`. The classical twin of exrenet."""
from __future__ import annotations

from relocal_ros.matching.matchers import make_matcher
from relocal_ros.methods.base import MATCHING_SETTINGS, RELATIVE_POSES, Query, SolverTraits, keyframe_matches
from relocal_ros.solver.two_view import relative_pose_hypothesis


class FeatureRelative:
    name = "xfeat_relative"
    evidence = RELATIVE_POSES
    needs_retrieval = True
    uses_depth = False
    settings = MATCHING_SETTINGS
    solver = SolverTraits()

    def __init__(self, keyframe_map, conf: dict):
        self.map = keyframe_map
        self.matcher = make_matcher(conf["matcher"], conf)

    def add_keyframe(self, keyframe) -> None:
        """Nothing to precompute: keyframe features and 3D points are stored in the map."""

    def infer(self, query: Query, ev) -> None:
        intr = query.frame.intrinsics
        for kf_id in query.refs:
            kf = self.map.keyframes[kf_id]
            m, _, _ = keyframe_matches(self.matcher, query.features, (intr.width, intr.height), kf)
            if len(m) == 0:
                continue
            h, _ = relative_pose_hypothesis(kf_id, kf.T_map_cam, kf.features.keypoints[m[:, 1]], kf.intrinsics,
                                            kf.points3d[m[:, 1]], query.features.keypoints[m[:, 0]], intr)
            if h is not None:
                ev.hypotheses.append(h)


METHOD = FeatureRelative
