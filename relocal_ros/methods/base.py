"""The method contract: what a localization method needs from the engine, what evidence it gives the solver, its
own settings and how the solver should treat its evidence. A new method is one file in relocal_ros/methods/
defining a class that satisfies `Method` and naming it `METHOD` (README "How to add a method")."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np

from relocal_ros.matching.matchers import MutualNNMatcher
from relocal_ros.settings import Setting

if TYPE_CHECKING:
    from relocal_ros.data.frames import RGBDFrame
    from relocal_ros.estimates import QueryEvidence
    from relocal_ros.mapping.keyframe_map import Keyframe, KeyframeMap

# the kinds of evidence the solver knows how to turn into a pose
CORRESPONDENCES = "correspondences"  # 2D-3D: ev.image_points <-> ev.map_points (+ ev.query_points with depth)
RELATIVE_POSES = "relative_poses"    # ev.hypotheses: the query's pose relative to retrieved keyframes


@dataclasses.dataclass(frozen=True)
class SolverTraits:
    """How the pose solver treats a method's correspondences (defaults: sparse feature matches)."""
    reproj_frac: float = 0.0        # PnP inlier threshold as a fraction of the image width, never below the solver's
                                    # max_reproj_error (dense predictions: one point per network cell)
    min_inlier_ratio: float = 1.0   # the inlier-ratio floor is min(this, the solver's min_inlier_ratio)
    min_inlier_ratio_rgbd: float = 1.0  # the same for a pose checked in RGB-D mode (its inliers are 3D-3D too)
    soft_inlier: bool = False       # score hypotheses by DSAC++'s soft inlier count, whatever pnp_scoring says
    sigma_floor_frac: float = 0.0   # covariance: the pixel noise is at least this fraction of the inlier threshold
    # with query depth, accept only what the depth confirms (min_dense_consistency): for dense predictions, whose
    # inliers cannot stand in for it (a network regresses every cell; a consensus of smoothly wrong ones is cheap)
    needs_dense_confirmation: bool = False
    # the covariance times this: neighbouring cells' predictions err together, so N inliers carry the information
    # of fewer independent observations than the reprojection model assumes
    covariance_scale: float = 1.0


@dataclasses.dataclass
class Query:
    """What the engine hands a method: the frame, the keyframes' viewpoints (to choose views by pose), and for
    methods that need retrieval the retrieved keyframes and the query's local features and global descriptor (the
    map's encoder ran once for both)."""
    frame: "RGBDFrame"
    refs: list[int] = dataclasses.field(default_factory=list)
    more_refs: list[int] = dataclasses.field(default_factory=list)  # the next candidates, to look further (optional)
    features: object = None                     # LocalFeatures of the query (the map's extractor), or None
    global_descriptor: np.ndarray | None = None
    viewpoints: tuple[np.ndarray, np.ndarray] | None = None  # the map's keyframe centres and optical axes (engine's)


class Method(Protocol):
    name: ClassVar[str]                    # what --method / the `method` setting calls it
    evidence: ClassVar[str]                # CORRESPONDENCES or RELATIVE_POSES
    needs_retrieval: ClassVar[bool]        # the engine retrieves keyframes (and extracts features) before infer
    uses_depth: ClassVar[bool]             # reads the query's depth when it has one (and `use_depth` is on)
    settings: ClassVar[tuple[Setting, ...]]  # its own settings (stage "inference"), unique names
    solver: ClassVar[SolverTraits]

    def __init__(self, keyframe_map: "KeyframeMap", conf: dict) -> None:
        """conf: every inference setting (relocal_ros/settings.py and every method's), merged with overrides."""

    def add_keyframe(self, keyframe: "Keyframe") -> None:
        """Keep per-keyframe precomputation (network features, scene pyramids) in step with a growing map."""

    def infer(self, query: Query, ev: "QueryEvidence") -> None:
        """Fill ev with evidence of `evidence`'s kind, or set ev.refusal with the reason."""


