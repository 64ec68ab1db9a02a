"""xfeat_pnp, the default: the query's local features (the map's extractor: XFeat, or SIFT) matched to the
retrieved keyframes' stored ones, lifted to 3D with the keyframes' depth -> 2D-3D correspondences for the solver's
PnP-RANSAC; with query depth also 3D-3D hypotheses, a dense depth check and ICP (README "Results",
docs/measurements.md)."""
from __future__ import annotations

import dataclasses
import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.spatial import cKDTree

from relocal_ros.geometry.camera import undistort_points
from relocal_ros.geometry.poses import pose_error
from relocal_ros.mapping.keyframe_map import lift_keypoints
from relocal_ros.matching.guided import guided_matches
from relocal_ros.matching.matchers import make_matcher
from relocal_ros.methods.base import (CORRESPONDENCES, MATCHING_SETTINGS, Query, SolverTraits, keyframe_matches,
                                     rotation_matches)
from relocal_ros.settings import MIN_DENSE_CONSISTENCY, MIN_DENSE_CONSISTENCY_FLOOR, Setting
from relocal_ros.solver.icp import SurfaceCache, refine_pose_icp
from relocal_ros.solver.pnp import reprojection_errors, solve_pnp_ransac
from relocal_ros.solver.rigid import solve_rigid_ransac
from relocal_ros.solver.verification import dense_consistency, keyframe_depth_view, sample_query_points

_I = "inference"
_N = ("inference_node",)
SETTINGS = MATCHING_SETTINGS + (
    Setting("guided_matching", True, "re-match in a window around projected keyframe points (matching/guided.py)",
            _I, nodes=_N),
    Setting("guided_radius", 12.0, "guided window radius at 640 px width, then half of it in a second pass (px)",
            _I, range=(1.0, 200.0), nodes=_N),
    Setting("guided_min_similarity", 0.35, "cosine similarity inside the window (few candidates: lower than "
            "min_similarity)", _I, range=(0.0, 1.0), nodes=_N),
    Setting("guided_margin", 0.0, "best similarity must beat the window's runner-up by this (XFeat keypoints 5 px "
            "apart share descriptors: a margin drops most right matches)", _I, range=(0.0, 1.0), nodes=_N),
    Setting("guided_min_inliers", 6, "inliers of the first hypothesis needed to guide at all", _I,
            range=(4, 1000), nodes=_N),
    Setting("guided_max_matches", 500, "the most similar guided matches handed to the solver", _I,
            range=(0, 1_000_000_000), nodes=_N),
    Setting("guide_below", 200, "global-match inliers of the first hypothesis above which it is taken as is", _I,
            range=(0, 1_000_000_000), nodes=_N),
    Setting("fallback_matcher", "", "when the hypothesis is weak, match again with this matcher on the best "
            "references ('' = never; lighterglue: 2 of the 7-Scenes stairs sample's 6 queries and +1 on two fr1_rpy "
            "scenes, for +50-100 ms p95 on weak queries: docs/measurements.md)", _I,
            choices=("", "mnn", "lighterglue"), nodes=_N),
    Setting("fallback_below", 25, "... weak: fewer global-match inliers than this", _I, range=(0, 1_000_000_000),
            nodes=_N),
    Setting("fallback_references", 2, "... on this many best references", _I, range=(1, 50), nodes=_N),
    Setting("fallback_keypoints", 512, "... each side's strongest keypoints (cost grows with their square)", _I,
            range=(16, 10000), nodes=_N),
    Setting("icp_recheck_m", 0.08, "RGB-D: re-guide from the ICP-refined pose when ICP moves it this far (m; 0: "
            "off)", _I, range=(0.0, 10.0), nodes=_N),
    Setting("ambiguity_min_inliers", 50, "a retrieved keyframe whose own matches put the camera > 25 cm or 10 deg "
            "from the chosen pose with at least this many inliers ...", _I, range=(0, 1_000_000_000), nodes=_N),
    Setting("ambiguity_ratio", 0.75, "... and this share of the best agreeing keyframe's inliers makes the place "
            "ambiguous: refused (0: never)", _I, range=(0.0, 100.0), nodes=_N),
    Setting("ambiguity_depth_inliers", 30, "RGB-D: a weaker rival (this many inliers) makes the place ambiguous too "
            "when the query's depth agrees better with it ...", _I, range=(0, 1_000_000_000), nodes=_N),
    Setting("ambiguity_depth_margin", 0.2, "... by this much than with the chosen pose (0: never; "
            "docs/measurements.md 'Ambiguous places')", _I, range=(0.0, 1.0), nodes=_N),
    Setting("strong_dense", MIN_DENSE_CONSISTENCY, "RGB-D: depth agreement below which the evidence counts as "
            "weak (look further)", _I, range=(0.0, 1.0), nodes=_N),
    Setting("search_threads", 2, "threads that match a query's references and try their own hypotheses side by "
            "side, when the evidence looks weak ahead of need (poselib and numpy release the GIL; the same answers "
            "as one thread)", _I, range=(1, 64), nodes=_N),
)


