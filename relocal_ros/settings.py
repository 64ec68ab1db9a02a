"""Every setting of relocal_ros, written once: name, default, valid range or choices, what it does, where it acts.

From this schema come the pipeline's defaults (`pipeline.default_conf`), the map builder's (`mapping/builder.py`),
the three nodes' parameter declarations with their ranges (`nodes/node_utils.declare_settings`), the parameter
file `config/relocal.yaml` (`python -m relocal_ros.settings --write-yaml config/relocal.yaml`) and the command
line's options (`relocal localize --set NAME=VALUE`, and the named flags). test/test_settings.py fails when any of
them drifts from it. A method's own settings are written in its file (relocal_ros/methods/) and collected here.

Stages: "inference" (the InferenceEngine's conf, declared by inference_node), "solver" (PoseSolver, pose_solver),
"mapping" (build_map, and keyframe_indexer where `nodes` says so), or None for a node-only parameter."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

INDEXER, INFERENCE, SOLVER = "keyframe_indexer", "inference_node", "pose_solver"
NODES = (INDEXER, INFERENCE, SOLVER)
ALL_NODES = NODES
CAMERA_NODES = (INDEXER, INFERENCE)
_UNSET = object()


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    description: str
    stage: str | None                  # "inference" | "solver" | "mapping" | None (node-only parameter)
    range: tuple | None = None         # (lo, hi), inclusive, for numbers
    choices: tuple | None = None       # the allowed values, for strings
    nodes: tuple = ()                  # the nodes that declare it as a ROS parameter
    node_default: Any = _UNSET         # a node's default when it must differ (the description says why)
    cli: str = ""                      # a named command-line flag (besides `localize --set NAME=VALUE`)

    @property
    def ros_default(self):
        return self.default if self.node_default is _UNSET else self.node_default

    def check(self, value) -> None:
        """ValueError naming the range or the choices when `value` is outside them."""
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.name} must be one of {list(self.choices)}, got {value!r}")
        if self.range is not None and not isinstance(value, bool) and isinstance(value, (int, float)):
            lo, hi = self.range
            if not lo <= value <= hi:
                raise ValueError(f"{self.name} must be in [{lo}, {hi}], got {value!r}")

    def coerce(self, value):
        """A value from text or YAML in this setting's type (bool from 'true'/'false', int, float, str)."""
        kind = type(self.default)
        if self.default is None or isinstance(self.default, (list, tuple, dict)):
            return value
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(f"{self.name} must be true or false, got {value!r}")
                return value.lower() in ("true", "1")
            return bool(value)
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"{self.name} must be a {kind.__name__}, got {value!r}") from None


# RGB-D: the depth agreement that confirms a pose; the feature-matching method (whether to look further) and the
# solver (whether to accept) use the same default
MIN_DENSE_CONSISTENCY = 0.65
# ... and below which it refuses a pose whatever the matches say (the solver; and the feature-matching method's
# ambiguity check: a rival pose the depth contradicts this much is no rival)
MIN_DENSE_CONSISTENCY_FLOOR = 0.4
DESCRIPTORS = ("xfeat_vlad", "netvlad", "densevlad")

