"""The hot path: frame → retrieve → match/infer → solve → PoseEstimate. The ROS nodes, the CLI and the tests all
call these classes; nothing here knows about ROS or ground truth."""
from __future__ import annotations

import copy
import dataclasses
import time

import numpy as np
from threadpoolctl import ThreadpoolController

from relocal_ros.data.frames import RGBDFrame
from relocal_ros.estimates import PoseEstimate, QueryEvidence
from relocal_ros.geometry.camera import Intrinsics
from relocal_ros.mapping.keyframe_map import KeyframeMap
from relocal_ros.methods import method_class, method_names
from relocal_ros.methods.base import RELATIVE_POSES, Query
from relocal_ros.retrieval.index import select_diverse
from relocal_ros.settings import MIN_DENSE_CONSISTENCY, setting, stage_defaults
from relocal_ros.solver.pnp import (PnPResult, inlier_coverage, pose_covariance, reprojection_errors, solve_pnp_ransac,
                                   split_half_covariance)
from relocal_ros.solver.relative import FUSION_MIN_AGREEING, fuse
from relocal_ros.solver.rgbd_scene_coordinates import KABSCH_FLOOR_M as RGBD_FLOOR_M
from relocal_ros.solver.rigid import rigid_inliers, solve_rigid_ransac
from relocal_ros.solver.soft_ransac import soft_inlier_score, solve_pnp_soft_inlier
from relocal_ros.solver.verification import consistency_tolerance, verify_evidence

__all__ = ["InferenceEngine", "PoseSolver", "Relocalizer", "default_conf", "merge_conf", "method_names",
           "MIN_DENSE_CONSISTENCY"]

_THREADPOOLS = ThreadpoolController()


def single_threaded_blas():
    """numpy's BLAS on one thread for the small products of one query (1024 x 64 descriptors): OpenBLAS's threads
    spin against ONNX Runtime's and other processes' on a 2-core robot computer — measured under load, mutual-NN
    matching took 75 ms (max 769 ms) with 2 BLAS threads and 13 ms (max 86 ms) with one."""
    return _THREADPOOLS.limit(limits=1, user_api="blas")


def default_conf() -> dict:
    """{"inference": ..., "solver": ...}: every localization setting's default (relocal_ros/settings.py)."""
    return {"inference": stage_defaults("inference"), "solver": stage_defaults("solver")}


def merge_conf(base: dict, override: dict | None) -> dict:
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_conf(out[k], v)
        elif k not in out:
            raise KeyError(f"unknown configuration key {k!r}; known: {sorted(out)}")
        else:
            out[k] = type(out[k])(v) if out[k] is not None and not isinstance(out[k], (dict, list)) else v
    return out