@dataclasses.dataclass
class _QueryWork:
    """What the searches of one query share, so that a second search on more references does not redo it: each
    keyframe's global matches (and the fallback matcher's, and the matching still under way on the search threads),
    the keyframes whose own hypothesis was tried, whether ICP was tried, the guided re-solves by their
    correspondences (the same correspondences and seed give the same pose: a copy, not an approximation), and the
    query keypoints' KD-tree."""
    q_uv: np.ndarray
    matches: dict = dataclasses.field(default_factory=dict)
    fallback: dict = dataclasses.field(default_factory=dict)  # keyframe -> the fallback matcher's matches
    rotation: dict = dataclasses.field(default_factory=dict)  # keyframe -> the stored rotation its matches used
    started: dict = dataclasses.field(default_factory=dict)  # keyframe -> its rotations' matching, under way
    tried: set = dataclasses.field(default_factory=set)
    refined: bool = False  # ICP against the keyframes' depth was tried on a hypothesis
    solves: dict = dataclasses.field(default_factory=dict)

    @functools.cached_property
    def tree(self) -> cKDTree:
        return cKDTree(self.q_uv)


class _Started:
    """Work started ahead of need: call it for the results (in order); cancel() drops what has not begun."""

    def __init__(self, collect, futures=()):
        self._collect, self._futures = collect, futures

    @classmethod
    def of(cls, futures: list) -> "_Started":
        return cls(lambda: [f.result() for f in futures], futures)

    def __call__(self) -> list:
        return self._collect()

    def cancel(self) -> None:
        for f in self._futures:
            f.cancel()


@dataclasses.dataclass
class _Found:
    """What one search over a set of references found: the best (result, dense check, support) and its context."""
    best: tuple
    pooled: list
    refs: list
    views: list
    weak: bool
    key: tuple