S = Setting
CORE: tuple[Setting, ...] = (
    # -- every node ---------------------------------------------------------------------------------------------
    S("map_path", "", "keyframe map directory (relocal build-map); also settable with --map", None,
      nodes=(INDEXER, INFERENCE)),
    S("autostart", True, "lifecycle nodes: configure + activate themselves (false: a lifecycle manager does)",
      None, nodes=ALL_NODES),
    # -- camera inputs ------------------------------------------------------------------------------------------
    S("color_topic", "/camera/camera/color/image_raw", "colour image topic", None, nodes=CAMERA_NODES),
    S("depth_topic", "/camera/camera/aligned_depth_to_color/image_raw", "aligned depth topic", None,
      nodes=CAMERA_NODES),
    S("camera_info_topic", "/camera/camera/color/camera_info", "camera_info topic", None, nodes=CAMERA_NODES),
    S("image_transport", "raw", "raw, or compressed: <color_topic>/compressed + <depth_topic>/compressedDepth "
      "(image_transport)", None, choices=("raw", "compressed"), nodes=CAMERA_NODES),
    S("reliable_images", False, "subscribe to images reliably: only for reliable publishers (bag replay); default "
      "best effort (sensor data)", None, nodes=CAMERA_NODES),
    S("map_frame", "map", "fixed frame of the map", None, nodes=(INDEXER, SOLVER)),
    S("tf_timeout", 0.1, "wait this long for TF at an image's time (s)", None, range=(0.0, 2.0),
      nodes=(INDEXER, SOLVER)),

    # -- inference: retrieval and which method -------------------------------------------------------------------
    S("method", "xfeat_pnp", "localization method: a file of relocal_ros/methods/ (`relocal localize -h` lists "
      "them)", "inference", nodes=(INFERENCE,), cli="--method"),
    S("retrieval_candidates", 10, "FAISS shortlist before the diversity rule", "inference", range=(1, 1000),
      nodes=(INFERENCE,)),
    S("num_references", 3, "keyframes matched per query", "inference", range=(1, 50), nodes=(INFERENCE,)),
    S("extra_references", 2, "... and the next diverse candidates that a method may add when the evidence from "
      "those is weak (xfeat_pnp: searches again on all of them; 0: never)", "inference", range=(0, 50),
      nodes=(INFERENCE,)),
    S("min_reference_distance", 0.05, "skip references closer than this to an already chosen one (m)", "inference",
      range=(0.0, 100.0), nodes=(INFERENCE,)),
    S("max_reference_distance", 10.0, "skip references further than this from the best one (m)", "inference",
      range=(0.0, 1000.0), nodes=(INFERENCE,)),
    S("use_depth", True, "RGB-D queries: use the query's depth (3D-3D hypotheses, dense check, ICP). The node "
      "pairs each colour image with its aligned depth image while depth arrives (RealSense "
      "align_depth.enable:=true) and answers from colour alone when none has come for 1 s", "inference",
      nodes=(INFERENCE,)),
    # -- inference node ------------------------------------------------------------------------------------------
    S("max_pair_dt", 0.02, "max colour/depth stamp difference (s)", None, range=(0.0, 1.0), nodes=(INFERENCE,)),

    # -- solver ----------------------------------------------------------------------------------------------------
    S("max_reproj_error", 4.0, "RANSAC inlier threshold, pixels at the query's resolution", "solver",
      range=(0.5, 50.0), nodes=(SOLVER,)),
    S("max_iterations", 2000, "RANSAC iterations", "solver", range=(10, 100000), nodes=(SOLVER,)),
    S("min_inliers", 30, "refuse below: too few to trust, whatever the ratio", "solver", range=(6, 1_000_000_000),
      nodes=(SOLVER,)),
    S("min_inlier_ratio", 0.2, "refuse below this inlier ratio ...", "solver", range=(0.0, 1.0), nodes=(SOLVER,)),
    S("ratio_checked_below", 100, "... checked only below this many independent (global-match) inliers", "solver",
      range=(0, 1_000_000_000), nodes=(SOLVER,)),
    S("min_pixel_sigma", 1.0, "floor of the reprojection noise used for the covariance (px)", "solver",
      range=(0.01, 50.0), nodes=(SOLVER,)),
    S("common_pixel_sigma", 0.25, "a shift shared by every keypoint (detector and calibration bias), which no number "
      "of points averages out, in the covariance (px at 640 wide; 0: off)", "solver", range=(0.0, 50.0),
      nodes=(SOLVER,)),
    S("split_half_weight", 2.0, "PnP covariance: add this many times what the inliers' halves disagree on (pose "
      "refined on the left / right and top / bottom halves, their difference d adding d d^T / 4 per split), errors "
      "the first-order model does not see; 2: the real scenes below the 95 % band came up 2-5 points and none lost an "
      "answer (0: off; docs/measurements.md 'What the halves disagree on')", "solver", range=(0.0, 100.0),
      nodes=(SOLVER,)),
    S("map_sigma_m", 0.01, "error of the map's keyframe poses when the map does not state it (m): a real RGB-D "
      "sequence's poses (mocap/SLAM) are good to about 1 cm / 1 deg", "solver", range=(0.0, 10.0),
      nodes=(SOLVER,)),
    S("map_sigma_deg", 1.0, "... and its rotation error (deg)", "solver", range=(0.0, 180.0), nodes=(SOLVER,)),
    S("min_map_sigma_m", 0.002, "the least map error assumed, even where the map states exact poses (synthetic "
      "scenes): the pipeline's own error that no number of points averages out (keypoints found at 512 x 384, depth "
      "sampled under them); right answers on exact synthetic maps erred 2-4 mm / 0.07-0.16 deg rms (m)", "solver",
      range=(0.0, 10.0), nodes=(SOLVER,)),
    S("min_map_sigma_deg", 0.1, "... and its rotation part (deg)", "solver", range=(0.0, 180.0), nodes=(SOLVER,)),
    S("min_independent_inliers", 12, "inliers among matches found without a pose hypothesis (not guided), when the "
      "query's depth (or, RGB only, the keyframes' brightness) confirms the pose", "solver",
      range=(0, 1_000_000_000), nodes=(SOLVER,)),
    S("depth_vouches", True, "RGB-D: a pose that the query's depth and brightness both confirm (min_dense_consistency, "
      "min_dense_photometric) needs no min_independent_inliers; its covariance then spans what the depth check "
      "cannot see (fr1_rpy against the fr1_desk map: right poses with 0-11 global-match inliers; "
      "docs/measurements.md 'The depth vouches')", "solver", nodes=(SOLVER,)),
    S("min_inlier_coverage", 0.15, "share of an 8 x 6 grid of image cells holding an inlier (right poses: >= 0.17)",
      "solver", range=(0.0, 1.0), nodes=(SOLVER,)),
    S("min_dense_consistency", MIN_DENSE_CONSISTENCY, "RGB-D: share of the query's depth samples that agree with "
      "the keyframes' depth needed to confirm a pose (bench/plot_acceptance.py, docs/measurements.md)", "solver",
      range=(0.0, 1.0), nodes=(SOLVER,)),
    S("min_dense_photometric", 0.6, "RGB-D: the query's brightness must also correlate with the keyframes' at the "
      "depth-consistent samples for the depth to confirm a pose; learned dense methods are refused below it, a "
      "feature-matched pose then needs min_independent_inliers_unverified (right ones on fr1_rpy and SUN3D >= 0.76; "
      "wrong ones the depth confirmed on fr1_desk 0.19-0.50, one 2 m / 172 deg off at 0.48-0.50; feature-matched "
      "poses > 10 cm off on the synthetic scenes 0.01-0.45: docs/measurements.md 'Depth without brightness')",
      "solver", range=(-1.0, 1.0), nodes=(SOLVER,)),
    S("min_dense_consistency_floor", MIN_DENSE_CONSISTENCY_FLOOR,
      "RGB-D: below this depth agreement refused whatever the matches say", "solver", range=(0.0, 1.0), nodes=(SOLVER,)),
    S("min_independent_inliers_unverified", 40, "a pose the depth does not confirm (RGB-only, or agreement "
      "between floor and threshold) needs this many global-match inliers (wrong hypotheses: 95 % < 44)", "solver",
      range=(0, 1_000_000_000), nodes=(SOLVER,)),
    S("min_photometric_agreement", 0.25, "RGB only: a pose, and each relative-pose hypothesis, needs the "
      "keyframes drawn into the query to correlate this well with it (true poses 0.05-0.86, moved by "
      "25 cm / 10 deg <= 0.2: bench/photometric_separation.py)", "solver", range=(-1.0, 1.0), nodes=(SOLVER,)),
    S("photometric_confirmation", 0.5, "RGB only: photometric agreement that confirms a feature-matched pose as the "
      "depth does (min_independent_inliers then suffices; right poses on the real scenes 0.43-0.94, wrong <= 0.16)",
      "solver", range=(-1.0, 1.0), nodes=(SOLVER,)),
    S("photometric_band_confirmation", 0.6, "RGB only: ... or the same correlation in the band between a 1 and a 3 px "
      "blur at least this (right real poses with < 40 global-match inliers: 13 of 21 confirmed, 3 by the finer score "
      "alone; no wrong one of the hard benchmark newly confirmed; 1.1: off; docs/measurements.md 'RGB only: two "
      "brightness scores')", "solver", range=(-1.0, 1.1), nodes=(SOLVER,)),
    S("min_dense_samples", 50, "RGB-D: depth samples that could be compared, at least", "solver",
      range=(0, 1_000_000_000), nodes=(SOLVER,)),
    S("min_dense_overlap", 0.25, "RGB-D: ... and at least this share of the query's depth samples (right: >= 0.29)",
      "solver", range=(0.0, 1.0), nodes=(SOLVER,)),
    S("max_position_std", 0.25, "refuse when the covariance says the position is this uncertain (m)", "solver",
      range=(0.001, 10.0), nodes=(SOLVER,)),
    S("covariance_points", "independent", "PnP covariance from the inliers found without a pose hypothesis "
      "(independent; guided matches were chosen to fit the pose, so they cannot narrow its uncertainty) or from all "
      "inliers (all)", "solver", choices=("independent", "all"), nodes=(SOLVER,)),
    S("pnp_scoring", "ransac", "PnP hypothesis scoring: ransac (poselib LO-RANSAC) or soft_inlier (DSAC++ Eq. 5)",
      "solver", choices=("ransac", "soft_inlier"), nodes=(SOLVER,)),
    S("fusion", "exrenet", "relative-pose methods: how relative poses are combined: exrenet (triangulation + "
      "RANSAC), irls (RelocNet) or rrpr", "solver", choices=("exrenet", "irls", "rrpr"), nodes=(SOLVER,),
      cli="--fusion"),
    S("min_relative_inliers", 2, "relative-pose methods: refuse when fewer keyframes agree", "solver",
      range=(1, 50), nodes=(SOLVER,)),
    # -- pose solver node ------------------------------------------------------------------------------------------
    S("odom_frame", "odom", "odometry frame (REP-105): map->odom is published; '' = map->base_frame", None,
      nodes=(SOLVER,)),
    S("base_frame", "base_link", "robot base frame whose pose is published (needs TF base_frame->camera)", None,
      nodes=(SOLVER,)),
    S("tf_broadcast", True, "publish map->odom on /tf (AMCL's name); false beside AMCL or robot_localization",
      None, nodes=(SOLVER,)),
    S("tf_publish_rate", 20.0, "re-send the latest map->odom at this rate, also while refusing (Hz)", None,
      range=(20.0, 1000.0), nodes=(SOLVER,)),
    S("transform_tolerance", 0.5, "post-date map->odom by this much, as AMCL (s)", None, range=(0.0, 10.0),
      nodes=(SOLVER,)),
    S("continuous", True, "publish every accepted pose on relocalization/pose and TF; false: only the one "
      "answering ~/relocalize", None, nodes=(SOLVER,)),
    S("allow_camera_pose", False, "without base->camera TF, publish the camera's pose on "
      "relocalization/camera_pose (never as the base's)", None, nodes=(SOLVER,)),
    S("base_tf_grace", 5.0, "after start, a missing base->camera TF is a warning for this long (waiting for "
      "/tf_static), then an error; either way no pose is published (s)", None, range=(0.0, 120.0),
      nodes=(SOLVER,)),

    # -- mapping ---------------------------------------------------------------------------------------------------
    S("extractor", "xfeat", "local features of the map's keyframes", "mapping", choices=("xfeat", "sift"),
      cli="--extractor"),
    S("extractor_conf", {}, "extractor options (matching/features.py)", "mapping"),
    S("min_translation", 0.05, "keyframe spacing (m); a denser map costs memory, not query time", "mapping",
      range=(0.0, 10.0), nodes=(INDEXER,), cli="--min-translation"),
    S("min_rotation_deg", 5.0, "keyframe spacing (deg)", "mapping", range=(0.0, 180.0), nodes=(INDEXER,),
      cli="--min-rotation"),
    S("vocabulary_words", 64, "VLAD words learned from the map's keyframes", "mapping", range=(2, 4096),
      nodes=(INDEXER,)),
    S("rotations", [0.0, 45.0, -45.0], "in-plane angles keyframes are stored at (XFeat is not rotation invariant)",
      "mapping"),
    S("pose_sigma", None, "accuracy of the source's poses (m, deg), kept in the map as the solver's covariance "
      "floor; None: what the source states (synthetic scenes: exact), else the solver's map_sigma_*", "mapping"),
    S("vocabulary", "map", "'map': VLAD words learned from this map's keyframes; or a .npy file of words",
      "mapping"),
    S("global_descriptor", "xfeat_vlad", "retrieval descriptor of a new map: xfeat_vlad (VLAD of the XFeat "
      "features, see bench_retrieval), netvlad or densevlad", "mapping", choices=DESCRIPTORS, nodes=(INDEXER,),
      cli="--global-descriptor"),
    # -- keyframe indexer node -------------------------------------------------------------------------------------
    S("mapping", False, "true: add keyframes online from the mapping pose and save the map", None,
      nodes=(INDEXER,)),
    S("pose_source", "topic", "'tf' (map->camera from TF: the Nav2 path) or 'topic' (mapping_pose_topic)", None,
      choices=("topic", "tf"), nodes=(INDEXER,)),
    S("mapping_pose_topic", "mapping/pose", "pose_source topic: e.g. amcl_pose, odom, a SLAM system's pose", None,
      nodes=(INDEXER,)),
    S("mapping_pose_type", "PoseStamped", "PoseStamped, PoseWithCovarianceStamped or Odometry, in any frame (TF "
      "to map)", None, choices=("PoseStamped", "PoseWithCovarianceStamped", "Odometry"), nodes=(INDEXER,)),
    S("mapping_pose_frame", "", "the frame whose pose the topic gives (e.g. base_link); '' = Odometry's "
      "child_frame_id, else the camera", None, nodes=(INDEXER,)),
    S("mapping_pose_wait", 5.0, "wait this long for a pose at or after the image stamp (s)", None,
      range=(0.0, 60.0), nodes=(INDEXER,)),
    S("mapping_pose_max_interval", 0.5, "never interpolate between two poses further apart (s)", None,
      range=(0.0, 10.0), nodes=(INDEXER,)),
    S("autosave_keyframes", 50, "save every N new keyframes (0: only on ~/save_map)", None, range=(0, 1_000_000_000),
      nodes=(INDEXER,)),
    S("bootstrap_keyframes", 20, "a new map learns its retrieval vocabulary from its first N keyframes", None,
      range=(2, 10000), nodes=(INDEXER,)),
)
del S