def stage_conf(stage: str, override: dict | None) -> dict:
    """A stage's defaults merged with the overrides, every value checked against its range or choices."""
    conf = merge_conf(stage_defaults(stage), override)
    for name, value in conf.items():
        setting(name).check(value)  # e.g. an unknown pnp_scoring or fusion, a value out of range: ValueError
    return conf


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
    """Retrieval, then the chosen method (relocal_ros/methods/) turns the query into evidence for the solver."""

    def __init__(self, keyframe_map: KeyframeMap, conf: dict | None = None):
        self.map = keyframe_map
        self.conf = stage_conf("inference", conf)
        self.method = method_class(self.conf["method"])(keyframe_map, self.conf)
        self._viewpoints = keyframe_map.viewpoints()  # keyframe centres and optical axes

    def add_keyframe(self, keyframe) -> None:
        """Keep per-keyframe precomputation (network features, scene pyramids) in step with a growing map."""
        self._viewpoints = self.map.viewpoints()
        self.method.add_keyframe(keyframe)

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
        depth = frame.depth if c["use_depth"] else None
        if not (c["use_depth"] and self.method.uses_depth) and frame.depth is not None:
            frame = dataclasses.replace(frame, depth=None)
        query = Query(frame, viewpoints=self._viewpoints)
        if self.method.needs_retrieval:
            query.features, query.global_descriptor = self.map.encoder(frame.rgb)
            _, cand = self.map.index.search(query.global_descriptor, int(c["retrieval_candidates"]))
            n = int(c["num_references"])
            chosen = select_diverse(cand, self._viewpoints[0], n + int(c["extra_references"]),
                                    c["min_reference_distance"], c["max_reference_distance"])
            query.refs, query.more_refs = chosen[:n], chosen[n:]  # the greedy rule: the first n are its choice of n
            ev.keyframe_ids = list(query.refs)
        self.method.infer(query, ev)
        if not ev.refusal and (depth is None or not self.method.uses_depth or ev.depth_unused):
            # a method blind to the query's depth (or that left it unused this time) is checked against it all the
            # same, and any method's evidence on an RGB-only query against the keyframes' brightness: never
            # confidently wrong
            traits = self.method.solver
            verify_evidence(ev, depth, frame.rgb, self.map, self._viewpoints,
                            max(4.0 * intr.width / 640.0, traits.reproj_frac * intr.width),
                            soft_inlier=traits.soft_inlier)
        ev.inference_seconds = time.perf_counter() - t0
        return ev


