"""The hot path: frame → retrieve → match/infer → solve → PoseEstimate. The ROS nodes, the CLI and the tests all
call these classes; nothing here knows about ROS or ground truth."""
from __future__ import annotations

import copy
import time

import numpy as np

from relocal_ros.data.frames import RGBDFrame
from relocal_ros.estimates import PoseEstimate, QueryEvidence
from relocal_ros.geometry.camera import Intrinsics, undistort_points
from relocal_ros.mapping.keyframe_map import KeyframeMap
from relocal_ros.matching.matchers import make_matcher
from relocal_ros.retrieval.index import select_diverse
from relocal_ros.solver.pnp import pose_covariance, solve_pnp_ransac
from relocal_ros.solver.relative import FUSIONS, fuse
from relocal_ros.solver.soft_ransac import solve_pnp_soft_inlier
from relocal_ros.solver.two_view import relative_pose_hypothesis

# xfeat_pnp: matches lifted with keyframe depth -> PnP-RANSAC (the default, most accurate here).
# xfeat_relative: essential-matrix relative pose per retrieved keyframe, scale from its depth -> the relative-pose
# solvers (ExReNet triangulation + RANSAC, RelocNet IRLS, RRPR), selected by the solver's "fusion".
# Learned methods (relocal_ros/networks), imported only when chosen: torch and the ONNX export cost seconds at start.
# exrenet: ExReNet relative poses -> the same relative-pose solvers as xfeat_relative.
# sanet, dsacpp: scene coordinates of query pixels -> PnP-RANSAC with DSAC++ soft-inlier scoring.
LEARNED_METHODS = {
    "exrenet": ("relocal_ros.networks.relative_pose", "ExrenetMethod"),
    "sanet": ("relocal_ros.networks.sanet", "SanetMethod"),
    "dsacpp": ("relocal_ros.networks.dsacpp", "DsacppMethod"),
}
METHODS = ("xfeat_pnp", "xfeat_relative", *LEARNED_METHODS)
RELATIVE_METHODS = ("xfeat_relative", "exrenet")
SCENE_COORDINATE_METHODS = ("sanet", "dsacpp")
SCENE_SPECIFIC_METHODS = ("dsacpp",)
# Scene-coordinate methods predict one point per network cell, so their PnP inlier threshold follows the cell size
# (as a fraction of the image width, never below the solver's max_reproj_error), and their inlier-ratio floor
# is lower than for matches (a dense prediction covers unmapped parts of the view too). Measured on fr1_rpy
# (bench_scene_coordinates.py): SANet's cells are 32 px wide at 640 -> 24 px; DSAC++'s 16 px -> 10 px with a 0.1
# ratio floor gave no pose off by > 25 cm / 10 deg, where 24 px and 0.2 let 20 % wrong poses through.
SCENE_COORDINATE_SOLVER = {"sanet": {"reproj_frac": 0.0375, "min_inlier_ratio": 0.2},
                           "dsacpp": {"reproj_frac": 0.015625, "min_inlier_ratio": 0.1}}

_DEFAULT_CONF = {
    "inference": {
        "method": "xfeat_pnp",
        "retrieval_candidates": 10,   # FAISS shortlist before the diversity rule
        "num_references": 3,          # keyframes matched per query
        "min_reference_distance": 0.05,  # ExReNet: skip references closer than this to an already chosen one (m)
        "max_reference_distance": 10.0,
        "matcher": "mnn",             # "mnn" (mutual nearest neighbours) or "lighterglue" (slower, more matches)
        "min_similarity": 0.80,       # mnn: cosine similarity of mutual nearest neighbours (XFeat)
        "max_ratio": 1.0,             # mnn: Lowe ratio on descriptor distance; < 1 enables it (useful for SIFT)
        "min_confidence": 0.1,        # lighterglue: match confidence
        # learned methods
        "backend": "auto",            # onnxruntime (CPU) | tensorrt | torch (CUDA when present) | auto
        "mc_samples": 100,            # exrenet: MC-dropout samples of the head per keyframe
        "network_threads": 2,         # CPU threads of the ONNX Runtime sessions
        "weights": "",                # network weights file; "" = the one shipped in models/
    },
    "solver": {
        "max_reproj_error": 4.0,      # pixels at the query's resolution (RANSAC inlier threshold)
        "max_iterations": 2000,
        "min_inliers": 30,            # refuse below: too few to trust, whatever the ratio
        "min_inlier_ratio": 0.20,
        "min_pixel_sigma": 1.0,       # floor of the reprojection noise used for the covariance
        # error of the map's keyframe poses, a covariance floor, for maps that do not state their accuracy:
        # a real RGB-D sequence's poses (mocap/SLAM, sync with fast rotation) are good to about 1 cm / 1 deg
        "map_sigma_m": 0.01,
        "map_sigma_deg": 1.0,
        "max_position_std": 0.25,     # refuse when the covariance says the position is this uncertain (m)
        "pnp_scoring": "ransac",      # "ransac" (poselib LO-RANSAC) or "soft_inlier" (DSAC++ Eq. 5, solver/soft_ransac.py)
        "fusion": "exrenet",          # relative-pose methods: "exrenet", "irls" or "rrpr" (solver/relative.py)
        "min_relative_inliers": 2,    # relative-pose methods: refuse when fewer keyframes agree
    },
}


