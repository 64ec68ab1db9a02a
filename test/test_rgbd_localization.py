"""RGB-D evidence (issue #16): Kabsch-RANSAC, dense depth verification, guided matching, covariance coverage, and
the command line's covariance output — on real images where the claim is about real images."""
import subprocess
import sys

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from relocal_ros.data.sources import open_source
from relocal_ros.data.trajectory import format_covariance_line, format_tum_line, read_covariances
from relocal_ros.evaluation.metrics import covariance_coverage
from relocal_ros.geometry.poses import make_T, pose_error
from relocal_ros.solver.rigid import kabsch, solve_rigid_ransac
from relocal_ros.solver.verification import DepthView, dense_consistency, grey_thumbnail, sample_query_points


@pytest.fixture(scope="module")
def sun3d(sun3d_studyroom) -> object:
    return open_source(sun3d_studyroom)


def test_kabsch_recovers_a_known_rotation_and_translation_exactly():
    rng = np.random.default_rng(1)
    P = rng.uniform(-1, 1, (20, 3))
    T = make_T(Rotation.from_euler("xyz", [30, -20, 75], degrees=True).as_matrix(), [0.4, -1.2, 2.0])
    Q = P @ T[:3, :3].T + T[:3, 3]
    assert np.allclose(kabsch(P, Q), T, atol=1e-9)
    # a reflection is never returned: mirrored points give the best proper rotation, det = +1
    assert np.linalg.det(kabsch(P, Q * [1, 1, -1])[:3, :3]) == pytest.approx(1.0)


def test_kabsch_ransac_recovers_pose_with_70_percent_outliers():
    rng = np.random.default_rng(0)
    n = 400
    T = make_T(Rotation.from_rotvec([0.3, -0.5, 0.2]).as_matrix(), [1.0, 0.5, -0.3])
    cam = np.column_stack([rng.uniform(-1.5, 1.5, n), rng.uniform(-1, 1, n), rng.uniform(1.0, 4.0, n)])
    world = cam @ T[:3, :3].T + T[:3, 3]
    cam_noisy = cam + rng.normal(0, 0.004, cam.shape) * cam[:, 2:3]   # depth noise growing with range
    outlier = rng.random(n) < 0.7
    world[outlier] = rng.uniform(-3, 3, (outlier.sum(), 3))
    res = solve_rigid_ransac(cam_noisy, world, max_iterations=2000)
    assert res.T_map_cam is not None
    dt, dr = pose_error(res.T_map_cam, T)
    assert dt < 0.02 and dr < 0.5
    # the inliers it reports are (almost exactly) the true ones
    assert (res.inliers & ~outlier).sum() >= 0.95 * (~outlier).sum()
    assert (res.inliers & outlier).sum() <= 0.02 * outlier.sum()


def test_kabsch_ransac_refuses_pure_outliers():
    rng = np.random.default_rng(3)
    res = solve_rigid_ransac(rng.uniform(-2, 2, (200, 3)) + [0, 0, 3], rng.uniform(-2, 2, (200, 3)))
    assert res.T_map_cam is None or res.inliers.sum() < 12


def test_points_behind_the_camera_never_support_an_rgbd_or_feature_hypothesis():
    """A map point behind the camera projects through the mirror onto the very pixel of its twin in front: the
    solver's 3D-3D hypothesis and the default method's support count must not take it for an inlier."""
    from relocal_ros.estimates import QueryEvidence
    from relocal_ros.geometry.camera import Intrinsics
    from relocal_ros.methods.xfeat_pnp import FeaturePnP
    from relocal_ros.pipeline import PoseSolver
    rng = np.random.default_rng(4)
    intr = Intrinsics(525.0, 525.0, 320.0, 240.0, 640, 480)
    T = make_T(Rotation.from_rotvec([0.1, -0.4, 0.05]).as_matrix(), [0.3, -0.2, 1.1])  # camera-to-map
    cam = np.column_stack([rng.uniform(-1.2, 1.2, 200), rng.uniform(-0.9, 0.9, 200), rng.uniform(1.0, 4.0, 200)])
    mirror = np.arange(200) >= 140            # 60 of them: the map point is the twin behind the camera
    cam_map = np.where(mirror[:, None], -cam, cam)
    X = cam_map @ T[:3, :3].T + T[:3, 3]
    uv = cam[:, :2] / cam[:, 2:] * 525.0 + [320.0, 240.0]
    query_xyz = cam.copy()
    query_xyz[mirror] = rng.uniform(-2, 2, (mirror.sum(), 3)) + [0, 0, 3]   # the query's depth disagrees there
    ev = QueryEvidence("1", intr, "xfeat_pnp", image_points=uv, map_points=X, query_points=query_xyz,
                       weights=np.ones(200, np.float32))
    res = PoseSolver({})._rigid_hypothesis(ev, 4.0)
    assert res is not None and pose_error(res.T_map_cam, T)[0] < 0.01
    assert res.inliers[~mirror].all() and not res.inliers[mirror].any()
    assert FeaturePnP._support(T, uv, X, intr, 4.0) == 140


def _view(frame):
    """The keyframe as a map stores it: depth and grey image at thumbnail size."""
    size = (160, 120)
    return DepthView(frame.pose, frame.intrinsics.scaled(*size),
                     cv2.resize(frame.depth, size, interpolation=cv2.INTER_NEAREST), grey_thumbnail(frame.rgb, size))


def test_dense_verification_accepts_true_pose_and_rejects_a_20cm_shift(sun3d):
    # query and keyframe 20 frames (0.7 s) apart in fragment 1 of the real SUN3D study room
    kf, query = sun3d[10], sun3d[30]
    pts, grey = sample_query_points(query.depth, query.intrinsics, rgb=query.rgb)
    assert len(pts) > 500
    true = dense_consistency(query.pose, pts, [_view(kf)], query_grey=grey)
    assert true.judged > 500 and true.consistency > 0.85 and true.photometric > 0.8
    # 20 cm along the viewing direction (where PnP is weakest), either way: refused by the default threshold
    for sign in (1, -1):
        shifted = query.pose.copy()
        shifted[:3, 3] += sign * 0.20 * shifted[:3, 2]
        assert dense_consistency(shifted, pts, [_view(kf)]).consistency < 0.5
    # 20 cm along any map axis: below the default threshold; 5 deg about any: clearly below the true pose's score
    from relocal_ros.pipeline import default_conf
    threshold = default_conf()["solver"]["min_dense_consistency"]
    for axis in range(3):
        for sign in (1, -1):
            shifted = query.pose.copy()
            shifted[axis, 3] += sign * 0.20
            assert dense_consistency(shifted, pts, [_view(kf)]).consistency < min(threshold, true.consistency - 0.2)
        turned = query.pose.copy()
        turned[:3, :3] = Rotation.from_euler("xyz"[axis], 5, degrees=True).as_matrix() @ turned[:3, :3]
        assert dense_consistency(turned, pts, [_view(kf)]).consistency < true.consistency - 0.15


def _single_keyframe_map(frame, *more):
    """A map of these frames as keyframes (one unless more are given)."""
    from relocal_ros.mapping.builder import build_map
    frames = [frame, *more]

    class Frames:
        intrinsics = frame.intrinsics

        def __len__(self):
            return len(frames)

        def __getitem__(self, i):
            return frames[i]
    return build_map(Frames(), {"min_translation": 0.0, "min_rotation_deg": 0.0},
                     progress=False)


def test_guided_matching_raises_inliers_on_a_real_wide_baseline_pair(sun3d):
    from relocal_ros.pipeline import Relocalizer
    # first and last frames of fragment 1: 1.6 s of hand-held motion apart
    kf, query = sun3d[0], sun3d[49]
    kmap = _single_keyframe_map(kf)
    query.pose = None
    plain = Relocalizer(kmap, {"inference": {"guided_matching": False, "use_depth": False}}).localize(query)
    # guided matching always (by default it is skipped when the global matches alone give >= 150 inliers)
    guided = Relocalizer(kmap, {"inference": {"use_depth": False, "guide_below": 10 ** 6}}).localize(query)
    truth = sun3d[49].pose
    assert guided.accepted
    assert guided.inliers >= 1.5 * max(plain.inliers, 1), (plain.inliers, guided.inliers)
    dt, dr = pose_error(guided.T_map_cam, truth)
    assert dt < 0.15 and dr < 3