class PoseSolver:
    def __init__(self, conf: dict | None = None):
        self.conf = stage_conf("solver", conf)

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
        try:
            method = method_class(ev.method)
        except ValueError as e:  # evidence from a newer/other inference node
            est.reason = str(e)
            return est
        if method.evidence == RELATIVE_POSES:
            return self._solve_relative(ev, est, t0)
        n = len(ev.image_points)
        if n < c["min_inliers"]:
            est.reason = f"{n} correspondences < min_inliers {c['min_inliers']}"
            return est
        soft = None
        traits = method.solver
        tau = max(c["max_reproj_error"], traits.reproj_frac * ev.intrinsics.width)
        min_ratio = min(c["min_inlier_ratio"], traits.min_inlier_ratio)
        # dense scene coordinates are mostly rough: DSAC++ scores hypotheses by their soft inlier count
        if ev.checked_pose is not None:
            # the pose inference derived and checked (RGB-D scene coordinates: Kabsch + ICP; the engine's soft-inlier
            # PnP), scored here on the same correspondences and gates and published as checked
            r = reprojection_errors(ev.checked_pose, ev.image_points, ev.map_points, ev.intrinsics)
            inliers = r < tau
            with_depth = len(ev.query_points) == n
            if with_depth:
                # it rests on 3D-3D agreement: the cells it puts within the 3D threshold support it too (a right RGB-D
                # pose reprojects only 12-90 of 1,120 DSAC++ cells within 10 px: 5 cm off at 1.5 m is 17 px)
                inliers |= rigid_inliers(ev.checked_pose, ev.query_points, ev.map_points, RGBD_FLOOR_M) & np.isfinite(r)
                min_ratio = min(min_ratio, traits.min_inlier_ratio_rgbd)
            elif c["pnp_scoring"] == "soft_inlier" or traits.soft_inlier:
                soft = est.scores["soft_inliers"] = soft_inlier_score(r, tau, 0.5)
            res = PnPResult(np.asarray(ev.checked_pose, np.float64), inliers,
                            float(np.sqrt(np.mean(r[inliers] ** 2))) if inliers.any() else float("nan"))
            est.scores["hypothesis"] = "checked_rgbd" if with_depth else "checked"
        elif c["pnp_scoring"] == "soft_inlier" or traits.soft_inlier:
            res, soft = solve_pnp_soft_inlier(ev.image_points, ev.map_points, ev.intrinsics, tau)
            est.timings["soft_inliers"] = est.scores["soft_inliers"] = soft
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
        dense_why = self._dense_refusal(ev, est, traits)
        if res.T_map_cam is None or est.inliers < c["min_inliers"]:
            est.reason = f"{est.inliers} inliers of {n} < min_inliers {c['min_inliers']}"
            return est
        # guided matches cannot vouch for the pose they were chosen to fit; the query's depth and brightness can: a
        # wrong pose rarely puts the query's surfaces on the map's with the same texture on them
        few_independent = n_indep < c["min_independent_inliers"]
        depth_vouched = few_independent and c["depth_vouches"] and not dense_why and self._depth_confirms(ev)
        if few_independent and not depth_vouched:
            est.reason = (f"{n_indep} inliers among the globally matched correspondences < "
                          f"min_independent_inliers {c['min_independent_inliers']} (guided matches cannot vouch)")
            return est
        est.scores["depth_vouched"] = int(depth_vouched)
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
        # dense predictions (one point per network cell, errors correlated over neighbouring cells): the residual
        # rms of the inliers understates the noise; the method sets a floor relative to the inlier threshold
        sigma = max(res.reprojection_rms, c["min_pixel_sigma"], traits.sigma_floor_frac * tau)
        map_m, map_deg = self._map_sigma(ev)
        # guided matches were found in windows around the hypothesis and follow it when it is off: they sharpen the
        # pose but cannot narrow its uncertainty (synthetic wide-baseline scenes: poses 8-23 cm off from 24-109
        # global and 163-249 guided inliers claimed sigma 4-7 cm)
        used = indep if c["covariance_points"] == "independent" and not depth_vouched else res.inliers
        cov = pose_covariance(res.T_map_cam, ev.image_points[used], ev.map_points[used],
                              ev.intrinsics, sigma, map_m, map_deg, views=max(1, len(ev.keyframe_ids)),
                              common_pixel_sigma=c["common_pixel_sigma"] * ev.intrinsics.width / 640.0) \
            * traits.covariance_scale
        if depth_vouched:
            cov = cov + self._depth_check_blind_spot(res.T_map_cam, ev.map_points[res.inliers].astype(np.float64))
        if c["split_half_weight"] > 0:
            # what the first-order model cannot see (a keyframe's pose or depth off under one part of the image, a
            # rolling shutter) shows as halves of the inliers that disagree; guided ones too: they pull towards the
            # pose as a whole, not towards either half's (fr1_rpy reversed 6-DoF coverage 82 -> 86 %; the
            # hypothesis-independent ones alone lost an answer to max_position_std on fr1_rpy vs the fr1_desk map)
            cov = cov + c["split_half_weight"] * split_half_covariance(
                res.T_map_cam, ev.image_points[res.inliers], ev.map_points[res.inliers], ev.intrinsics, tau)
        pos_var = float(np.trace(cov[:3, :3]))
        if not (np.isfinite(cov).all() and pos_var > 0):  # too few or degenerate points: no uncertainty to publish
            est.reason = "the pose's covariance could not be estimated from its inliers"
            return est
        pos_std = float(np.sqrt(pos_var))
        if pos_std > c["max_position_std"]:
            est.reason = f"position uncertainty {pos_std:.3f} m > {c['max_position_std']} m"
            return est
        est.accepted, est.T_map_cam, est.covariance = True, res.T_map_cam, cov
        est.reason = f"{est.inliers} inliers ({est.inlier_ratio:.0%}), rms {res.reprojection_rms:.2f} px"
        est.timings["solve"] = time.perf_counter() - t0
        return est

    def _depth_confirms(self, ev: QueryEvidence) -> bool:
        """The query's depth agrees with the map's under the pose, and its brightness there too (NaN: unmeasured)."""
        c = self.conf
        return ev.dense_samples > 0 and ev.dense_consistency >= c["min_dense_consistency"] \
            and ev.dense_photometric >= c["min_dense_photometric"]

    @staticmethod
    def _depth_check_blind_spot(T_map_cam: np.ndarray, inlier_map_points: np.ndarray) -> np.ndarray:
        """Covariance of the poses that the dense check cannot tell from this one: its depth tolerance at the
        inliers' median range, per axis, and the rotation that moves points at that range by as much. Guided
        inliers alone would claim a few cm for poses 5-11 cm off (fr1_rpy against the fr1_desk map)."""
        z = (inlier_map_points - T_map_cam[:3, 3]) @ T_map_cam[:3, 2]  # range along the optical axis
        z = z[np.isfinite(z) & (z > 0.1)]
        z_med = float(np.median(z)) if len(z) else 2.0
        tol = float(consistency_tolerance(z_med, z_med))
        return np.diag([tol ** 2] * 3 + [(tol / z_med) ** 2] * 3)

    def _dense_refusal(self, ev: QueryEvidence, est: PoseEstimate, traits) -> str:
        """The query's surfaces must overlap the retrieved keyframes' (a pose that puts them where no keyframe
        looked has nothing to support it) and agree with their depth; a pose the depth does not confirm (RGB-only
        query, or agreement between the floor and the threshold) needs more hypothesis-independent inliers."""
        c = self.conf
        n_indep = est.scores.get("independent_inliers", 0)
        unverified = ""
        if ev.dense_samples == 0:
            # RGB only: the keyframes drawn into the query under the pose stand in for the depth (verification.py)
            agreement, floor = ev.photometric_agreement, c["min_photometric_agreement"]
            if np.isfinite(agreement):
                est.scores["photometric_agreement"] = agreement
            if traits.needs_dense_confirmation and not agreement >= floor:
                return (f"no query depth, and the keyframes drawn into the query agree at {agreement:.2f} "
                        f"(< {floor}): {ev.method}'s evidence needs confirmation")
            if agreement < floor:
                return f"the keyframes drawn into the query under the pose agree at {agreement:.2f} (< {floor})"
            band = ev.photometric_band
            if np.isfinite(band):
                est.scores["photometric_band"] = band
            # a pose a pixel off or blurred loses the finest texture, not the edges: the band may confirm it
            if not (agreement >= c["photometric_confirmation"] or band >= c["photometric_band_confirmation"]):
                unverified = "no query depth to verify the pose" + (
                    f" and photometric agreement {agreement:.2f} < {c['photometric_confirmation']} "
                    f"({band:.2f} < {c['photometric_band_confirmation']} in the coarser band)"
                    if np.isfinite(agreement) else "")
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
            if ev.dense_consistency < c["min_dense_consistency"] and traits.needs_dense_confirmation:
                return (f"query depth agrees with the map at only {ev.dense_consistency:.0%} "
                        f"(< {c['min_dense_consistency']:.0%}): {ev.method}'s evidence needs the depth's confirmation")
            if traits.needs_dense_confirmation and ev.dense_photometric < c["min_dense_photometric"]:
                # a surface layout can repeat (walls, a desk seen from behind); the brightness on it rarely does
                return (f"query brightness correlates with the map's at {ev.dense_photometric:.2f} where the depth "
                        f"agrees (< {c['min_dense_photometric']}): {ev.method}'s evidence needs the confirmation")
            if ev.dense_consistency < c["min_dense_consistency"]:
                unverified = (f"query depth agrees with the map at only {ev.dense_consistency:.0%} "
                              f"(< {c['min_dense_consistency']:.0%})")
            elif ev.dense_photometric < c["min_dense_photometric"]:  # NaN (not measured): the depth alone decides
                # surfaces that agree in depth under a wrong pose (flat walls and floors, a periodic room) rarely
                # agree in brightness too: the depth does not confirm such a pose (docs/measurements.md "Depth without
                # brightness")
                unverified = (f"query depth agrees with the map at {ev.dense_consistency:.0%} but its brightness "
                              f"there at only {ev.dense_photometric:.2f} (< {c['min_dense_photometric']})")
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
        # reprojection_errors: a point behind the camera projects through the mirror and must never count
        inl = reprojection_errors(rig.T_map_cam, ev.image_points, ev.map_points, ev.intrinsics) < 2 * tau
        if inl.sum() < 4:
            return None
        sub = solve_pnp_ransac(ev.image_points[inl], ev.map_points[inl], ev.intrinsics, tau, 200)
        if sub.T_map_cam is None:
            return None
        r = reprojection_errors(sub.T_map_cam, ev.image_points, ev.map_points, ev.intrinsics)
        inliers = r < tau
        rms = float(np.sqrt(np.mean(r[inliers] ** 2))) if inliers.any() else float("nan")
        return PnPResult(sub.T_map_cam, inliers, rms)

    def _map_sigma(self, ev: QueryEvidence) -> tuple[float, float]:
        """The map's own statement of its pose accuracy when it has one, else the configured default; never below
        the floor (a map with exact poses still has points found and lifted by this pipeline)."""
        c = self.conf
        stated = np.isfinite(ev.map_sigma_m) and np.isfinite(ev.map_sigma_deg)
        m, deg = (ev.map_sigma_m, ev.map_sigma_deg) if stated else (c["map_sigma_m"], c["map_sigma_deg"])
        return max(m, c["min_map_sigma_m"]), max(deg, c["min_map_sigma_deg"])

    def _solve_relative(self, ev: QueryEvidence, est: PoseEstimate, t0: float) -> PoseEstimate:
        c = self.conf
        # hypotheses that the query's depth contradicts (the engine's check, solver/verification.py) never vote
        floor = c["min_dense_consistency_floor"]
        hyps = [h for h in ev.hypotheses if not h.dense_consistency < floor]  # NaN (not checked) stays
        est.scores["depth_contradicted"] = len(ev.hypotheses) - len(hyps)
        if ev.hypotheses and not hyps:
            est.reason = (f"the query's depth contradicts all {len(ev.hypotheses)} relative-pose hypotheses "
                          f"(agreement < {floor:.0%})")
            return est
        # RGB only: those under which the keyframe, drawn into the query, does not look like it
        min_photo = c["min_photometric_agreement"]
        checked = [h.photometric_agreement for h in hyps if np.isfinite(h.photometric_agreement)]
        hyps = [h for h in hyps if not h.photometric_agreement < min_photo]
        est.scores["photometric_contradicted"] = sum(1 for a in checked if a < min_photo)
        if checked:
            est.scores["photometric_agreement"] = max(checked)
        if ev.hypotheses and not hyps:
            est.reason = (f"no relative-pose hypothesis draws its keyframe into the query with photometric "
                          f"agreement >= {min_photo} ({len(checked)} checked)")
            return est
        res = fuse(hyps, c["fusion"])
        est.timings["solve"] = time.perf_counter() - t0
        est.inliers = len(res.inliers)
        est.inlier_ratio = len(res.inliers) / max(len(hyps), 1)
        need = min(c["min_relative_inliers"], FUSION_MIN_AGREEING.get(c["fusion"], c["min_relative_inliers"]))
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
        conf = merge_conf(default_conf(), conf)
        self.engine = InferenceEngine(keyframe_map, conf["inference"])
        self.solver = PoseSolver(conf["solver"])

    @classmethod
    def from_map_dir(cls, path, conf: dict | None = None) -> "Relocalizer":
        return cls(KeyframeMap.load(path), conf)

    def localize(self, frame: RGBDFrame) -> PoseEstimate:
        return self.solver.solve(self.engine.infer(frame))

    def warm_up(self, frame: RGBDFrame) -> None:
        """Localize this frame once and drop the answer: what is built on first use (the feature network's ONNX
        session for this image size, a method's networks) is built now, so that the first timed query pays only for
        itself. Nothing else carries over between queries."""
        self.localize(frame)