@functools.cache
def all_settings() -> tuple[Setting, ...]:
    """The core settings and every method's own (relocal_ros/methods/); a name is defined once."""
    from relocal_ros.methods import method_settings
    out: dict[str, Setting] = {}
    for s in (*CORE, *method_settings()):
        if s.name in out and out[s.name] is not s:
            raise RuntimeError(f"setting {s.name!r} is defined twice")
        out[s.name] = s
    return tuple(out.values())


def setting(name: str) -> Setting:
    for s in all_settings():
        if s.name == name:
            return s
    raise KeyError(f"unknown setting {name!r}; see relocal_ros/settings.py or `python -m relocal_ros.settings`")


def stage_defaults(stage: str) -> dict:
    """{name: default} of one stage ("inference", "solver", "mapping"), as the pipeline and the builder use it."""
    import copy
    return {s.name: copy.deepcopy(s.default) for s in all_settings() if s.stage == stage}


def node_settings(node: str) -> tuple[Setting, ...]:
    return tuple(s for s in all_settings() if node in s.nodes)


def _yaml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)


def render_params_yaml() -> str:
    """config/relocal.yaml: every node parameter with its default, range or choices, and what it does."""
    lines = ["# Parameters of the three relocal_ros nodes (read by launch/relocal.launch.py and by `relocal-graph`).",
             "# GENERATED from relocal_ros/settings.py (python -m relocal_ros.settings --write-yaml "
             "config/relocal.yaml):",
             "# change a default there. Numeric parameters carry ranges: an out-of-range value is rejected at "
             "start-up."]
    # a parameter of several nodes goes to the "/**" section, once: a node-specific entry would override a
    # command-line `-p name:=value` (rcl ranks a node's own entry above the wildcard), and a user sets it once
    shared = [s for s in all_settings() if len(s.nodes) > 1]
    sections = [("/**", shared)] + [(f"/**/{n}", [s for s in node_settings(n) if s not in shared]) for n in NODES]
    for section, items in sections:
        lines += ["", f"{section}:", "  ros__parameters:"]
        for s in items:
            bound = f" [{s.range[0]}, {s.range[1]}]" if s.range else \
                f" ({' | '.join(s.choices)})" if s.choices else ""
            lines.append(f"    {s.name}: {_yaml_value(s.ros_default)}  #{bound} {s.description}")
    return "\n".join(lines) + "\n"