def default_conf() -> dict:
    return copy.deepcopy(_DEFAULT_CONF)


def merge_conf(base: dict, override: dict | None) -> dict:
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_conf(out[k], v)
        elif k not in out:
            raise KeyError(f"unknown configuration key {k!r}; known: {sorted(out)}")
        else:
            out[k] = type(out[k])(v) if out[k] is not None and not isinstance(out[k], dict) else v
    return out


def check_frame(frame: RGBDFrame) -> str:
    """'' when the frame can be localized, else why not."""
    rgb = frame.rgb
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        return f"colour image must be H x W x 3 uint8, got {getattr(rgb, 'dtype', None)} {getattr(rgb, 'shape', None)}"
    if rgb.shape[0] < 32 or rgb.shape[1] < 32:
        return f"colour image too small ({rgb.shape[1]}x{rgb.shape[0]})"
    intr = frame.intrinsics
    if intr is None:
        return "no camera intrinsics (camera_info)"
    if (intr.width, intr.height) != (rgb.shape[1], rgb.shape[0]):
        return f"camera_info is for {intr.width}x{intr.height} but the image is {rgb.shape[1]}x{rgb.shape[0]}"
    return ""


class InferenceEngine:
    """Retrieval + matching against the retrieved keyframes' stored features (computed once, at mapping)."""

    def __init__(self, keyframe_map: KeyframeMap, conf: dict | None = None):
        self.map = keyframe_map
        self.conf = merge_conf(_DEFAULT_CONF["inference"], conf)
        if self.conf["method"] not in METHODS:
            raise ValueError(f"unknown method {self.conf['method']!r}; available: {METHODS}")
        self._centres = keyframe_map.centres()
        self.matcher = make_matcher(self.conf["matcher"], self.conf)
        self.learned = None
        if self.conf["method"] in LEARNED_METHODS:
            import importlib
            module, cls = LEARNED_METHODS[self.conf["method"]]
            c = self.conf
            self.learned = getattr(importlib.import_module(module), cls)(keyframe_map, {
                "backend": c["backend"], "mc_samples": c["mc_samples"], "threads": c["network_threads"],
                "weights": c["weights"]})

    def add_keyframe(self, keyframe) -> None:
        """Keep per-keyframe precomputation (network features, scene pyramids) in step with a growing map."""
        self._centres = self.map.centres()
        if self.learned is not None:
            self.learned.add_keyframe(keyframe)

    def infer(self, frame: RGBDFrame) -> QueryEvidence:
        t0 = time.perf_counter()
        intr = frame.intrinsics
        pinhole = Intrinsics(intr.fx, intr.fy, intr.cx, intr.cy, intr.width, intr.height) if intr else None
        ev = QueryEvidence(frame.stamp, pinhole, self.conf["method"])
        ev.map_sigma_m = float(self.map.metadata.get("pose_sigma_m", float("nan")))
        ev.map_sigma_deg = float(self.map.metadata.get("pose_sigma_deg", float("nan")))
        why = check_frame(frame) or ("the map has no keyframes" if len(self.map) == 0 else "")
        if why:
            ev.refusal = why
            return ev
        c = self.conf
        if c["method"] in SCENE_SPECIFIC_METHODS:  # the per-map network needs no retrieval: skip the encoder
            self.learned.infer(frame, [], ev)
            ev.inference_seconds = time.perf_counter() - t0
            return ev
        feats, gdesc = self.map.encoder(frame.rgb)
        _, cand = self.map.index.search(gdesc, int(c["retrieval_candidates"]))
        refs = select_diverse(cand, self._centres, int(c["num_references"]), c["min_reference_distance"],
                              c["max_reference_distance"])
        ev.keyframe_ids = refs
        if self.learned is not None:
            self.learned.infer(frame, refs, ev)
            ev.inference_seconds = time.perf_counter() - t0
            return ev
        best_sim = np.full(len(feats), -np.inf, np.float32)
        best_X = np.full((len(feats), 3), np.nan, np.float32)
        for kf_id in refs:
            kf = self.map.keyframes[kf_id]
            # match only the stored rotation whose global descriptor is closest to the query's: 1/R of the work
            sub = kf.rotation_subset(int(np.argmax(kf.global_descriptors @ gdesc)))
            m, sim = self.matcher(feats, (intr.width, intr.height), kf.features.subset(sub),
                                  (kf.intrinsics.width, kf.intrinsics.height))
            if len(m) == 0:
                continue
            m[:, 1] = sub[m[:, 1]]
            X = kf.points3d[m[:, 1]]
            if c["method"] == "xfeat_relative":
                h, _ = relative_pose_hypothesis(kf_id, kf.T_map_cam, kf.features.keypoints[m[:, 1]], kf.intrinsics,
                                                X, feats.keypoints[m[:, 0]], intr)
                if h is not None:
                    ev.hypotheses.append(h)
            ok = np.isfinite(X).all(1) & (sim > best_sim[m[:, 0]])
            best_sim[m[ok, 0]] = sim[ok]   # one 3D point per query keypoint: the most confident match
            best_X[m[ok, 0]] = X[ok]
        keep = np.isfinite(best_sim) & np.isfinite(best_X).all(1)
        ev.image_points = undistort_points(feats.keypoints[keep], intr)
        ev.map_points = best_X[keep]
        ev.weights = np.clip(best_sim[keep], 0, 1).astype(np.float32)
        ev.inference_seconds = time.perf_counter() - t0
        return ev