def test_covariance_coverage_agrees_with_a_monte_carlo_draw(tmp_path):
    """Ground truths drawn from each estimate's own covariance fall inside its 95 % ellipsoid 95 % of the time."""
    rng = np.random.default_rng(7)
    est, cov, gt = [], [], []
    n = 3000
    for i in range(n):
        stamp = f"{1000 + i * 0.1:.6f}"
        T = make_T(Rotation.random(random_state=i).as_matrix(), rng.uniform(-3, 3, 3))
        A = rng.normal(size=(6, 6)) * np.r_[[0.03] * 3, [0.02] * 3][:, None]
        C = A @ A.T + np.diag([1e-4] * 3 + [1e-5] * 3)
        e = rng.multivariate_normal(np.zeros(6), C)
        G = make_T(Rotation.from_rotvec(e[3:]).as_matrix() @ T[:3, :3], T[:3, 3] + e[:3])
        est.append(format_tum_line(stamp, T))
        cov.append(format_covariance_line(stamp, C))
        gt.append(format_tum_line(stamp, G))
    (tmp_path / "est.txt").write_text("\n".join(est) + "\n")
    (tmp_path / "cov.txt").write_text("\n".join(cov) + "\n")
    (tmp_path / "gt.txt").write_text("\n".join(gt) + "\n")
    assert np.allclose(read_covariances(tmp_path / "cov.txt")[f"{1000:.6f}"].shape, (6, 6))
    rep = covariance_coverage(tmp_path / "est.txt", tmp_path / "cov.txt", tmp_path / "gt.txt")
    assert rep.n == n
    assert 0.93 < rep.inside_position / n < 0.97
    assert 0.93 < rep.inside_pose / n < 0.97


def test_coverage_counts_the_poses_that_are_wrong_and_claim_otherwise(tmp_path):
    """A pose 20 cm off is "confidently wrong" when its covariance claims 2 cm, not when it admits 15 cm; a right pose
    never is, whatever its covariance; the evaluate report says how many."""
    T = make_T(Rotation.from_euler("xyz", [10, -20, 30], degrees=True).as_matrix(), [1.0, 2.0, 0.5])
    off = make_T(T[:3, :3], T[:3, 3] + [0.2, 0.0, 0.0])
    tight, wide = np.diag([0.02 ** 2] * 3 + [0.01 ** 2] * 3), np.diag([0.15 ** 2] * 3 + [0.05 ** 2] * 3)
    rows = [("1.000000", T, tight), ("2.000000", off, tight), ("3.000000", off, wide), ("4.000000", T, wide)]
    (tmp_path / "est.txt").write_text("".join(format_tum_line(s, E) + "\n" for s, E, _ in rows))
    (tmp_path / "cov.txt").write_text("".join(format_covariance_line(s, C) + "\n" for s, _, C in rows))
    (tmp_path / "gt.txt").write_text("".join(format_tum_line(s, T) + "\n" for s, _, _ in rows))
    rep = covariance_coverage(tmp_path / "est.txt", tmp_path / "cov.txt", tmp_path / "gt.txt")
    assert (rep.n, rep.inside_position, rep.inside_pose, rep.confidently_wrong) == (4, 3, 3, 1)
    assert "confidently wrong (off by > 10 cm or 10 deg, truth outside the 6-DoF ellipsoid): 1 of 4" in rep.format()