def render_markdown_table() -> str:
    """The settings as a Markdown table (README's reference), stage by stage."""
    rows = ["| setting | default | stage / nodes | range | what it does |", "|---|---|---|---|---|"]
    for s in all_settings():
        where = s.stage or ", ".join(s.nodes)
        bound = f"{s.range[0]}..{s.range[1]}" if s.range else " \\| ".join(s.choices) if s.choices else ""
        rows.append(f"| `{s.name}` | `{s.default!r}` | {where} | {bound} | {s.description} |")
    return "\n".join(rows) + "\n"


def parse_assignment(text: str, stages=("inference", "solver")) -> tuple[str, str, Any]:
    """'NAME=VALUE' (command line) -> (stage, name, value coerced and checked). A list or mapping setting takes its
    value in YAML (`rotations=[0, 45, -45, 90, -90]`)."""
    name, eq, raw = text.partition("=")
    if not eq:
        raise ValueError(f"--set expects NAME=VALUE, got {text!r}")
    s = setting(name.strip())
    if s.stage not in stages:
        what = "a localization" if "mapping" not in stages else f"a {' or '.join(stages)}"
        raise ValueError(f"{s.name} is not {what} setting (stage {s.stage!r})")
    if s.default is None or isinstance(s.default, (list, tuple, dict)):
        import yaml
        try:
            value = yaml.safe_load(raw.strip())
        except yaml.YAMLError:
            raise ValueError(f"{s.name}: not a YAML value: {raw.strip()!r}") from None
        if s.default is not None and not isinstance(value, type(s.default)):
            raise ValueError(f"{s.name} must be a {type(s.default).__name__} in YAML, got {raw.strip()!r}")
    else:
        value = s.coerce(raw.strip())
    s.check(value)
    return s.stage, s.name, value


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description="relocal_ros settings: print them, or write the parameter file")
    ap.add_argument("--write-yaml", metavar="PATH", help="write the nodes' parameter file (config/relocal.yaml)")
    ap.add_argument("--markdown", action="store_true", help="print the settings as a Markdown table")
    a = ap.parse_args(argv)
    if a.write_yaml:
        from pathlib import Path
        Path(a.write_yaml).write_text(render_params_yaml())
    elif a.markdown:
        print(render_markdown_table(), end="")
    else:
        print(render_params_yaml(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