class PoseSolver:
    def __init__(self, conf: dict | None = None):
        self.conf = merge_conf(_DEFAULT_CONF["solver"], conf)
        if self.conf["pnp_scoring"] not in ("ransac", "soft_inlier"):
            raise ValueError(f"unknown pnp_scoring {self.conf['pnp_scoring']!r}; choose 'ransac' or 'soft_inlier'")
        if self.conf["fusion"] not in FUSIONS:
            raise ValueError(f"unknown fusion {self.conf['fusion']!r}; choose one of {FUSIONS}")

    def solve(self, ev: QueryEvidence) -> PoseEstimate:
        t0 = time.perf_counter()
        c = self.conf
        est = PoseEstimate(ev.stamp, accepted=False, timings={"inference": ev.inference_seconds})
        if ev.refusal:
            est.reason = ev.refusal
            return est
        if ev.method in RELATIVE_METHODS:
            return self._solve_relative(ev, est, t0)
        n = len(ev.image_points)
        if n < c["min_inliers"]:
            est.reason = f"{n} correspondences < min_inliers {c['min_inliers']}"
            return est
        soft = None
        tau, min_ratio = c["max_reproj_error"], c["min_inlier_ratio"]
        if ev.method in SCENE_COORDINATE_SOLVER:
            tau = max(tau, SCENE_COORDINATE_SOLVER[ev.method]["reproj_frac"] * ev.intrinsics.width)
            min_ratio = min(min_ratio, SCENE_COORDINATE_SOLVER[ev.method]["min_inlier_ratio"])
        # dense scene coordinates are mostly rough: DSAC++ scores hypotheses by their soft inlier count
        if c["pnp_scoring"] == "soft_inlier" or ev.method in SCENE_COORDINATE_METHODS:
            res, soft = solve_pnp_soft_inlier(ev.image_points, ev.map_points, ev.intrinsics, tau)
            est.timings["soft_inliers"] = soft
        else:
            res = solve_pnp_ransac(ev.image_points, ev.map_points, ev.intrinsics, tau, c["max_iterations"])
        est.inliers = res.num_inliers
        est.inlier_ratio = res.num_inliers / n
        est.timings["solve"] = time.perf_counter() - t0
        if res.T_map_cam is None or est.inliers < c["min_inliers"]:
            est.reason = f"{est.inliers} inliers of {n} < min_inliers {c['min_inliers']}"
            return est
        if soft is not None and soft < c["min_inliers"]:
            est.reason = f"soft inlier count {soft:.1f} < min_inliers {c['min_inliers']}"
            return est
        if est.inlier_ratio < min_ratio:
            est.reason = f"inlier ratio {est.inlier_ratio:.2f} < {min_ratio}"
            return est
        sigma = max(res.reprojection_rms, c["min_pixel_sigma"])
        if ev.method in SCENE_COORDINATE_METHODS:
            # one predicted point per network cell, errors correlated over neighbouring cells: the residual rms of
            # the inliers understates the noise; a quarter of the inlier threshold (6 px at 640) is the floor
            sigma = max(sigma, 0.25 * tau)
        map_m, map_deg = self._map_sigma(ev)
        cov = pose_covariance(res.T_map_cam, ev.image_points[res.inliers], ev.map_points[res.inliers],
                              ev.intrinsics, sigma, map_m, map_deg)
        pos_std = float(np.sqrt(max(np.trace(cov[:3, :3]), 0.0)))
        if not np.isfinite(pos_std) or pos_std > c["max_position_std"]:
            est.reason = f"position uncertainty {pos_std:.3f} m > {c['max_position_std']} m"
            return est
        est.accepted, est.T_map_cam, est.covariance = True, res.T_map_cam, cov
        est.reason = f"{est.inliers} inliers ({est.inlier_ratio:.0%}), rms {res.reprojection_rms:.2f} px"
        est.timings["solve"] = time.perf_counter() - t0
        return est


    def _map_sigma(self, ev: QueryEvidence) -> tuple[float, float]:
        """The map's own statement of its pose accuracy when it has one, else the configured default."""
        if np.isfinite(ev.map_sigma_m) and np.isfinite(ev.map_sigma_deg):
            return ev.map_sigma_m, ev.map_sigma_deg
        return self.conf["map_sigma_m"], self.conf["map_sigma_deg"]

    def _solve_relative(self, ev: QueryEvidence, est: PoseEstimate, t0: float) -> PoseEstimate:
        c = self.conf
        res = fuse(ev.hypotheses, c["fusion"])
        est.timings["solve"] = time.perf_counter() - t0
        est.inliers = len(res.inliers)
        est.inlier_ratio = len(res.inliers) / max(len(ev.hypotheses), 1)
        need = 1 if c["fusion"] == "rrpr" else c["min_relative_inliers"]
        if res.T_map_cam is None or est.inliers < need:
            est.reason = res.reason or f"{est.inliers} agreeing relative poses < {need}"
            return est
        cov = res.covariance.copy()
        map_m, map_deg = self._map_sigma(ev)
        cov[:3, :3] += np.eye(3) * map_m ** 2
        cov[3:, 3:] += np.eye(3) * np.radians(map_deg) ** 2
        pos_std = float(np.sqrt(max(np.trace(cov[:3, :3]), 0.0)))
        if not np.isfinite(pos_std) or pos_std > c["max_position_std"]:
            est.reason = f"position uncertainty {pos_std:.3f} m > {c['max_position_std']} m"
            return est
        est.accepted, est.T_map_cam, est.covariance, est.reason = True, res.T_map_cam, cov, res.reason
        return est


class Relocalizer:
    def __init__(self, keyframe_map: KeyframeMap, conf: dict | None = None):
        conf = merge_conf(_DEFAULT_CONF, conf)
        self.engine = InferenceEngine(keyframe_map, conf["inference"])
        self.solver = PoseSolver(conf["solver"])

    @classmethod
    def from_map_dir(cls, path, conf: dict | None = None) -> "Relocalizer":
        return cls(KeyframeMap.load(path), conf)

    def localize(self, frame: RGBDFrame) -> PoseEstimate:
        return self.solver.solve(self.engine.infer(frame))
