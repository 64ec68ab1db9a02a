"""The hot path: frame → retrieve → match/infer → solve → PoseEstimate. The ROS nodes, the CLI and the tests all
call these classes; nothing here knows about ROS or ground truth."""
from __future__ import annotations

import copy
import time

import numpy as np
from scipy.spatial import cKDTree
from threadpoolctl import ThreadpoolController

from relocal_ros.data.frames import RGBDFrame
from relocal_ros.estimates import PoseEstimate, QueryEvidence
from relocal_ros.geometry.camera import Intrinsics, undistort_points
from relocal_ros.geometry.poses import invert
from relocal_ros.mapping.keyframe_map import KeyframeMap, lift_keypoints
from relocal_ros.matching.guided import guided_matches
from relocal_ros.matching.matchers import make_matcher
from relocal_ros.retrieval.index import select_diverse
from relocal_ros.solver.icp import SurfaceCache, refine_pose_icp
from relocal_ros.solver.pnp import PnPResult, inlier_coverage, pose_covariance, reprojection_residuals, solve_pnp_ransac
from relocal_ros.solver.relative import FUSIONS, fuse
from relocal_ros.solver.rigid import solve_rigid_ransac
from relocal_ros.solver.soft_ransac import solve_pnp_soft_inlier
from relocal_ros.solver.two_view import relative_pose_hypothesis
from relocal_ros.solver.verification import dense_consistency, keyframe_depth_view, sample_query_points

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

# RGB-D: the depth agreement that confirms a pose; the inference engine (whether to look further) and the solver
# (whether to accept) use the same default
MIN_DENSE_CONSISTENCY = 0.65

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
        "use_depth": True,            # RGB-D queries: lift matches with the query's depth, verify densely
        "guided_matching": True,      # re-match in a window around projected keyframe points (matching/guided.py)
        "guided_radius": 12.0,        # window radius at 640 px width, then half of it in a second pass
        "guided_min_similarity": 0.35,  # cosine similarity inside the window (few candidates: lower than mnn's)
        "guided_margin": 0.0,         # best similarity must beat the window's runner-up by this (XFeat keypoints
                                      # 5 px apart share descriptors: a margin drops most right matches)
        "guided_min_inliers": 6,      # inliers of the first hypothesis needed to guide at all
        "guided_max_matches": 500,    # the most similar guided matches handed to the solver
        "guide_below": 200,           # global-match inliers of the first hypothesis above which it is taken as is
        # when the hypothesis has fewer global-match inliers than fallback_below, match again with this matcher
        # ("" = never) on the best fallback_references keyframes, each side's fallback_keypoints strongest points
        "fallback_matcher": "",       # off by default: +2.5 points on one hard scene for +90-200 ms p95 (README)
        "fallback_below": 25,
        "fallback_references": 2,
        "fallback_keypoints": 512,
        "icp_recheck_m": 0.08,        # RGB-D: re-guide from the ICP-refined pose when ICP moves it this far (0: off)
        "strong_dense": MIN_DENSE_CONSISTENCY,  # RGB-D: depth agreement below which the evidence counts as weak
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
        "ratio_checked_below": 100,   # ... checked only below this many independent (global-match) inliers
        "min_pixel_sigma": 1.0,       # floor of the reprojection noise used for the covariance
        # error of the map's keyframe poses, a covariance floor, for maps that do not state their accuracy:
        # a real RGB-D sequence's poses (mocap/SLAM, sync with fast rotation) are good to about 1 cm / 1 deg
        "map_sigma_m": 0.01,
        "map_sigma_deg": 1.0,
        "min_independent_inliers": 12,  # inliers among matches found without a pose hypothesis (not guided), when
                                        # the query's depth confirms the pose
        "min_inlier_coverage": 0.15,  # share of a 8 x 6 grid of image cells holding an inlier (right poses: >= 0.17)
        # RGB-D: share of the query's depth samples that agree with the keyframes' depth (solver/verification.py);
        # between the floor and the threshold, the pose needs min_independent_inliers_unverified global inliers.
        # Read from bench/plot_acceptance.py over the hard benchmark's scenes (README)
        "min_dense_consistency": MIN_DENSE_CONSISTENCY,
        "min_dense_consistency_floor": 0.4,  # below it: refused whatever the matches say
        # a pose without dense confirmation (RGB-only query, or depth agreement between the two thresholds) needs
        # more inliers among the global matches: 95 % of wrong hypotheses had < 44 on the hard benchmark, 95 % of
        # right ones > 74
        "min_independent_inliers_unverified": 40,
        "min_dense_samples": 50,      # ... and at least this many samples could be compared
        "min_dense_overlap": 0.25,    # ... which are at least this share of the query's depth samples (right: >= 0.29)
        "max_position_std": 0.25,     # refuse when the covariance says the position is this uncertain (m)
        "pnp_scoring": "ransac",      # "ransac" (poselib LO-RANSAC) or "soft_inlier" (DSAC++ Eq. 5, soft_ransac.py)
        "fusion": "exrenet",          # relative-pose methods: "exrenet", "irls" or "rrpr" (solver/relative.py)
        "min_relative_inliers": 2,    # relative-pose methods: refuse when fewer keyframes agree
    },
}