class FeaturePnP:
    name = "xfeat_pnp"
    evidence = CORRESPONDENCES
    needs_retrieval = True
    uses_depth = True
    settings = SETTINGS
    solver = SolverTraits()

    def __init__(self, keyframe_map, conf: dict):
        self.map = keyframe_map
        self.conf = conf
        self.matcher = make_matcher(conf["matcher"], conf)
        fb = conf["fallback_matcher"]
        # the fallback matchers are trained for XFeat descriptors: not for a SIFT map
        self._fallback = make_matcher(fb, conf) if fb and fb != conf["matcher"] \
            and keyframe_map.extractor == "xfeat" else None
        self._surfaces = SurfaceCache()  # keyframe depth as points + normals for ICP, built when first needed
        self._pool = None  # search_threads > 1: a thread pool, started on first need

    def add_keyframe(self, keyframe) -> None:
        """Nothing to precompute: keyframe features and 3D points are stored in the map."""

    def infer(self, query: Query, ev) -> None:
        """2D–3D correspondences: mutual-NN matches to every retrieved keyframe, pooled; then, from a first pose
        hypothesis, guided matching in a window around the projections of the keyframes' 3D points
        (matching/guided.py), which recovers the matches that a global nearest-neighbour search loses under
        viewpoint change. When the hypothesis is still weakly supported, the fallback matcher (LighterGlue on the
        best references) adds global matches and the hypothesis is searched again, and then the same search runs on
        the next retrieved candidates as well (`extra_references`). With query depth, each correspondence also
        carries the query's own 3D point and the final hypothesis is checked densely against the keyframes' depth
        (solver/verification.py)."""
        c = self.conf
        frame, feats = query.frame, query.features
        intr = frame.intrinsics
        q_uv = undistort_points(feats.keypoints, intr)
        q_xyz = lift_keypoints(feats, frame.depth, intr, np.eye(4)) if c["use_depth"] and frame.depth is not None \
            else None
        # the query's depth samples for the dense check: drawn once, whatever the references
        samples = sample_query_points(frame.depth, intr, rgb=frame.rgb) if q_xyz is not None else None
        work = _QueryWork(q_uv)
        found = self._search(query, query.refs, q_xyz, samples, ev, work, prefetch=list(query.more_refs))
        if found.weak and query.more_refs:
            # weak evidence from the best few references (a wide baseline: the nearest keyframes see the place
            # obliquely): the next candidates may see it better. Synthetic wide-baseline scenes: 5 references from
            # the start gained as much on the weak queries but moved confident ones and cost every query
            # (docs/measurements.md)
            wider = self._search(query, list(query.refs) + list(query.more_refs), q_xyz, samples, ev, work)
            if wider.key >= found.key:
                found = wider
        for started in work.started.values():  # matching started for a second search that did not happen
            started.cancel()
        ev.keyframe_ids = list(found.refs)
        (T, qi_all, X_all, w_all, independent), chk, _ = found.best
        views = found.views

        def depth_agreement(T_other):
            return dense_consistency(T_other, samples[0], views, query_grey=samples[1]).consistency
        ambiguous = self._ambiguity(T, found.pooled, found.refs, q_uv, ev.intrinsics,
                                    depth_agreement if views else None)
        if ambiguous:
            ev.refusal = ambiguous
            return
        ev.image_points = q_uv[qi_all]
        ev.map_points = X_all
        ev.independent = independent
        ev.weights = np.clip(w_all, 0, 1).astype(np.float32)
        if q_xyz is not None:
            ev.query_points = q_xyz[qi_all].astype(np.float32)
            if chk is None and views and len(qi_all) >= 6:  # no hypothesis: check the one the solver will find
                T = solve_pnp_ransac(q_uv[qi_all], X_all, ev.intrinsics, 4.0 * intr.width / 640.0, 300).T_map_cam
                chk = dense_consistency(T, samples[0], views, query_grey=samples[1]) if T is not None else None
            if chk is not None:
                ev.dense_consistency, ev.dense_judged, ev.dense_samples = chk.consistency, chk.judged, chk.samples
                ev.dense_photometric = chk.photometric

    def _search(self, query: Query, refs: list[int], q_xyz, samples, ev, work: _QueryWork,
                prefetch: list[int] = ()) -> "_Found":
        """The best hypothesis and its evidence from these references (see infer); when the evidence looks weak,
        the prefetch keyframes' matching (the second search's) starts on the search threads."""
        c = self.conf
        q_uv = work.q_uv
        frame, feats = query.frame, query.features
        intr = frame.intrinsics
        pinhole = ev.intrinsics
        size = (intr.width, intr.height)
        new = [k for k in refs if k not in work.matches]
        self._start_matching(new, feats, size, work)
        for k in new:
            m, sim, r = keyframe_matches(self.matcher, feats, size, self.map.keyframes[k], work.started.pop(k)())
            work.matches[k], work.rotation[k] = (m, sim), r
        pooled = [work.matches[k] for k in refs]
        qi, X, w = self._lift_matches(pooled, refs)
        with_depth = [(k, keyframe_depth_view(self.map.keyframes[k])) for k in refs] if samples is not None else []
        refs_with_depth = [k for k, v in with_depth if v is not None]
        views = [v for _, v in with_depth if v is not None]
        # built on first use: the common, confident query never guides
        guide_set = functools.cache(lambda: self._guide_set(refs, work.rotation))
        guide = functools.partial(self._guide, q_xyz, feats, pinhole, guide_set, work)

        def judged(result):
            """(result, dense check or None, global-match support): the evidence the solver will weigh."""
            T = result[0]
            chk = dense_consistency(T, samples[0], views, query_grey=samples[1]) if T is not None and views else None
            return result, chk, self._support(T, q_uv[qi], X, pinhole, 4.0 * pinhole.width / 640.0)

        def weak(j) -> bool:
            _, chk, support = j
            return support < c["fallback_below"] or (chk is not None and not chk.consistency >= c["strong_dense"])

        def key(j):  # verified depth agreement first, then global-match support
            if not views:
                return (j[2],)
            return (j[1].consistency if j[1] is not None and np.isfinite(j[1].consistency) else 0.0, j[2])

        def better(a, b):
            return a if key(a) >= key(b) else b

        def untried(merged: bool) -> list:
            """(key, matches) of the references whose own hypothesis this query has not tried yet: a keyframe's own
            hypothesis is tried once per query, so the second search, on more references, tries only the new ones'
            (trying the first ones' again changed no answer on the hard benchmark and cost refused queries 25 % of
            their time: docs/measurements.md)"""
            names = [(k, merged and i < int(c["fallback_references"])) for i, k in enumerate(refs)]
            return [(name, per_ref) for name, per_ref in zip(names, pooled) if name not in work.tried]

        def own_hypothesis(item):
            (k, _), per_ref = item
            rq, rX, _ = self._lift_matches([per_ref], [k])
            if len(rq) < 6:
                return None
            T0 = self._first_hypothesis(q_uv[rq], rX, None if q_xyz is None else q_xyz[rq], pinhole)
            return judged(guide(qi, X, w, T0)) if T0 is not None else None

        def start_own_hypotheses(todo):
            """The references' own hypotheses, started on the search threads now (independent of one another),
            collected later in the references' order (same answer as one thread)."""
            if int(c["search_threads"]) > 1:  # built once before the threads share them
                guide_set(), work.tree
            return self._start(own_hypothesis, todo)

        T0 = self._first_hypothesis(q_uv[qi], X, None if q_xyz is None else q_xyz[qi], pinhole) \
            if c["guided_matching"] and len(qi) >= 6 else None
        plain = judged((T0, qi, X, w, np.ones(len(qi), bool)))
        # strong global evidence (and depth agreeing) needs no guided matching, ICP or second opinions: the common
        # case costs the least
        confident = T0 is not None and plain[2] >= c["guide_below"] and not weak(plain)
        ahead = None  # the own hypotheses started before the pooled one was guided: (their keys, collect)
        if T0 is not None and not confident and weak(plain) and self._fallback is None and c["guided_matching"] \
                and len(refs) > 1:
            # weak global evidence stays weak when the pooled hypothesis is guided (384 of 391 such searches on the
            # hard benchmark), and then each reference's own hypothesis is tried: those start now, on the search
            # threads, while this thread guides the pooled one (the answer is the same as waiting for it)
            todo = untried(False)
            ahead = ([name for name, _ in todo], start_own_hypotheses(todo))
            # and such a search mostly ends weak (about 9 in 10), so the next candidates are matched behind them
            self._start_matching(prefetch, feats, size, work)
        # without a first hypothesis there is nothing to guide (_guide would only search for it again)
        best = plain if confident or T0 is None else judged(guide(qi, X, w, T0))
        merged = False  # whether the fallback matcher's matches were added to the pooled ones
        if weak(best) and self._fallback is not None:
            ev.fallback = True
            fb_refs = refs[: int(c["fallback_references"])]
            # the second search's best references are the first's: their fallback matches are computed once
            for k in fb_refs:
                if k not in work.fallback:
                    work.fallback[k] = self._fallback_matches(feats, self.map.keyframes[k], work.rotation[k], intr)
            extra = [work.fallback[k] for k in fb_refs]
            pooled = [(np.concatenate([a[0], b[0]]), np.r_[a[1], b[1]]) for a, b in zip(pooled, extra)] \
                + pooled[len(extra):]
            merged = True
            qi, X, w = self._lift_matches(pooled, refs)
            best = better(judged(guide(qi, X, w)), best)
        if weak(best) and c["guided_matching"] and len(refs) > 1:
            # an aliased structure can outvote the right pose in the pooled matches: each reference's own
            # hypothesis, guided over all references, competes on the same evidence
            todo = untried(merged)
            names = [name for name, _ in todo]
            collect = ahead[1] if ahead is not None and ahead[0] == names else start_own_hypotheses(todo)
            work.tried.update(names)
            for j in collect():
                if j is not None:
                    best = better(j, best)
        elif ahead is not None:
            ahead[1].cancel()  # the pooled hypothesis was enough: what has not started yet never will
        # ICP once per query: tried again on the second search's best, it changed no answer within 10 cm/10 deg on
        # the hard benchmark's 18 scenes and cost the weak queries ~7 ms (docs/measurements.md "The second search's
        # ICP")
        if not work.refined and not confident and views and best[0][0] is not None and c["icp_recheck_m"] > 0:
            work.refined = True
            # the query's surfaces pull a pose that keypoints placed 10-70 cm off (repetitive texture, near-miss
            # guided matches) back onto the keyframes' surfaces: when ICP moves it that far, or the depth disagrees,
            # matching is guided again from the ICP pose and the two compete on the same evidence
            T_icp = refine_pose_icp(best[0][0], samples[0][::3], views,  # a third of the samples: enough, 3x faster
                                    [self._surfaces.get(k, v) for k, v in zip(refs_with_depth, views)])
            if T_icp is not None:
                moved = np.linalg.norm(T_icp[:3, 3] - best[0][0][:3, 3])
                if moved > c["icp_recheck_m"] or weak(best):
                    best = better(judged(guide(qi, X, w, T_icp)), best)
        return _Found(best, pooled, list(refs), views, weak(best), key(best))

    def _start_matching(self, keyframes, feats, size, work: _QueryWork) -> None:
        """Mutual-NN matching of the query to each stored rotation of these keyframes, started on the search threads
        (work.started: keyframe -> its rotations' matches), one task per (keyframe, rotation): three keyframes of
        three rotations each as three tasks kept one of two threads idle for a third of the matching (fr1_rpy
        sparse: 12 ms of a 37 ms query)."""
        for k in keyframes:
            if k in work.matches or k in work.started:
                continue
            kf = self.map.keyframes[k]
            work.started[k] = self._start(lambda r, kf=kf: rotation_matches(self.matcher, feats, size, kf, r),
                                          list(range(len(kf.global_descriptors))))

    def _start(self, fn, items: list) -> "_Started":
        """fn over items, started on the search threads now and collected later; with one search thread, computed
        when collected (nothing runs ahead of the caller)."""
        if int(self.conf["search_threads"]) <= 1:
            return _Started(lambda: [fn(x) for x in items])
        return _Started.of([self._threads().submit(fn, x) for x in items])

    def _threads(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(int(self.conf["search_threads"]), thread_name_prefix="relocal-search")
        return self._pool

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

    def _guide_set(self, refs, rotation):
        """(3D points, descriptors) that guided matching projects: each reference's stored rotation that its global
        matches come from (rotation: keyframe -> index). The other rotations hold copies of the same points, described
        from a turned image: they tripled the window search and the re-solve's matches (guided matching 50-70 ->
        20-26 ms on fr1_rpy's slowest queries; the hard benchmark's real scenes kept their figures:
        docs/measurements.md)."""
        kfs = [self.map.keyframes[k] for k in refs]
        subs = [(kf, kf.rotation_subset(rotation[k])) for k, kf in zip(refs, kfs)]
        return (np.concatenate([kf.points3d[sub] for kf, sub in subs]),
                np.concatenate([kf.features.descriptors[sub] for kf, sub in subs]))

    def _guide(self, q_xyz, feats, pinhole, guide_set, work: _QueryWork, qi, X, w, T=None):
        """-> (hypothesis or None, query indices, map points, weights, independence flags): the global matches
        plus, when a first hypothesis exists (given, or found from the global matches), the guided matches of its
        last refinement. Its re-solves are kept in `work`: different starting poses often reach the same guided
        matches, and a second search on more references meets them again."""
        c = self.conf
        q_uv = work.q_uv
        if T is None and c["guided_matching"] and len(qi) >= 6:
            T = self._first_hypothesis(q_uv[qi], X, None if q_xyz is None else q_xyz[qi], pinhole)
        independent = np.ones(len(qi), bool)
        if T is None:
            return T, qi, X, w, independent
        # every retrieved keyframe's 3D points at once (one window search), projected with the hypothesis
        ref_X, ref_D = guide_set()
        tree = work.tree
        scale = pinhole.width / 640.0
        gq = np.zeros(0, int)
        for radius in (c["guided_radius"] * scale, 0.5 * c["guided_radius"] * scale):
            m, sim = guided_matches(T, q_uv, feats.descriptors, pinhole, ref_X, ref_D, radius,
                                    c["guided_min_similarity"], c["guided_margin"], tree)
            if len(m) < 6:
                break
            # guided matches mostly fit: RANSAC ends after a few samples, local optimisation does the work
            uv_m, X_m = q_uv[m[:, 0]], ref_X[m[:, 1]]
            key = (radius, uv_m.tobytes(), X_m.tobytes())
            if key not in work.solves:
                work.solves[key] = solve_pnp_ransac(uv_m, X_m, pinhole, max(2.0, 0.5 * radius), 200,
                                                    min_iterations=5)
            res = work.solves[key]
            if res.T_map_cam is None:
                break
            T, gq, gX, gw = res.T_map_cam, m[:, 0], X_m.astype(np.float32), sim
        if len(gq) > c["guided_max_matches"]:  # the solver's RANSAC cost grows with them; the best ones carry it
            keep = np.argsort(-gw, kind="stable")[: int(c["guided_max_matches"])]
            gq, gX, gw = gq[keep], gX[keep], gw[keep]
        if len(gq) == 0:
            return T, qi, X, w, independent
        # guided matches are chosen to fit the hypothesis, so they cannot confirm it: the global matches stay,
        # flagged as the hypothesis-independent evidence that the solver's acceptance counts
        return (T, np.r_[qi, gq], np.concatenate([X, gX]), np.r_[w, gw].astype(np.float32),
                np.r_[independent, np.zeros(len(gq), bool)])

    def _ambiguity(self, T, pooled, refs, q_uv, pinhole, depth_agreement=None) -> str:
        """'' or why the place is ambiguous: a retrieved keyframe whose own matches mostly miss the chosen pose and,
        solved alone, put the camera elsewhere with about as much support as the best agreeing keyframe has under
        the chosen pose (and, with query depth, agreeing with the keyframes' depth as well: depth_agreement(T)). A
        periodic place (identical shelves, cubicles) makes two strong, mutually exclusive poses; on the hard
        benchmark's synthetic scenes wrong answers had 214-482 inliers and their depth agreeing, and only a rival
        this strong told them apart (docs/measurements.md "Ambiguous places"). With query depth, a weaker rival
        counts too when the depth agrees clearly better with it than with the chosen pose. Costs one PnP per
        dissenting keyframe only."""
        c = self.conf
        ratio, floor = float(c["ambiguity_ratio"]), int(c["ambiguity_min_inliers"])
        margin = float(c["ambiguity_depth_margin"]) if depth_agreement is not None else 0.0
        if T is None or (ratio <= 0 and margin <= 0) or len(refs) < 2:
            return ""
        tau = 4.0 * pinhole.width / 640.0
        per_ref = []
        for k, matches in zip(refs, pooled):
            rq, rX, _ = self._lift_matches([matches], [k])
            # 3 tau: a keyframe whose pose or depth is a few cm off the others' misses the chosen pose by a few
            # pixels, a rival 25 cm away by tens of them (SUN3D's SfM poses: 4 px would make rivals of near-twins)
            per_ref.append((k, rq, rX, reprojection_errors(T, q_uv[rq], rX, pinhole) >= 3.0 * tau))
        agree = max(int((~out).sum()) for *_, out in per_ref)
        needed = max(floor, ratio * agree) if ratio > 0 else float("inf")
        weaker = int(c["ambiguity_depth_inliers"]) if margin > 0 else float("inf")
        chosen_depth = functools.cache(lambda: depth_agreement(T))
        # a rival pose rests on the matches the chosen pose leaves out: too few of those, and there is none; with
        # enough, it is a large share of them, which a short RANSAC finds
        for k, rq, rX, out in per_ref:
            if out.sum() < min(needed, weaker):
                continue
            r = solve_pnp_ransac(q_uv[rq[out]], rX[out], pinhole, tau, 100)
            if r.T_map_cam is None or r.num_inliers < min(needed, weaker):
                continue
            dt, dr = pose_error(r.T_map_cam, T)
            if dt <= 0.25 and dr <= 10.0:
                continue
            why = (f"ambiguous place: keyframe {k}'s own matches put the camera {dt:.2f} m / {dr:.0f} deg from the "
                   f"chosen pose with {r.num_inliers} inliers (the best agreeing keyframe: {agree})")
            rival_depth = depth_agreement(r.T_map_cam) if depth_agreement is not None else None
            # a rival the query's depth contradicts (as the solver would refuse it) is no rival: the opposite,
            # identical-looking wall. One it merely does not confirm is: periodic places' wrong answers had rivals
            # at 0.51-0.55, their right ones at 0.57-0.59 (synthetic 9002)
            if r.num_inliers >= needed and (rival_depth is None or rival_depth >= MIN_DENSE_CONSISTENCY_FLOOR):
                return why
            # a weaker rival that the depth prefers: the chosen pose won on matches alone (synthetic 9002 / 9003:
            # wrong answers at 0.56 and 0.75 with rivals at the true place at 1.0; no right answer had a rival with
            # more agreement than its own)
            if r.num_inliers >= weaker and rival_depth >= chosen_depth() + margin:
                return f"{why}, where the query's depth agrees at {rival_depth:.2f} against {chosen_depth():.2f}"
        return ""

    @staticmethod
    def _support(T, uv, X, pinhole, tau_px: float) -> int:
        """Matches within tau_px of their projection under T (never one behind the camera); 0 without T. With the
        global matches and 4 px at 640 wide: the independent support the solver will count."""
        if T is None or len(uv) == 0:
            return 0
        return int((reprojection_errors(T, uv, X, pinhole) < tau_px).sum())

    def _fallback_matches(self, feats, kf, rotation, intr):
        """The fallback matcher on the query's and the keyframe's strongest keypoints (its cost grows with the
        square of their number), indices mapped back to the full sets."""
        k = int(self.conf["fallback_keypoints"])
        sub = kf.rotation_subset(rotation)
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

        best, best_n = None, int(c["guided_min_inliers"]) - 1
        T = solve_pnp_ransac(uv[sub], X[sub], pinhole, tau, 300).T_map_cam
        if (n := self._support(T, uv, X, pinhole, tau)) > best_n:
            best, best_n = T, n
        # a PnP hypothesis that needs no guiding (guide_below) needs no second opinion either: Kabsch costs ~6 ms
        ok = np.isfinite(xyz).all(1) if xyz is not None else np.zeros(0, bool)
        if ok.sum() >= 3 and best_n < c["guide_below"]:
            T = solve_rigid_ransac(xyz[ok], X[ok], 300).T_map_cam
            if (n := self._support(T, uv, X, pinhole, tau)) > best_n:
                best, best_n = T, n
        return best


METHOD = FeaturePnP