def relocal(*args):
    return subprocess.run([sys.executable, "-m", "relocal_ros.cli", "-q", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_cli_writes_covariances_and_counts_an_unreadable_query_image(tum_rpy, tmp_path):
    p = relocal("split", tum_rpy, "--map-out", tmp_path / "m", "--query-out", tmp_path / "q", "--ratio", "0.9")
    assert p.returncode == 0, p.stderr
    assert relocal("build-map", tmp_path / "m", "--out", tmp_path / "map").returncode == 0
    # the query folder links its images: give it its own copy with one image replaced by a corrupt PNG
    q = tmp_path / "q"
    src = (q / "rgb").resolve()
    (q / "rgb").unlink()
    (q / "rgb").mkdir()
    entries = [ln.split() for ln in (q / "rgb.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    for _, rel in entries:
        (q / rel).write_bytes((src / rel.split("/", 1)[1]).read_bytes())
    (q / entries[3][1]).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    assert cv2.imread(str(q / entries[3][1])) is None
    p = relocal("localize", tmp_path / "map", q, "--out", tmp_path / "est.txt", "--covariance-out",
                tmp_path / "cov.txt")
    assert p.returncode == 0, p.stderr
    assert "1 unreadable or failed" in p.stdout
    est = [ln.split()[0] for ln in (tmp_path / "est.txt").read_text().splitlines()]
    covs = (tmp_path / "cov.txt").read_text().splitlines()
    assert len(est) >= len(entries) - 3 and entries[3][0] not in est
    assert [c.split()[0] for c in covs] == est and all(len(c.split()) == 37 for c in covs)
    for c in covs:
        C = np.array(c.split()[1:], float).reshape(6, 6)
        assert np.allclose(C, C.T) and np.all(np.linalg.eigvalsh(C) > 0)
    p = relocal("evaluate", tmp_path / "est.txt", tum_rpy / "groundtruth.txt", "--queries", q, "--covariance",
                tmp_path / "cov.txt")
    assert p.returncode == 0, p.stderr
    assert "inside the published 95 % ellipsoid: position (3-DoF)" in p.stdout
    assert "confidently wrong (off by > 10 cm or 10 deg, truth outside the 6-DoF ellipsoid): 0 of" in p.stdout


def test_rgbd_evidence_survives_the_message_and_solves_the_same(sun3d):
    """The inference node's RGB-D evidence (independence flags, query points, dense check) reaches the solver node
    through a serialized relocal_msgs/QueryEvidence and gives the same decision and pose."""
    from rclpy.serialization import deserialize_message, serialize_message
    from relocal_msgs.msg import QueryEvidence as Msg
    from std_msgs.msg import Header

    from relocal_ros.nodes.conversions import evidence_from_msg, evidence_to_msg
    from relocal_ros.pipeline import InferenceEngine, PoseSolver
    kmap = _single_keyframe_map(sun3d[0])
    query = sun3d[20]
    query.pose = None
    ev = InferenceEngine(kmap, {"guide_below": 10 ** 6}).infer(query)
    assert len(ev.query_points) == len(ev.image_points) > 0 and (~ev.independent).any()
    assert ev.dense_judged > 0
    header = Header()
    header.stamp.sec, header.stamp.nanosec = 20, 666666667
    back = evidence_from_msg(deserialize_message(serialize_message(evidence_to_msg(ev, header)), Msg))
    assert np.array_equal(back.independent, ev.independent)
    assert np.allclose(back.query_points, ev.query_points, equal_nan=True)
    assert (back.dense_judged, back.dense_samples) == (ev.dense_judged, ev.dense_samples)
    assert back.dense_consistency == pytest.approx(ev.dense_consistency)
    a, b = PoseSolver().solve(ev), PoseSolver().solve(back)
    assert a.accepted and b.accepted and a.scores["independent_inliers"] == b.scores["independent_inliers"]
    assert np.allclose(a.T_map_cam, b.T_map_cam, atol=1e-4)


def test_icp_pulls_a_real_pose_15cm_off_back_onto_the_keyframes_surfaces(sun3d):
    from relocal_ros.solver.icp import refine_pose_icp, surface_maps
    query = sun3d[30]
    views = [_view(sun3d[10]), _view(sun3d[20])]
    pts, _ = sample_query_points(query.depth, query.intrinsics)
    off = query.pose.copy()
    off[:3, :3] = Rotation.from_euler("zy", [2, -2], degrees=True).as_matrix() @ off[:3, :3]
    off[:3, 3] += [0.09, -0.06, 0.10]
    before = pose_error(off, query.pose)
    refined = refine_pose_icp(off, pts, views, [surface_maps(v) for v in views])
    after = pose_error(refined, query.pose)
    assert before[0] > 0.14 and after[0] < 0.06 and after[1] < 1.5, (before, after)
    assert dense_consistency(refined, pts, views).consistency > 0.85 > dense_consistency(off, pts, views).consistency


def _keyframe_points_seen_by(kf, query):
    """The keyframe's 3D points, where the query sees them at its true pose (as a scene-coordinate method predicts
    them) and which of them fall inside its image: (X, uv, inside)."""
    from relocal_ros.geometry.poses import invert
    X = kf.points3d
    X = X[np.isfinite(X).all(1)].astype(np.float64)
    T_cw = invert(query.pose)
    pc = X @ T_cw[:3, :3].T + T_cw[:3, 3]
    intr = query.intrinsics
    uv = np.stack([intr.fx * pc[:, 0] / pc[:, 2] + intr.cx, intr.fy * pc[:, 1] / pc[:, 2] + intr.cy], 1)
    inside = (pc[:, 2] > 0.1) & (uv[:, 0] >= 0) & (uv[:, 0] < intr.width) & (uv[:, 1] >= 0) & (uv[:, 1] < intr.height)
    return X, uv, inside


def test_query_depth_vets_the_evidence_of_depth_blind_methods(sun3d):
    """Learned methods never read the query's depth; the engine checks their evidence against it all the same
    (solver/verification.verify_evidence): a relative-pose hypothesis 20 deg off is dropped, the true one kept; 2D-3D
    evidence whose pose is 30 cm off is refused by the solver, the true one accepted."""
    from relocal_ros.estimates import QueryEvidence, RelativePoseHypothesis
    from relocal_ros.geometry.poses import invert
    from relocal_ros.pipeline import PoseSolver
    from relocal_ros.solver.verification import verify_evidence
    kf, query = sun3d[10], sun3d[30]
    kmap = _single_keyframe_map(kf)
    T_kf_q = invert(kmap.keyframes[0].T_map_cam) @ query.pose
    wrong = T_kf_q.copy()
    wrong[:3, :3] = Rotation.from_euler("y", 20, degrees=True).as_matrix() @ wrong[:3, :3]
    scale = float(np.linalg.norm(T_kf_q[:3, 3]))
    ev = QueryEvidence("q", query.intrinsics, "exrenet")
    ev.hypotheses = [RelativePoseHypothesis(0, kmap.keyframes[0].T_map_cam, T, scale) for T in (wrong, T_kf_q)]
    verify_evidence(ev, query.depth, query.rgb, kmap, kmap.viewpoints(), 4.0)
    agreement = [h.dense_consistency for h in ev.hypotheses]
    assert agreement[0] < 0.4 < 0.8 < agreement[1] and not ev.refusal, agreement
    # what the engine found reaches the solver node: each hypothesis's agreement, and "not checked" stays NaN
    from rclpy.serialization import deserialize_message, serialize_message
    from relocal_msgs.msg import QueryEvidence as Msg
    from std_msgs.msg import Header

    from relocal_ros.nodes.conversions import evidence_from_msg, evidence_to_msg
    unchecked = RelativePoseHypothesis(0, kmap.keyframes[0].T_map_cam, T_kf_q)  # no scale: nothing to check
    ev.hypotheses.append(unchecked)
    back = evidence_from_msg(deserialize_message(serialize_message(evidence_to_msg(ev, Header())), Msg))
    assert [h.dense_consistency for h in back.hypotheses[:2]] == pytest.approx(agreement)
    assert np.isnan(back.hypotheses[2].dense_consistency)
    ev.hypotheses.pop()
    # the solver drops what its floor calls contradicted: the true hypothesis alone is fused, the wrong one alone
    # is refused, whatever the fusion would make of it
    solver = PoseSolver({"fusion": "rrpr"})
    est = solver.solve(ev)
    assert est.accepted and est.scores["depth_contradicted"] == 1, est.reason
    assert pose_error(est.T_map_cam, query.pose)[0] < 0.01
    ev.hypotheses = ev.hypotheses[:1]
    est = solver.solve(ev)
    assert not est.accepted and "contradicts all 1" in est.reason
    # a laxer floor lets it through: the decision is the solver's setting, not the engine's
    assert PoseSolver({"fusion": "rrpr", "min_dense_consistency_floor": 0.0}).solve(ev).scores["depth_contradicted"] == 0

    # 2D-3D: the keyframe's 3D points seen by the query at its true pose (as a scene-coordinate method predicts them)
    X, uv, inside = _keyframe_points_seen_by(kmap.keyframes[0], query)
    intr = query.intrinsics
    assert inside.sum() > 100
    outcomes = {}
    for name, offset in (("true", 0.0), ("30 cm off", 0.30)):  # along the viewing direction, where PnP is weakest
        ev = QueryEvidence("q", intr, "sanet", image_points=uv[inside].astype(np.float32),
                           map_points=(X[inside] + offset * query.pose[:3, 2]).astype(np.float32), keyframe_ids=[0])
        ev.weights = np.ones(len(ev.image_points), np.float32)
        verify_evidence(ev, query.depth, query.rgb, kmap, kmap.viewpoints(), 24.0)
        assert ev.dense_samples > 500
        outcomes[name] = (ev.dense_consistency, PoseSolver().solve(ev))
    assert outcomes["true"][0] > 0.8 and outcomes["true"][1].accepted, outcomes["true"][1].reason
    assert outcomes["30 cm off"][0] < 0.4 and not outcomes["30 cm off"][1].accepted
    assert "query depth" in outcomes["30 cm off"][1].reason
    # 30 cm along the map's x axis: a wall slides along itself, the depth agrees at 0.4-0.65 (neither confirmed nor
    # contradicted); dense predictions need the confirmation (SolverTraits.needs_dense_confirmation)
    ev = QueryEvidence("q", intr, "sanet", image_points=uv[inside].astype(np.float32),
                       map_points=(X[inside] + [0.30, 0, 0]).astype(np.float32), keyframe_ids=[0])
    ev.weights = np.ones(len(ev.image_points), np.float32)
    verify_evidence(ev, query.depth, query.rgb, kmap, kmap.viewpoints(), 24.0)
    assert 0.4 <= ev.dense_consistency < 0.65
    est = PoseSolver().solve(ev)
    assert not est.accepted and "needs the depth's confirmation" in est.reason


def test_rgb_only_evidence_is_vetted_by_the_keyframes_brightness(sun3d):
    """Without query depth the engine draws the retrieved keyframe into the query under each pose and correlates the
    high-passed brightness (verification.photometric_agreement): a relative-pose hypothesis 20 deg or 25 cm off is
    dropped by the solver, the true one fused; a learned method's 2D-3D evidence 30 cm off is refused, the true one
    accepted — all on a real SUN3D pair, 0.7 s apart."""
    from rclpy.serialization import deserialize_message, serialize_message
    from relocal_msgs.msg import QueryEvidence as Msg
    from std_msgs.msg import Header

    from relocal_ros.estimates import QueryEvidence, RelativePoseHypothesis
    from relocal_ros.geometry.poses import invert
    from relocal_ros.nodes.conversions import evidence_from_msg, evidence_to_msg
    from relocal_ros.pipeline import PoseSolver, default_conf
    from relocal_ros.solver.verification import verify_evidence
    threshold = default_conf()["solver"]["min_photometric_agreement"]
    kf, query = sun3d[10], sun3d[30]
    kmap = _single_keyframe_map(kf)
    T_kf_q = invert(kmap.keyframes[0].T_map_cam) @ query.pose
    turned = T_kf_q.copy()
    turned[:3, :3] = Rotation.from_euler("y", 20, degrees=True).as_matrix() @ turned[:3, :3]
    moved = T_kf_q.copy()
    moved[:3, 3] += [0.25, 0.0, 0.0]
    ev = QueryEvidence("q", query.intrinsics, "exrenet")
    ev.hypotheses = [RelativePoseHypothesis(0, kmap.keyframes[0].T_map_cam, T, float(np.linalg.norm(T[:3, 3])))
                     for T in (turned, moved, T_kf_q)]
    verify_evidence(ev, None, query.rgb, kmap, kmap.viewpoints(), 4.0)
    agreement = [h.photometric_agreement for h in ev.hypotheses]
    assert max(agreement[:2]) < threshold < agreement[2], agreement
    assert all(np.isnan(h.dense_consistency) for h in ev.hypotheses)  # no depth: the depth check did not run
    # the scores reach the solver node; a negative correlation travels as 0, "not checked" as NaN
    ev.hypotheses.append(RelativePoseHypothesis(0, kmap.keyframes[0].T_map_cam, T_kf_q))  # no scale: not checked
    back = evidence_from_msg(deserialize_message(serialize_message(evidence_to_msg(ev, Header())), Msg))
    assert [h.photometric_agreement for h in back.hypotheses[:3]] == pytest.approx([max(a, 0) for a in agreement])
    assert np.isnan(back.hypotheses[3].photometric_agreement)
    ev.hypotheses.pop()
    est = PoseSolver({"fusion": "rrpr"}).solve(ev)
    assert est.accepted and est.scores["photometric_contradicted"] == 2, est.reason
    assert pose_error(est.T_map_cam, query.pose)[0] < 0.01
    ev.hypotheses = ev.hypotheses[:2]
    est = PoseSolver({"fusion": "rrpr"}).solve(ev)
    assert not est.accepted and "photometric agreement" in est.reason

    # 2D-3D evidence of a dense method (SANet): the keyframe's 3D points where the query sees them
    X, uv, inside = _keyframe_points_seen_by(kmap.keyframes[0], query)
    intr = query.intrinsics
    outcomes = {}
    for name, offset in (("true", 0.0), ("30 cm off", 0.30)):
        ev = QueryEvidence("q", intr, "sanet", image_points=uv[inside].astype(np.float32),
                           map_points=(X[inside] + [offset, 0, 0]).astype(np.float32), keyframe_ids=[0])
        ev.weights = np.ones(len(ev.image_points), np.float32)
        verify_evidence(ev, None, query.rgb, kmap, kmap.viewpoints(), 24.0)
        outcomes[name] = (ev.photometric_agreement, PoseSolver().solve(ev))
    assert outcomes["true"][0] > threshold and outcomes["true"][1].accepted, outcomes["true"]
    assert outcomes["30 cm off"][0] < threshold and not outcomes["30 cm off"][1].accepted
    assert "needs confirmation" in outcomes["30 cm off"][1].reason
    # feature matches (the default method) on an RGB-only query: the same check confirms a pose as the depth would
    # (then min_independent_inliers suffices) or refuses it
    rng = np.random.default_rng(0)
    few = rng.choice(np.flatnonzero(inside), 60, replace=False)
    for name, offset in (("true", 0.0), ("30 cm off", 0.30)):
        ev = QueryEvidence("q", intr, "xfeat_pnp", image_points=uv[few].astype(np.float32),
                           map_points=(X[few] + [offset, 0, 0]).astype(np.float32), keyframe_ids=[0])
        ev.weights = np.ones(len(ev.image_points), np.float32)
        # 20 found by global matching (< min_independent_inliers_unverified), 40 by guided matching
        ev.independent = np.arange(60) < 20
        verify_evidence(ev, None, query.rgb, kmap, kmap.viewpoints(), 4.0)
        outcomes[name] = (ev, PoseSolver().solve(ev))
    ev, est = outcomes["true"]
    assert ev.photometric_agreement >= default_conf()["solver"]["photometric_confirmation"] and est.accepted, est.reason
    # the coarser band confirms the same pose on its own; with neither, 20 global inliers are too few
    band_only = PoseSolver({"photometric_confirmation": 1.0}).solve(ev)
    assert ev.photometric_band >= default_conf()["solver"]["photometric_band_confirmation"], ev.photometric_band
    assert band_only.accepted and band_only.scores["photometric_band"] == ev.photometric_band, band_only.reason
    strict = PoseSolver({"photometric_confirmation": 1.0, "photometric_band_confirmation": 1.1}).solve(ev)
    assert not strict.accepted and "min_independent_inliers_unverified" in strict.reason
    ev, est = outcomes["30 cm off"]
    assert not est.accepted and "keyframes drawn into the query" in est.reason, est.reason
    # why the band only confirms: this pose, 30 cm off, would pass the floor in it (0.34), not in the finer score
    assert ev.photometric_agreement < threshold <= ev.photometric_band, (ev.photometric_agreement, ev.photometric_band)


def test_depth_without_brightness_does_not_confirm_a_feature_matched_pose(sun3d):
    """With query depth, a feature-matched pose counts as confirmed (min_independent_inliers global-match inliers
    then suffice) only when the query's brightness also correlates with the keyframe's on the surfaces the depth
    agrees on: a periodic room or a flat wall agrees in depth under a wrong pose. The same real SUN3D pair and
    correspondences, the query's depth as recorded, its colour image as taken and turned upside down."""
    import dataclasses

    from relocal_ros.estimates import QueryEvidence
    from relocal_ros.pipeline import PoseSolver, default_conf
    from relocal_ros.solver.verification import verify_evidence
    kmap = _single_keyframe_map(sun3d[10])
    query = sun3d[30]
    X, uv, inside = _keyframe_points_seen_by(kmap.keyframes[0], query)
    few = np.random.default_rng(0).choice(np.flatnonzero(inside), 60, replace=False)
    conf = default_conf()["solver"]

    def solved(frame, independent):
        ev = QueryEvidence("q", query.intrinsics, "xfeat_pnp", image_points=uv[few].astype(np.float32),
                           map_points=X[few].astype(np.float32), keyframe_ids=[0],
                           weights=np.ones(60, np.float32), independent=np.arange(60) < independent)
        verify_evidence(ev, frame.depth, frame.rgb, kmap, kmap.viewpoints(), 4.0)
        return ev, PoseSolver().solve(ev)

    # 20 global-match inliers (< min_independent_inliers_unverified) and 40 guided ones
    ev, est = solved(query, 20)
    assert ev.dense_consistency >= conf["min_dense_consistency"], ev.dense_consistency
    assert ev.dense_photometric >= conf["min_dense_photometric"] and est.accepted, (ev.dense_photometric, est.reason)
    assert pose_error(est.T_map_cam, query.pose)[0] < 0.02
    upside_down = dataclasses.replace(query, rgb=np.ascontiguousarray(query.rgb[::-1]))
    ev, est = solved(upside_down, 20)
    assert ev.dense_consistency >= conf["min_dense_consistency"] and ev.dense_photometric < 0.5
    assert not est.accepted and "brightness" in est.reason and "min_independent_inliers_unverified" in est.reason
    # as many global-match inliers as an unconfirmed pose needs: accepted on the matches alone
    assert solved(upside_down, 60)[1].accepted
    # not measured (a keyframe without a thumbnail): the depth alone decides, as before
    ev.dense_photometric = float("nan")
    assert PoseSolver().solve(ev).accepted


def test_the_query_depth_vouches_for_a_pose_that_only_guided_matches_support(sun3d):
    """Under a wide viewpoint change the global matches may hold almost none of a right pose's inliers (fr1_rpy
    against the fr1_desk map: 0-11), the guided ones the rest. Guided matches cannot vouch for the pose they were
    chosen to fit; the query's depth and brightness can. Such a pose is accepted with a covariance that spans what
    the depth check cannot see (its tolerance, per axis), and refused when the brightness, the depth or the setting
    says no. A real SUN3D pair: 60 correspondences, 3 of them from global matching."""
    import dataclasses

    from relocal_ros.estimates import QueryEvidence
    from relocal_ros.pipeline import PoseSolver
    from relocal_ros.solver.verification import consistency_tolerance, verify_evidence
    kmap = _single_keyframe_map(sun3d[10])
    query = sun3d[30]
    X, uv, inside = _keyframe_points_seen_by(kmap.keyframes[0], query)
    few = np.random.default_rng(0).choice(np.flatnonzero(inside), 60, replace=False)

    def evidence(frame, independent=3, offset=0.0):
        ev = QueryEvidence("q", query.intrinsics, "xfeat_pnp", image_points=uv[few].astype(np.float32),
                           map_points=(X[few] + [offset, 0, 0]).astype(np.float32), keyframe_ids=[0],
                           weights=np.ones(60, np.float32), independent=np.arange(60) < independent)
        verify_evidence(ev, None if frame is None else frame.depth, frame.rgb if frame is not None else query.rgb,
                        kmap, kmap.viewpoints(), 4.0)
        return ev

    est = PoseSolver().solve(evidence(query))
    assert est.accepted and est.scores["depth_vouched"] == 1, est.reason
    assert pose_error(est.T_map_cam, query.pose)[0] < 0.02
    # as wide as the depth check's tolerance at the scene's range, per axis: not the few mm that 57 guided
    # inliers would claim
    z = np.median((X[few] - query.pose[:3, 3]) @ query.pose[:3, :3][:, 2])
    assert np.diag(est.covariance)[:3].min() >= float(consistency_tolerance(z, z)) ** 2 * 0.8
    vouched_by_matches = PoseSolver().solve(evidence(query, independent=60))
    assert vouched_by_matches.accepted and vouched_by_matches.scores["depth_vouched"] == 0
    assert np.trace(vouched_by_matches.covariance[:3, :3]) < 0.5 * np.trace(est.covariance[:3, :3])
    # the same depth, the colour upside down: the brightness does not confirm, the guided matches cannot vouch
    upside_down = dataclasses.replace(query, rgb=np.ascontiguousarray(query.rgb[::-1]))
    refused = PoseSolver().solve(evidence(upside_down))
    assert not refused.accepted and "guided matches cannot vouch" in refused.reason
    # the depth contradicts a pose 20 cm off; without depth nothing vouches; and the setting turns it off
    assert not PoseSolver().solve(evidence(query, offset=0.2)).accepted
    without_depth = PoseSolver().solve(evidence(None))
    assert not without_depth.accepted and "guided matches cannot vouch" in without_depth.reason
    off = PoseSolver({"depth_vouches": False}).solve(evidence(query))
    assert not off.accepted and "guided matches cannot vouch" in off.reason


def test_the_matches_choose_the_stored_rotation_and_guided_matching_projects_only_it(sun3d):
    """A keyframe is stored at several in-plane angles: a query turned like copy r is matched against copy r (the
    most mutual nearest neighbours), and guided matching searches only that copy, not all three."""
    from relocal_ros.mapping.keyframe_map import rotate_image
    from relocal_ros.methods.base import keyframe_matches
    from relocal_ros.methods.xfeat_pnp import FeaturePnP
    from relocal_ros.pipeline import default_conf
    kmap = _single_keyframe_map(sun3d[0])
    kf = kmap.keyframes[0]
    assert len(kmap.rotations) == 3
    method = FeaturePnP(kmap, default_conf()["inference"])
    for r, angle in enumerate(kmap.rotations):
        turned = rotate_image(sun3d[3].rgb, angle)  # a frame 0.1 s later, turned like copy r
        feats, _ = kmap.encoder(turned)
        m, _, chosen = keyframe_matches(method.matcher, feats, turned.shape[1::-1], kf)
        assert chosen == r and len(m) >= 50
        assert set(kf.feature_rotation[m[:, 1]]) == {r}
        X, D = method._guide_set([0], {0: chosen})
        sub = kf.rotation_subset(r)
        assert len(D) == len(sub) < len(kf.features)
        np.testing.assert_array_equal(D, kf.features.descriptors[sub])
        np.testing.assert_array_equal(X, kf.points3d[sub])


def test_the_matches_choose_the_rotation_where_the_retrieval_descriptor_picks_a_wrong_one(tum_rpy, tum_desk):
    """fr1_rpy against the map of fr1_desk's 5 frames (the hard benchmark's scene): the nearest keyframe is 27 deg
    away and hardly rolled (1 deg), yet its copy turned by 45 deg has the retrieval descriptor nearest the query's and
    almost no true match; the upright copy has tens, and the query is localized (docs/measurements.md "The rotation
    the matches choose")."""
    import dataclasses

    from relocal_ros.mapping.builder import build_map
    from relocal_ros.matching.features import mutual_nearest_neighbours
    from relocal_ros.methods.base import keyframe_matches
    from relocal_ros.pipeline import Relocalizer
    from relocal_ros.solver.pnp import reprojection_errors
    query = next(f for f in open_source(tum_rpy) if f.stamp == "1305031236.461654")
    kmap = build_map(open_source(tum_desk), {}, progress=False)
    relocalizer = Relocalizer(kmap, {})
    kf = next(k for k in kmap.keyframes if k.stamp == "1305031469.296754")
    feats, gdesc = kmap.encoder(query.rgb)

    def true_matches(m):  # query keypoints within 8 px of their keyframe point projected with the true pose
        return int((reprojection_errors(query.pose, feats.keypoints[m[:, 0]], kf.points3d[m[:, 1]],
                                        query.intrinsics) < 8).sum())
    m, _, chosen = keyframe_matches(relocalizer.engine.method.matcher, feats, (640, 480), kf)
    assert kmap.rotations[chosen] == 0.0 and true_matches(m) >= 15, true_matches(m)
    by_descriptor = int(np.argmax(kf.global_descriptors @ gdesc))
    assert by_descriptor != chosen  # the choice this replaced
    sub = kf.rotation_subset(by_descriptor)
    wrong = mutual_nearest_neighbours(feats.descriptors, kf.features.descriptors[sub])
    assert true_matches(np.c_[wrong[:, 0], sub[wrong[:, 1]]]) <= 5

    est = relocalizer.localize(dataclasses.replace(query, pose=None))
    assert est.accepted, est.reason
    dt, dr = pose_error(est.T_map_cam, query.pose)
    assert dt < 0.1 and dr < 5, (dt, dr)


def test_icp_refines_a_weak_query_once_across_both_searches(tum_rpy, tum_desk, monkeypatch):
    """fr1_rpy against the map of fr1_desk's 5 frames: this query's first search, on 3 references, finds weak
    evidence (few global-match inliers) and ICP-checks its hypothesis; the second search, on all 5, no longer runs
    ICP again (it changed no answer within 10 cm/10 deg on the hard benchmark: docs/measurements.md "The second
    search's ICP"), and the pose is still right."""
    import dataclasses

    from relocal_ros.mapping.builder import build_map
    from relocal_ros.methods import xfeat_pnp
    from relocal_ros.pipeline import Relocalizer
    query = next(f for f in open_source(tum_rpy) if f.stamp == "1305031246.597580")
    relocalizer = Relocalizer(build_map(open_source(tum_desk), {}, progress=False), {})
    searches, real_search = [], xfeat_pnp.FeaturePnP._search
    monkeypatch.setattr(xfeat_pnp.FeaturePnP, "_search",
                        lambda self, q, refs, *a, **k: searches.append(len(refs)) or real_search(self, q, refs, *a, **k))
    icp_from, real_icp = [], xfeat_pnp.refine_pose_icp
    monkeypatch.setattr(xfeat_pnp, "refine_pose_icp", lambda T, *a: icp_from.append(T) or real_icp(T, *a))
    est = relocalizer.localize(dataclasses.replace(query, pose=None))
    assert searches == [3, 5], searches
    assert len(icp_from) == 1, len(icp_from)
    assert est.accepted, est.reason
    dt, dr = pose_error(est.T_map_cam, query.pose)
    assert dt < 0.1 and dr < 5, (dt, dr)


def test_the_lighterglue_fallback_matches_each_reference_once_across_both_searches(tum_rpy, tum_desk, monkeypatch):
    """The opt-in `fallback_matcher: lighterglue` on a query whose evidence stays weak (fr1_rpy against the map of
    fr1_desk's 5 frames): LighterGlue matches the best references in the first search, and the second search, whose
    best references are the same keyframes, reuses those matches instead of running LighterGlue on them again
    (docs/measurements.md "The LighterGlue fallback"). The pose is right."""
    import dataclasses

    from relocal_ros.mapping.builder import build_map
    from relocal_ros.matching.matchers import LighterGlueMatcher
    from relocal_ros.methods import xfeat_pnp
    from relocal_ros.pipeline import Relocalizer
    query = next(f for f in open_source(tum_rpy) if f.stamp == "1305031234.729764")
    relocalizer = Relocalizer(build_map(open_source(tum_desk), {}, progress=False),
                              {"inference": {"fallback_matcher": "lighterglue"}})
    searches, real_search = [], xfeat_pnp.FeaturePnP._search
    monkeypatch.setattr(xfeat_pnp.FeaturePnP, "_search",
                        lambda self, q, refs, *a, **k: searches.append(len(refs)) or real_search(self, q, refs, *a, **k))
    glued, real_glue = [], LighterGlueMatcher.__call__
    monkeypatch.setattr(LighterGlueMatcher, "__call__",
                        lambda self, q, qs, r, rs: glued.append(len(r)) or real_glue(self, q, qs, r, rs))
    est = relocalizer.localize(dataclasses.replace(query, pose=None))
    assert searches == [3, 5], searches
    assert len(glued) == 2, glued   # fallback_references: 2, once each
    assert est.accepted, est.reason
    dt, dr = pose_error(est.T_map_cam, query.pose)
    assert dt < 0.05 and dr < 5, (dt, dr)


def test_the_engine_checks_the_pose_the_solver_publishes(sun3d, monkeypatch):
    """A soft-inlier method's (SANet's) pose is checked once, and the solver publishes that very pose: with the
    query's depth the RGB-D mode's pose (checked against the depth), on an RGB-only query the soft-inlier PnP pose
    (checked against the keyframes' brightness), which the solver no longer searches for a second time. (A plain
    RANSAC pose of the same correspondences was up to 10 cm / 6 deg from the published one on fr1_rpy.) With a single
    reference keyframe SANet leaves the depth unused (its one view would be both the scene and the only check): the
    soft-inlier PnP pose, checked against the query's depth by the engine."""
    import dataclasses

    from relocal_ros import pipeline
    from relocal_ros.solver import rgbd_scene_coordinates, verification
    kmap = _single_keyframe_map(sun3d[10], sun3d[20])
    assert len(kmap.keyframes) == 2
    checked, searches = [], []
    real_dense, real_photo, real_soft = (verification.dense_consistency, verification.photometric_scores,
                                        verification.solve_pnp_soft_inlier)

    def recording_dense(T, *args, **kwargs):
        checked.append(np.array(T))
        return real_dense(T, *args, **kwargs)

    def recording_photo(T, *args, **kwargs):
        checked.append(np.array(T))
        return real_photo(T, *args, **kwargs)

    def counting_soft(*args, **kwargs):
        searches.append(1)
        return real_soft(*args, **kwargs)
    monkeypatch.setattr(rgbd_scene_coordinates, "dense_consistency", recording_dense)
    monkeypatch.setattr(verification, "photometric_scores", recording_photo)
    monkeypatch.setattr(verification, "solve_pnp_soft_inlier", counting_soft)
    monkeypatch.setattr(pipeline, "solve_pnp_soft_inlier", counting_soft)
    engine, solver = pipeline.InferenceEngine(kmap, {"method": "sanet"}), pipeline.PoseSolver()
    for i in (26, 30):
        for frame in (sun3d[i], dataclasses.replace(sun3d[i], depth=None)):
            checked.clear()
            searches.clear()
            ev = engine.infer(frame)
            assert not ev.refusal and ev.checked_pose is not None, ev.refusal
            assert (ev.dense_samples > 0) == (frame.depth is not None)
            est = solver.solve(ev)
            assert est.candidate is not None and any(np.allclose(T, est.candidate, atol=1e-9) for T in checked)
            assert len(searches) == (0 if frame.depth is not None else 1)   # the solver searched no second time
            assert est.scores["hypothesis"] == ("checked_rgbd" if frame.depth is not None else "checked")
            assert not ev.depth_unused
    engine = pipeline.InferenceEngine(_single_keyframe_map(sun3d[10]), {"method": "sanet"})
    searches.clear()
    ev = engine.infer(sun3d[30])
    assert ev.depth_unused and len(ev.query_points) == 0 and ev.keyframe_ids == [0]
    assert not ev.refusal and ev.checked_pose is not None and ev.dense_samples > 0   # the engine's depth check
    est = solver.solve(ev)
    assert len(searches) == 1 and est.scores["hypothesis"] == "checked"
    assert np.array_equal(est.candidate, ev.checked_pose)


def test_scene_coordinates_with_the_query_depth_give_a_pose_pnp_cannot(sun3d):
    """RGB-D mode of the dense methods (solver/rgbd_scene_coordinates.py): a real SUN3D query's cells with scene
    coordinates as a network gives them (the true ones plus 5 cm noise on each axis, half replaced by outliers):
    Kabsch-RANSAC on the cells lifted by the query's depth recovers the pose within 4 cm / 1 deg, where the
    soft-inlier PnP of the same cells is off by more than 10 cm; the solver accepts and publishes it, through the
    message too. The same coordinates 1 m away from the truth (another place) are refused, and so is the right pose
    when the query's brightness does not match the keyframes' (a depth-alike place that looks different)."""
    from rclpy.serialization import deserialize_message, serialize_message
    from relocal_msgs.msg import QueryEvidence as Msg
    from std_msgs.msg import Header

    from relocal_ros.estimates import QueryEvidence
    from relocal_ros.geometry.camera import lift_pixels, undistort_points
    from relocal_ros.networks.dsacpp.model import cell_pixels
    from relocal_ros.nodes.conversions import evidence_from_msg, evidence_to_msg
    from relocal_ros.pipeline import PoseSolver
    from relocal_ros.solver.icp import SurfaceCache
    from relocal_ros.solver.rgbd_scene_coordinates import fill_rgbd_evidence
    from relocal_ros.solver.soft_ransac import solve_pnp_soft_inlier
    kmap = _single_keyframe_map(sun3d[10])
    query = sun3d[30]
    intr = query.intrinsics
    px = cell_pixels(intr.width, intr.height)
    qp = lift_pixels(query.depth, intr, px)
    truth = qp.astype(np.float64) @ query.pose[:3, :3].T + query.pose[:3, 3]
    ok = np.isfinite(truth).all(1)
    rng = np.random.default_rng(0)  # seeds 0-3: RGB-D 2.2-5.4 cm, soft-inlier PnP 3.7-15 cm off
    X = truth[ok] + rng.normal(0, 0.05, (ok.sum(), 3))
    outliers = rng.random(len(X)) < 0.5
    X[outliers] = rng.uniform(X.min(0), X.max(0), (outliers.sum(), 3))
    uv = undistort_points(px[ok], intr)
    soft = solve_pnp_soft_inlier(uv, X.astype(np.float32), intr, 10.0)[0]
    assert pose_error(soft.T_map_cam, query.pose)[0] > 0.10

    def evidence(map_points, frame=query):
        ev = QueryEvidence("q", intr, "dsacpp", image_points=uv, map_points=map_points.astype(np.float32),
                           weights=np.ones(len(uv), np.float32))
        fill_rgbd_evidence(ev, qp[ok], frame, kmap, kmap.viewpoints(), SurfaceCache())
        return ev
    ev = evidence(X)
    assert not ev.refusal and ev.checked_pose is not None
    t_err, r_err = pose_error(ev.checked_pose, query.pose)
    assert t_err < 0.04 and r_err < 1.0, (t_err, r_err)
    est = PoseSolver().solve(ev)
    assert est.accepted and np.array_equal(est.T_map_cam, ev.checked_pose), est.reason
    back = evidence_from_msg(deserialize_message(serialize_message(evidence_to_msg(ev, Header())), Msg))
    assert np.allclose(back.checked_pose, ev.checked_pose)
    again = PoseSolver().solve(back)
    assert again.accepted and np.allclose(again.T_map_cam, est.T_map_cam, atol=1e-5)
    elsewhere = evidence(X + [1.0, 0.0, 0.5])
    assert elsewhere.refusal or not PoseSolver().solve(elsewhere).accepted
    # the surfaces agree but the brightness on them does not (the colour image upside down): a learned dense
    # method's pose needs both (min_dense_photometric)
    import dataclasses
    mirrored = evidence(X, dataclasses.replace(query, rgb=np.ascontiguousarray(query.rgb[::-1])))
    assert mirrored.dense_consistency > 0.8 and mirrored.dense_photometric < 0.5
    est = PoseSolver().solve(mirrored)
    assert not est.accepted and "brightness" in est.reason


def test_a_pose_without_retrieval_is_checked_against_keyframes_that_looked_the_same_way():
    """verification.nearest_views: where the camera turns in place (fr1_rpy), the keyframes nearest by centre look
    elsewhere; those that stood near the pose *and* looked its way judge it."""
    from relocal_ros.solver.verification import nearest_views
    yaw = [0, 90, 180, 270, 5, 0]          # degrees about the vertical (y) axis
    x = [0.0, 0.01, 0.02, 0.03, 0.25, 1.5]  # metres along x
    poses = [make_T(Rotation.from_euler("y", a, degrees=True).as_matrix(), [d, 0, 0]) for a, d in zip(yaw, x)]
    centres = np.array([T[:3, 3] for T in poses])
    axes = np.array([T[:3, 2] for T in poses])
    query = make_T(Rotation.from_euler("y", 2, degrees=True).as_matrix(), [0.02, 0, 0])
    assert nearest_views((centres, axes), query, k=2) == [0, 4]
    # by centre alone the three turned keyframes (1-3 cm away) would come before the one 23 cm away looking the same way
    assert set(np.argsort(np.linalg.norm(centres - query[:3, 3], axis=1))[:3]) == {1, 2, 3}
    assert nearest_views((np.zeros((0, 3)), np.zeros((0, 3))), query) == []


def test_guided_matches_sharpen_the_pose_but_not_its_covariance(sun3d):
    """Guided matches are found in windows around the hypothesis and follow it when it is off: the published
    covariance comes from the globally matched inliers (solver.covariance_points = independent), so a pose carried
    mostly by guided matches says it is less certain than the same pose from as many independent matches."""
    from relocal_ros.pipeline import InferenceEngine, PoseSolver
    kmap = _single_keyframe_map(sun3d[0])
    query = sun3d[20]
    query.pose = None
    ev = InferenceEngine(kmap, {"guide_below": 10 ** 6}).infer(query)  # always guided
    # a map that states exact keyframe poses (as synthetic maps do), and no split-half term (the same for both, from
    # every inlier): the matching part of the covariance alone
    ev.map_sigma_m = ev.map_sigma_deg = 0.0
    alone = {"split_half_weight": 0.0}
    a, b = PoseSolver(alone).solve(ev), PoseSolver({**alone, "covariance_points": "all"}).solve(ev)
    assert a.accepted and b.accepted, (a.reason, b.reason)
    assert np.allclose(a.T_map_cam, b.T_map_cam)
    guided = a.inliers - a.scores["independent_inliers"]
    assert guided > 0.25 * a.inliers, (guided, a.inliers)
    assert np.trace(a.covariance[:3, :3]) > 1.2 * np.trace(b.covariance[:3, :3])
    ev.independent = np.ones(len(ev.image_points), bool)  # the same matches, all found globally
    c = PoseSolver(alone).solve(ev)
    assert np.allclose(c.covariance, b.covariance)


def test_a_lagging_depth_camera_does_not_turn_the_scene_coordinate_pose(sun3d):
    """A depth camera that lags the colour camera during a roll (TUM fr1: its depth fits the poses ~30 ms before the
    colour stamp) sees the scene turned, and ICP, which aligns that depth, returns the depth camera's orientation.
    colour_orientation re-solves it on the colour image. A real SUN3D query: its depth turned 4 deg about the optical
    axis, the pose such a depth gives (the true one turned the same way), and cells carrying the true scene
    coordinates of the colour pixels plus 3 cm noise, a third of them outliers."""
    from relocal_ros.geometry.camera import lift_pixels, undistort_points
    from relocal_ros.networks.dsacpp.model import cell_pixels
    from relocal_ros.solver.rgbd_scene_coordinates import ROTATION_MIN_PAIRS, colour_orientation
    query = sun3d[30]
    intr = query.intrinsics
    px = cell_pixels(intr.width, intr.height)
    truth = lift_pixels(query.depth, intr, px, query.pose).astype(np.float64)
    turn = cv2.getRotationMatrix2D((intr.cx, intr.cy), 4.0, 1.0)
    lagged = cv2.warpAffine(query.depth, turn, (query.depth.shape[1], query.depth.shape[0]),
                            flags=cv2.INTER_NEAREST, borderValue=0)
    qp = lift_pixels(lagged, intr, px)
    ok = np.isfinite(truth).all(1) & np.isfinite(qp).all(1)
    rng = np.random.default_rng(1)
    X = truth[ok] + rng.normal(0, 0.03, (ok.sum(), 3))
    outliers = rng.random(len(X)) < 0.3
    X[outliers] = rng.uniform(X.min(0), X.max(0), (outliers.sum(), 3))
    uv = undistort_points(px[ok], intr)
    # the depth camera's pose: turned about its optical axis (image y down: +4 deg in the image is -4 about z)
    depth_pose = query.pose @ make_T(Rotation.from_euler("z", -4.0, degrees=True).as_matrix(), np.zeros(3))
    assert pose_error(depth_pose, query.pose)[1] > 3.9
    fixed = colour_orientation(depth_pose, qp[ok], X, uv, intr)
    assert fixed is not None
    t_err, r_err = pose_error(fixed, query.pose)
    assert r_err < 0.5, r_err
    assert np.allclose(fixed[:3, 3], depth_pose[:3, 3])
    # too few rigid inliers (coordinates from another place): left to the solver's gates, not re-solved
    assert colour_orientation(depth_pose, qp[ok][:ROTATION_MIN_PAIRS], X[:ROTATION_MIN_PAIRS] + 1.0, uv, intr) is None


def test_the_colour_orientation_is_kept_only_where_the_brightness_agrees_better(sun3d):
    """The other way round: a depth that does not lag, and scene coordinates whose error turns them all 3 deg about
    the camera (a network's errors are correlated over neighbouring cells). Re-solving the orientation on them would
    follow the error; the brightness of the query, drawn into the keyframe, agrees less with that pose, so the
    RGB-D mode keeps the pose that Kabsch and ICP found (synthetic scenes: 0.74-0.95 -> 0.07-0.55 when it did not)."""
    from relocal_ros.geometry.camera import lift_pixels, undistort_points
    from relocal_ros.networks.dsacpp.model import cell_pixels
    from relocal_ros.solver.icp import SurfaceCache
    from relocal_ros.solver.rgbd_scene_coordinates import colour_orientation, scene_coordinate_pose
    kmap = _single_keyframe_map(sun3d[10])
    query = sun3d[30]
    intr = query.intrinsics
    px = cell_pixels(intr.width, intr.height)
    qp = lift_pixels(query.depth, intr, px)
    ok = np.isfinite(qp).all(1)
    turned = query.pose @ make_T(Rotation.from_euler("z", 3.0, degrees=True).as_matrix(), np.zeros(3))
    X = qp[ok].astype(np.float64) @ turned[:3, :3].T + turned[:3, 3]
    X += np.random.default_rng(1).normal(0, 0.03, X.shape)
    uv = undistort_points(px[ok], intr)

    def pose(image_points):
        T, check, why = scene_coordinate_pose(qp[ok], X, query.depth, query.rgb, intr, kmap, kmap.viewpoints(),
                                              SurfaceCache(), image_points=image_points)
        assert T is not None, why
        return T
    depth_only = pose(None)
    followed = colour_orientation(depth_only, qp[ok], X, uv, intr)
    assert pose_error(followed, query.pose)[1] > pose_error(depth_only, query.pose)[1] + 0.5
    assert np.allclose(pose(uv), depth_only)


def test_a_place_with_a_look_alike_elsewhere_is_refused_as_ambiguous(sun3d):
    """A periodic place (identical shelves, cubicles): the map holds a real keyframe and its twin, the very same
    image and depth 1 m to the side. A query near the keyframe matches both equally well, so the pose it would get
    is a coin toss between two places 1 m apart, each with strong support and its depth agreeing: refused, and
    said why. The same query against the map without the twin is answered, and right."""
    import dataclasses

    from relocal_ros.mapping.builder import build_map
    from relocal_ros.pipeline import Relocalizer
    kf, query, truth = sun3d[10], dataclasses.replace(sun3d[14], pose=None), sun3d[14].pose
    shift = np.eye(4)
    shift[:3, 3] = kf.pose[:3, :3] @ [1.0, 0.0, 0.0]   # 1 m along the keyframe's x axis
    twin = dataclasses.replace(kf, pose=shift @ kf.pose)

    class Frames(list):
        intrinsics = kf.intrinsics

    alone = Relocalizer(build_map(Frames([kf]), {}, progress=False), {}).localize(query)
    assert alone.accepted, alone.reason
    dt, dr = pose_error(alone.T_map_cam, truth)
    assert dt < 0.1 and dr < 5

    twins = build_map(Frames([kf, twin]), {}, progress=False)
    est = Relocalizer(twins, {}).localize(query)
    assert not est.accepted and "ambiguous place" in est.reason, est.reason
    # the check is what refuses it: without it one of the two places is published
    unchecked = Relocalizer(twins, {"inference": {"ambiguity_ratio": 0.0}}).localize(query)
    assert unchecked.accepted, unchecked.reason


def test_a_weaker_look_alike_that_the_depth_prefers_makes_the_place_ambiguous(sun3d, monkeypatch):
    """The twin map of the test above, with the pose the matches chose at the twin's place and the true keyframe's
    matches cut to a third (a rival too weak for the ratio rule). When the twin's depth is 15 % farther than the
    query's surfaces there (a look-alike of other geometry), the query's depth agrees far better with the weaker
    rival at the true place: ambiguous, and said why. When both places have the same geometry, the depth cannot
    prefer either and the weaker rival is no reason to refuse."""
    import dataclasses

    from relocal_ros.mapping.builder import build_map
    from relocal_ros.methods.xfeat_pnp import FeaturePnP
    from relocal_ros.pipeline import Relocalizer
    kf, query, truth = sun3d[10], dataclasses.replace(sun3d[14], pose=None), sun3d[14].pose
    shift = np.eye(4)
    shift[:3, 3] = kf.pose[:3, :3] @ [1.0, 0.0, 0.0]

    class Frames(list):
        intrinsics = kf.intrinsics

    calls = []
    real = FeaturePnP._ambiguity
    monkeypatch.setattr(FeaturePnP, "_ambiguity", lambda self, *a: calls.append((self, a)) or real(self, *a))

    def verdict(twin_depth_scale, margin=0.2):
        """the check's answer for the twin's pose as the chosen one, on the real matches and depth of one query"""
        twins = build_map(Frames([kf, dataclasses.replace(kf, pose=shift @ kf.pose)]), {}, progress=False)
        twins.keyframes[1].depth_thumbnail = (twins.keyframes[1].depth_thumbnail.astype(np.float32)
                                              * twin_depth_scale).astype(np.float16)
        calls.clear()
        Relocalizer(twins, {}).localize(query)
        method, (_, pooled, refs, q_uv, pinhole, depth_agreement) = calls[-1]
        weaker = [(m[::3], s[::3]) if k == 0 else (m, s) for (m, s), k in zip(pooled, refs)]
        method.conf = {**method.conf, "ambiguity_depth_margin": margin}
        return real(method, shift @ truth, weaker, refs, q_uv, pinhole, depth_agreement)

    why = verdict(1.15)
    assert "ambiguous place: keyframe 0" in why and "depth agrees at" in why, why
    assert verdict(1.15, margin=0.0) == ""   # the ratio rule alone: the rival is too weak
    assert verdict(1.0) == ""                # same geometry at both places


def test_weak_evidence_from_the_best_references_looks_at_the_next_candidates(sun3d, monkeypatch):
    """Retrieval ranks a keyframe of the room's other side first (fragment 2: the same cubicles, another view) and
    the keyframe that sees the query's place second. Matched against the first alone the evidence is weak and the
    query is refused; with `extra_references` the next candidate is matched as well, the search runs again on
    both, and the pose is right and names the keyframes it came from."""
    import dataclasses

    from relocal_ros.mapping.builder import build_map
    from relocal_ros.pipeline import Relocalizer
    far, near = sun3d[75], sun3d[10]
    query, truth = dataclasses.replace(sun3d[14], pose=None), sun3d[14].pose

    class Frames(list):
        intrinsics = near.intrinsics

    kmap = build_map(Frames([far, near]), {}, progress=False)
    monkeypatch.setattr(kmap.index, "search", lambda desc, k: (np.array([0.9, 0.8]), np.array([0, 1])))

    alone = Relocalizer(kmap, {"inference": {"num_references": 1, "extra_references": 0}}).localize(query)
    assert not alone.accepted, "the other side of the room alone should not place the query"

    from relocal_ros.methods import xfeat_pnp
    matched, real = [], xfeat_pnp.rotation_matches
    monkeypatch.setattr(xfeat_pnp, "rotation_matches",
                        lambda *a: matched.append((kmap.keyframes.index(a[3]), a[4])) or real(*a))
    reloc = Relocalizer(kmap, {"inference": {"num_references": 1, "extra_references": 1}})
    ev = reloc.engine.infer(query)
    assert ev.keyframe_ids == [0, 1]
    # the second search reuses the first's work: each keyframe's global matches (one mutual-NN matching per stored
    # rotation) are computed once; the first search's before the second's
    rotations = range(len(kmap.rotations))
    assert sorted(matched[:len(rotations)]) == [(0, r) for r in rotations]
    assert sorted(matched) == [(k, r) for k in (0, 1) for r in rotations]
    est = reloc.solver.solve(ev)
    assert est.accepted, est.reason
    dt, dr = pose_error(est.T_map_cam, truth)
    assert dt < 0.1 and dr < 5, (dt, dr)


@pytest.mark.slow
def test_right_answers_on_an_exact_synthetic_map_lie_inside_their_95_percent_ellipsoid(tmp_path):
    """`relocal synth`'s scenes state exact keyframe poses, yet the points the pipeline finds and lifts are not
    exact: right answers erred 2-4 mm / 0.07-0.16 deg rms while, with no map error at all, their covariance claimed
    about a third of that (6-DoF coverage 66-84 % of right answers on seeds 3, 7, 11, 19, 23). The solver's least map
    error (min_map_sigma_*) must keep them inside the ellipsoid (seed 11 rendered at full size, map = seq-01,
    queries = seq-02)."""
    from relocal_ros.data.synth import generate_scene
    from relocal_ros.evaluation.metrics import CHI2_95, mahalanobis_sq
    from relocal_ros.mapping.builder import build_map
    from relocal_ros.pipeline import Relocalizer
    scene = generate_scene(tmp_path / "scene", 11, workers=1, progress=False)
    kmap = build_map(open_source(scene / "seq-01"), progress=False)
    assert kmap.metadata["pose_sigma_m"] == 0.0  # the map says: exact poses
    reloc = Relocalizer(kmap)
    inside3 = inside6 = right = 0
    for frame in open_source(scene / "seq-02"):
        truth, frame.pose = frame.pose, None
        est = reloc.localize(frame)
        if not est.accepted:
            continue
        dt, dr = pose_error(est.T_map_cam, truth)
        if dt < 0.05 and dr < 5.0:
            right += 1
            d3, d6 = mahalanobis_sq(est.T_map_cam, est.covariance, truth)
            inside3 += d3 < CHI2_95[3]
            inside6 += d6 < CHI2_95[6]
    assert right >= 40
    assert inside3 >= 0.9 * right and inside6 >= 0.9 * right, (right, inside3, inside6)