_THREADPOOLS = ThreadpoolController()


def single_threaded_blas():
    """numpy's BLAS on one thread for the small products of one query (1024 x 64 descriptors): OpenBLAS's threads
    spin against ONNX Runtime's and other processes' on a 2-core robot computer — measured under load, mutual-NN
    matching took 75 ms (max 769 ms) with 2 BLAS threads and 13 ms (max 86 ms) with one."""
    return _THREADPOOLS.limit(limits=1, user_api="blas")


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
        self._surfaces = SurfaceCache()  # keyframe depth as points + normals for ICP, built when first needed
        self.matcher = make_matcher(self.conf["matcher"], self.conf)
        fb = self.conf["fallback_matcher"]
        # the fallback matchers are trained for XFeat descriptors: not for a SIFT map
        self._fallback = make_matcher(fb, self.conf) if fb and fb != self.conf["matcher"] \
            and keyframe_map.extractor == "xfeat" else None
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
        with single_threaded_blas():
            return self._infer(frame)

    def _infer(self, frame: RGBDFrame) -> QueryEvidence:
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
        if c["method"] == "xfeat_relative":
            self._relative_hypotheses(frame, feats, gdesc, refs, ev)
        else:
            self._match_2d3d(frame, feats, gdesc, refs, ev)
        ev.inference_seconds = time.perf_counter() - t0
        return ev

    def _mnn_matches(self, feats, gdesc, kf, intr):
        """Mutual-NN matches (query index, keyframe feature index, similarity) against the stored rotation whose
        global descriptor is closest to the query's (1/R of the work)."""
        sub = kf.rotation_subset(int(np.argmax(kf.global_descriptors @ gdesc)))
        m, sim = self.matcher(feats, (intr.width, intr.height), kf.features.subset(sub),
                              (kf.intrinsics.width, kf.intrinsics.height))
        if len(m):
            m[:, 1] = sub[m[:, 1]]
        return m, sim

    def _relative_hypotheses(self, frame, feats, gdesc, refs, ev) -> None:
        intr = frame.intrinsics
        for kf_id in refs:
            kf = self.map.keyframes[kf_id]
            m, _ = self._mnn_matches(feats, gdesc, kf, intr)
            if len(m) == 0:
                continue
            h, _ = relative_pose_hypothesis(kf_id, kf.T_map_cam, kf.features.keypoints[m[:, 1]], kf.intrinsics,
                                            kf.points3d[m[:, 1]], feats.keypoints[m[:, 0]], intr)
            if h is not None:
                ev.hypotheses.append(h)

    def _match_2d3d(self, frame, feats, gdesc, refs, ev) -> None:
        """2D–3D correspondences: mutual-NN matches to every retrieved keyframe, pooled; then, from a first pose
        hypothesis, guided matching in a window around the projections of the keyframes' 3D points
        (matching/guided.py), which recovers the matches that a global nearest-neighbour search loses under
        viewpoint change. When the hypothesis is still weakly supported, the fallback matcher (LighterGlue on the
        best references) adds global matches and the hypothesis is searched again. With query depth, each
        correspondence also carries the query's own 3D point and the final hypothesis is checked densely against
        the keyframes' depth (solver/verification.py)."""
        c = self.conf
        intr = frame.intrinsics
        pinhole = ev.intrinsics
        q_uv = undistort_points(feats.keypoints, intr)
        q_xyz = lift_keypoints(feats, frame.depth, intr, np.eye(4)) if c["use_depth"] and frame.depth is not None \
            else None
        pooled = [self._mnn_matches(feats, gdesc, self.map.keyframes[k], intr) for k in refs]
        qi, X, w = self._lift_matches(pooled, refs)
        with_depth = [(k, keyframe_depth_view(self.map.keyframes[k])) for k in refs] if q_xyz is not None else []
        refs_with_depth = [k for k, v in with_depth if v is not None]
        views = [v for _, v in with_depth if v is not None]
        samples = sample_query_points(frame.depth, intr, rgb=frame.rgb) if views else None

        def judged(result):
            """(result, dense check or None, global-match support): the evidence the solver will weigh."""
            T = result[0]
            chk = dense_consistency(T, samples[0], views, query_grey=samples[1]) if T is not None and views else None
            return result, chk, self._independent_support(T, q_uv[qi], X, pinhole)

        def weak(j) -> bool:
            _, chk, support = j
            return support < c["fallback_below"] or (chk is not None and not chk.consistency >= c["strong_dense"])

        def key(j):  # verified depth agreement first, then global-match support
            if not views:
                return (j[2],)
            return (j[1].consistency if j[1] is not None and np.isfinite(j[1].consistency) else 0.0, j[2])

        def better(a, b):
            return a if key(a) >= key(b) else b

        T0 = self._first_hypothesis(q_uv[qi], X, None if q_xyz is None else q_xyz[qi], pinhole) \
            if c["guided_matching"] and len(qi) >= 6 else None
        plain = judged((T0, qi, X, w, np.ones(len(qi), bool)))
        # strong global evidence (and depth agreeing) needs no guided matching, ICP or second opinions: the common
        # case costs the least
        confident = T0 is not None and plain[2] >= c["guide_below"] and not weak(plain)
        # without a first hypothesis there is nothing to guide (_guide would only search for it again)
        best = plain if confident or T0 is None else judged(self._guide(q_uv, q_xyz, feats, pinhole, refs, qi, X, w,
                                                                          T0))
        if weak(best) and self._fallback is not None:
            ev.fallback = True
            extra = [self._fallback_matches(feats, gdesc, self.map.keyframes[k], intr)
                     for k in refs[: int(c["fallback_references"])]]
            pooled = [(np.concatenate([a[0], b[0]]), np.r_[a[1], b[1]]) for a, b in zip(pooled, extra)] \
                + pooled[len(extra):]
            qi, X, w = self._lift_matches(pooled, refs)
            best = better(judged(self._guide(q_uv, q_xyz, feats, pinhole, refs, qi, X, w)), best)
        if weak(best) and c["guided_matching"] and len(refs) > 1:
            # an aliased structure can outvote the right pose in the pooled matches: each reference's own
            # hypothesis, guided over all references, competes on the same evidence
            for k, per_ref in zip(refs, pooled):
                rq, rX, _ = self._lift_matches([per_ref], [k])
                if len(rq) < 6:
                    continue
                T0 = self._first_hypothesis(q_uv[rq], rX, None if q_xyz is None else q_xyz[rq], pinhole)
                if T0 is not None:
                    best = better(judged(self._guide(q_uv, q_xyz, feats, pinhole, refs, qi, X, w, T0)), best)
        if not confident and views and best[0][0] is not None and c["icp_recheck_m"] > 0:
            # the query's surfaces pull a pose that keypoints placed 10-70 cm off (repetitive texture, near-miss
            # guided matches) back onto the keyframes' surfaces: when ICP moves it that far, or the depth disagrees,
            # matching is guided again from the ICP pose and the two compete on the same evidence
            T_icp = refine_pose_icp(best[0][0], samples[0][::3], views,  # a third of the samples: enough, 3x faster
                                    [self._surfaces.get(k, v) for k, v in zip(refs_with_depth, views)])
            if T_icp is not None:
                moved = np.linalg.norm(T_icp[:3, 3] - best[0][0][:3, 3])
                if moved > c["icp_recheck_m"] or weak(best):
                    best = better(judged(self._guide(q_uv, q_xyz, feats, pinhole, refs, qi, X, w, T_icp)), best)
        (T, qi_all, X_all, w_all, independent), chk, _ = best
        ev.image_points = q_uv[qi_all]
        ev.map_points = X_all
        ev.independent = independent
        ev.weights = np.clip(w_all, 0, 1).astype(np.float32)
        if q_xyz is not None:
            ev.query_points = q_xyz[qi_all].astype(np.float32)
            if chk is None and views and len(qi_all) >= 6:  # no hypothesis: check the one the solver will find
                T = solve_pnp_ransac(q_uv[qi_all], X_all, pinhole, 4.0 * intr.width / 640.0, 300).T_map_cam
                chk = dense_consistency(T, samples[0], views, query_grey=samples[1]) if T is not None else None
            if chk is not None:
                ev.dense_consistency, ev.dense_judged, ev.dense_samples = chk.consistency, chk.judged, chk.samples
                ev.dense_photometric = chk.photometric

    def _lift_matches(self, per_ref, refs):
        """(query indices, map points, similarities) of the matches whose keyframe keypoint has a 3D point."""
        qi, X, w = [np.zeros(0, int)], [np.zeros((0, 3), np.float32)], [np.zeros(0, np.float32)]
        for (m, sim), k in zip(per_ref, refs):
            if len(m) == 0:
                continue
            P = self.map.keyframes[k].points3d[m[:, 1]]
            ok = np.isfinite(P).all(1)
            qi.append(m[ok, 0])
            X.append(P[ok].astype(np.float32))
            w.append(np.asarray(sim, np.float32)[ok])
        return np.concatenate(qi), np.concatenate(X), np.concatenate(w)

    def _guide(self, q_uv, q_xyz, feats, pinhole, refs, qi, X, w, T=None):
        """-> (hypothesis or None, query indices, map points, weights, independence flags): the global matches
        plus, when a first hypothesis exists (given, or found from the global matches), the guided matches of its
        last refinement."""
        c = self.conf
        if T is None and c["guided_matching"] and len(qi) >= 6:
            T = self._first_hypothesis(q_uv[qi], X, None if q_xyz is None else q_xyz[qi], pinhole)
        independent = np.ones(len(qi), bool)
        if T is None:
            return T, qi, X, w, independent
        # every retrieved keyframe's 3D points at once (one window search), projected with the hypothesis
        ref_X = np.concatenate([self.map.keyframes[k].points3d for k in refs])
        ref_D = np.concatenate([self.map.keyframes[k].features.descriptors for k in refs])
        tree = cKDTree(q_uv)
        scale = pinhole.width / 640.0
        gq = np.zeros(0, int)
        for radius in (c["guided_radius"] * scale, 0.5 * c["guided_radius"] * scale):
            m, sim = guided_matches(T, q_uv, feats.descriptors, pinhole, ref_X, ref_D, radius,
                                    c["guided_min_similarity"], c["guided_margin"], tree)
            if len(m) < 6:
                break
            # guided matches mostly fit: RANSAC ends after a few samples, local optimisation does the work
            res = solve_pnp_ransac(q_uv[m[:, 0]], ref_X[m[:, 1]], pinhole, max(2.0, 0.5 * radius), 200,
                                   min_iterations=5)
            if res.T_map_cam is None:
                break
            T, gq, gX, gw = res.T_map_cam, m[:, 0], ref_X[m[:, 1]].astype(np.float32), sim
        if len(gq) > c["guided_max_matches"]:  # the solver's RANSAC cost grows with them; the best ones carry it
            keep = np.argsort(-gw, kind="stable")[: int(c["guided_max_matches"])]
            gq, gX, gw = gq[keep], gX[keep], gw[keep]
        if len(gq) == 0:
            return T, qi, X, w, independent
        # guided matches are chosen to fit the hypothesis, so they cannot confirm it: the global matches stay,
        # flagged as the hypothesis-independent evidence that the solver's acceptance counts
        return (T, np.r_[qi, gq], np.concatenate([X, gX]), np.r_[w, gw].astype(np.float32),
                np.r_[independent, np.zeros(len(gq), bool)])

    @staticmethod
    def _independent_support(T, uv, X, pinhole) -> int:
        """Global matches within 4 px (at 640 wide) of their projection under T: what the solver will count."""
        if T is None or len(uv) == 0:
            return 0
        r = reprojection_residuals(invert(T), uv, X, pinhole).reshape(-1, 2)
        return int((np.linalg.norm(r, axis=1) < 4.0 * pinhole.width / 640.0).sum())

    def _fallback_matches(self, feats, gdesc, kf, intr):
        """The fallback matcher on the query's and the keyframe's strongest keypoints (its cost grows with the
        square of their number), indices mapped back to the full sets."""
        k = int(self.conf["fallback_keypoints"])
        sub = kf.rotation_subset(int(np.argmax(kf.global_descriptors @ gdesc)))
        sub = sub[np.argsort(-kf.features.scores[sub], kind="stable")[:k]]
        qsub = np.argsort(-feats.scores, kind="stable")[:k]
        m, sim = self._fallback(feats.subset(qsub), (intr.width, intr.height), kf.features.subset(sub),
                                (kf.intrinsics.width, kf.intrinsics.height))
        if len(m) == 0:
            return m, sim
        return np.stack([qsub[m[:, 0]], sub[m[:, 1]]], 1), sim

    def _first_hypothesis(self, uv, X, xyz, pinhole):
        """A rough pose to guide matching: PnP-RANSAC on the pooled matches and, with query depth, Kabsch-RANSAC;
        the one with more reprojection inliers (at least guided_min_inliers), else None."""
        c = self.conf
        tau = 2.0 * pinhole.width / 640.0 * 4.0
        # a guide needs no more than a few hundred matches (local optimisation costs grow with them); all are counted
        sub = np.random.default_rng(0).choice(len(uv), 400, replace=False) if len(uv) > 400 else slice(None)
        cands = [solve_pnp_ransac(uv[sub], X[sub], pinhole, tau, 300).T_map_cam]
        if xyz is not None and np.isfinite(xyz).all(1).sum() >= 3:
            ok = np.isfinite(xyz).all(1)
            cands.append(solve_rigid_ransac(xyz[ok], X[ok], 300).T_map_cam)
        best, best_n = None, int(c["guided_min_inliers"]) - 1
        for T in cands:
            if T is None:
                continue
            r = reprojection_residuals(invert(T), uv, X, pinhole).reshape(-1, 2)
            n = int((np.linalg.norm(r, axis=1) < tau).sum())
            if n > best_n:
                best, best_n = T, n
        return best