# settings shared by the methods that run a network (relocal_ros/networks)
NETWORK_SETTINGS = (
    Setting("backend", "auto", "runtime of learned methods: auto (TensorRT > torch CUDA > ONNX Runtime), "
            "onnxruntime, tensorrt, torch", "inference", choices=("auto", "onnxruntime", "tensorrt", "torch"),
            nodes=("inference_node",), cli="--backend"),
    Setting("network_threads", 2, "CPU threads of the ONNX Runtime sessions", "inference", range=(1, 64),
            nodes=("inference_node",)),
    Setting("weights", "", "network weights file of exrenet / sanet; '' = the one shipped in models/",
            "inference", nodes=("inference_node",)),
)
# settings of the methods that match local features against the keyframes' (xfeat_pnp, xfeat_relative)
MATCHING_SETTINGS = (
    Setting("matcher", "mnn", "mnn (mutual nearest neighbours) or lighterglue (slower, more matches)", "inference",
            choices=("mnn", "lighterglue"), nodes=("inference_node",)),
    Setting("min_similarity", 0.8, "mnn: cosine similarity of mutual nearest neighbours (XFeat)", "inference",
            range=(0.0, 1.0), nodes=("inference_node",)),
    Setting("max_ratio", 1.0, "mnn: Lowe ratio on descriptor distance; < 1 enables it (useful for SIFT)",
            "inference", range=(0.0, 1.0), nodes=("inference_node",)),
    Setting("min_confidence", 0.1, "lighterglue: match confidence", "inference", range=(0.0, 1.0),
            nodes=("inference_node",)),
)


def rotation_matches(matcher, features, image_size, kf, r: int):
    """Mutual-NN matches (query index, index into the keyframe's r-th rotation subset) and their similarities: what
    keyframe_matches counts to choose a rotation. Separate so that a keyframe's rotations can be matched side by
    side (methods/xfeat_pnp.py)."""
    counter = matcher if isinstance(matcher, MutualNNMatcher) else MutualNNMatcher()
    size = (kf.intrinsics.width, kf.intrinsics.height)
    return counter(features, image_size, kf.features.subset(kf.rotation_subset(r)), size)


def keyframe_matches(matcher, features, image_size, kf, tried=None):
    """Matches (query index, keyframe feature index), their similarities, and the keyframe's stored in-plane
    rotation they were made against: the one whose features the query has the most mutual nearest neighbours with.
    The retrieval descriptor's nearest rotation was the wrong one under viewpoint change (fr1_rpy against the
    fr1_desk map: +45 deg, 0-6 true matches, where the upright copy had 19-80: docs/measurements.md "The rotation
    the matches choose"). Mutual NN on each rotation is a few ms; another matcher runs on the chosen one only.
    tried: rotation_matches of every rotation in order, when they were computed already."""
    size = (kf.intrinsics.width, kf.intrinsics.height)
    subsets = [kf.rotation_subset(r) for r in range(len(kf.global_descriptors))]
    if tried is None:
        tried = [rotation_matches(matcher, features, image_size, kf, r) for r in range(len(subsets))]
    r = max(range(len(subsets)), key=lambda i: len(tried[i][0]))  # ties: the first (upright) rotation
    m, sim = tried[r] if isinstance(matcher, MutualNNMatcher) \
        else matcher(features, image_size, kf.features.subset(subsets[r]), size)
    if len(m):
        m = m.copy()
        m[:, 1] = subsets[r][m[:, 1]]
    return m, sim, r


def map_weights_or_shipped(store, keyframe_map, method: str) -> str:
    """The map's fine-tuned weights for a network method (networks/map_weights.py) when they are valid for it, else
    "" (the shipped weights), saying which and why: a warning when the map has fine-tuned weights that cannot be
    used (another map version, unfinished, corrupt), so nobody believes a fine-tuning is in use when it is not."""
    import logging
    log = logging.getLogger(__name__)
    path, why = store.weights_for(keyframe_map)
    if path:
        log.info("%s: the map's fine-tuned weights %s", method, path)
    elif getattr(keyframe_map, "path", None) and store.dir(keyframe_map.path).exists():
        log.warning("%s: shipped weights, not the map's fine-tuned ones: %s", method, why)
    else:
        log.info("%s: shipped weights (%s)", method, why)
    return path