class PoseSolver:
    def __init__(self, conf: dict | None = None):
        self.conf = merge_conf(_DEFAULT_CONF["solver"], conf)
        if self.conf["pnp_scoring"] not in ("ransac", "soft_inlier"):
            raise ValueError(f"unknown pnp_scoring {self.conf['pnp_scoring']!r}; choose 'ransac' or 'soft_inlier'")
        if self.conf["fusion"] not in FUSIONS:
            raise ValueError(f"unknown fusion {self.conf['fusion']!r}; choose one of {FUSIONS}")

    def solve(self, ev: QueryEvidence) -> PoseEstimate:
        with single_threaded_blas():
            return self._solve(ev)

    def _solve(self, ev: QueryEvidence) -> PoseEstimate:
        t0 = time.perf_counter()
        c = self.conf
        est = PoseEstimate(ev.stamp, accepted=False, timings={"inference": ev.inference_seconds})
        est.scores["fallback"] = int(ev.fallback)
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
            # RGB-D: a 3D-3D hypothesis too when PnP's support is thin (it rarely beats a well-supported PnP pose)
            rgbd = self._rigid_hypothesis(ev, tau) if res.num_inliers < 3 * c["min_inliers"] else None
            if rgbd is not None and rgbd.num_inliers > res.num_inliers:
                res = rgbd
                est.scores["hypothesis"] = "kabsch"
        est.inliers = res.num_inliers
        est.inlier_ratio = res.num_inliers / n
        est.timings["solve"] = time.perf_counter() - t0
        est.candidate = res.T_map_cam
        # every score first (benchmarks plot them for right and wrong hypotheses alike), then the gates
        est.scores["coverage"] = coverage = inlier_coverage(ev.image_points[res.inliers], ev.intrinsics)
        indep = res.inliers & ev.independent if len(ev.independent) == n else res.inliers
        est.scores["independent_inliers"] = n_indep = int(indep.sum())
        dense_why = self._dense_refusal(ev, est)
        if res.T_map_cam is None or est.inliers < c["min_inliers"]:
            est.reason = f"{est.inliers} inliers of {n} < min_inliers {c['min_inliers']}"
            return est
        if n_indep < c["min_independent_inliers"]:
            est.reason = (f"{n_indep} inliers among the globally matched correspondences < "
                          f"min_independent_inliers {c['min_independent_inliers']} (guided matches cannot vouch)")
            return est
        if soft is not None and soft < c["min_inliers"]:
            est.reason = f"soft inlier count {soft:.1f} < min_inliers {c['min_inliers']}"
            return est
        # the ratio guards against a chance consensus among many outliers, which a hundred global-match inliers
        # are not (guided inliers do not count: they were chosen to fit)
        if est.inlier_ratio < min_ratio and n_indep < c["ratio_checked_below"]:
            est.reason = f"inlier ratio {est.inlier_ratio:.2f} < {min_ratio}"
            return est
        if coverage < c["min_inlier_coverage"]:
            est.reason = f"inliers cover {coverage:.0%} of the image < {c['min_inlier_coverage']:.0%}"
            return est
        if dense_why:
            est.reason = dense_why
            return est
        sigma = max(res.reprojection_rms, c["min_pixel_sigma"])
        if ev.method in SCENE_COORDINATE_METHODS:
            # one predicted point per network cell, errors correlated over neighbouring cells: the residual rms of
            # the inliers understates the noise; a quarter of the inlier threshold (6 px at 640) is the floor
            sigma = max(sigma, 0.25 * tau)
        map_m, map_deg = self._map_sigma(ev)
        cov = pose_covariance(res.T_map_cam, ev.image_points[res.inliers], ev.map_points[res.inliers],
                              ev.intrinsics, sigma, map_m, map_deg, views=max(1, len(ev.keyframe_ids)))
        pos_std = float(np.sqrt(max(np.trace(cov[:3, :3]), 0.0)))
        if not np.isfinite(pos_std) or pos_std > c["max_position_std"]:
            est.reason = f"position uncertainty {pos_std:.3f} m > {c['max_position_std']} m"
            return est
        est.accepted, est.T_map_cam, est.covariance = True, res.T_map_cam, cov
        est.reason = f"{est.inliers} inliers ({est.inlier_ratio:.0%}), rms {res.reprojection_rms:.2f} px"
        est.timings["solve"] = time.perf_counter() - t0
        return est


    def _dense_refusal(self, ev: QueryEvidence, est: PoseEstimate) -> str:
        """The query's surfaces must overlap the retrieved keyframes' (a pose that puts them where no keyframe
        looked has nothing to support it) and agree with their depth; a pose the depth does not confirm (RGB-only
        query, or agreement between the floor and the threshold) needs more hypothesis-independent inliers."""
        c = self.conf
        n_indep = est.scores.get("independent_inliers", 0)
        unverified = ""
        if len(ev.query_points) == 0 or ev.dense_samples == 0:
            unverified = "no query depth to verify the pose"
        else:
            overlap = ev.dense_judged / ev.dense_samples
            est.scores.update(dense_consistency=ev.dense_consistency, dense_overlap=overlap,
                              dense_photometric=ev.dense_photometric)
            if ev.dense_judged < c["min_dense_samples"] or overlap < c["min_dense_overlap"]:
                return (f"query depth overlaps the retrieved keyframes' at {ev.dense_judged} of {ev.dense_samples} "
                        f"samples ({overlap:.0%} < {c['min_dense_overlap']:.0%})")
            if ev.dense_consistency < c["min_dense_consistency_floor"]:
                return (f"query depth agrees with the map at {ev.dense_consistency:.0%} of {ev.dense_judged} "
                        f"samples < {c['min_dense_consistency_floor']:.0%}")
            if ev.dense_consistency < c["min_dense_consistency"]:
                unverified = (f"query depth agrees with the map at only {ev.dense_consistency:.0%} "
                              f"(< {c['min_dense_consistency']:.0%})")
        if unverified and n_indep < c["min_independent_inliers_unverified"]:
            return (f"{unverified}, and {n_indep} inliers among the global matches < "
                    f"min_independent_inliers_unverified {c['min_independent_inliers_unverified']}")
        return ""

    def _rigid_hypothesis(self, ev: QueryEvidence, tau: float):
        """RGB-D evidence: Kabsch-RANSAC on the pairs with query depth, then PnP on its reprojection inliers so that
        both hypotheses are refined and scored alike (reprojection inliers at tau). None without query depth."""
        qp = ev.query_points
        if len(qp) != len(ev.image_points):
            return None
        ok = np.isfinite(qp).all(1)
        if ok.sum() < self.conf["min_inliers"]:
            return None
        rig = solve_rigid_ransac(qp[ok], ev.map_points[ok], 512)
        if rig.T_map_cam is None:
            return None
        r = reprojection_residuals(invert(rig.T_map_cam), ev.image_points, ev.map_points, ev.intrinsics)
        inl = np.linalg.norm(r.reshape(-1, 2), axis=1) < 2 * tau
        if inl.sum() < 4:
            return None
        sub = solve_pnp_ransac(ev.image_points[inl], ev.map_points[inl], ev.intrinsics, tau, 200)
        if sub.T_map_cam is None:
            return None
        r = reprojection_residuals(invert(sub.T_map_cam), ev.image_points, ev.map_points, ev.intrinsics)
        inliers = np.linalg.norm(r.reshape(-1, 2), axis=1) < tau
        rms = float(np.sqrt(np.mean(r.reshape(-1, 2)[inliers] ** 2))) if inliers.any() else float("nan")
        return PnPResult(sub.T_map_cam, inliers, rms)

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
