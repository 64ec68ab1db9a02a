"""The three ways of turning relative poses to retrieved keyframes into an absolute pose, on hypotheses built from
known geometry: exact ones must give the pose back, an outlier must be voted out, a wrong scale must not count."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from relocal_ros.estimates import RelativePoseHypothesis
from relocal_ros.geometry.poses import invert, make_T, pose_error
from relocal_ros.solver.relative import fuse, intersect_rays

rng = np.random.default_rng(0)
T_QUERY = make_T(Rotation.from_euler("xyz", [5, -20, 3], degrees=True).as_matrix(), [1.0, 0.5, 1.2])


def keyframes(n=5):
    out = []
    for k in range(n):
        R = Rotation.from_euler("xyz", rng.normal(0, 10, 3), degrees=True).as_matrix()
        c = T_QUERY[:3, 3] + rng.normal(0, 0.4, 3)
        out.append(make_T(R, c))
    return out


def hypothesis(k, T_map_kf, T_map_q=T_QUERY, rot_noise_deg=0.0, dir_noise_deg=0.0, scale_factor=1.0,
               with_scale=True, uncertainty=np.nan):
    T = invert(T_map_kf) @ T_map_q
    t = T[:3, 3]
    s = np.linalg.norm(t)
    d = Rotation.from_rotvec(np.radians(dir_noise_deg) * rng.normal(size=3) / np.sqrt(3)).apply(t / s)
    R = Rotation.from_rotvec(np.radians(rot_noise_deg) * rng.normal(size=3) / np.sqrt(3)).as_matrix() @ T[:3, :3]
    return RelativePoseHypothesis(k, T_map_kf, make_T(R, d), s * scale_factor if with_scale else np.nan, uncertainty)


@pytest.mark.parametrize("method", ["exrenet", "irls", "rrpr"])
def test_exact_hypotheses_give_the_pose_back(method):
    hyps = [hypothesis(k, T) for k, T in enumerate(keyframes())]
    res = fuse(hyps, method)
    dt, dr = pose_error(res.T_map_cam, T_QUERY)
    assert dt < 1e-6 and dr < 1e-6
    assert res.covariance.shape == (6, 6) and np.all(np.linalg.eigvalsh(res.covariance) > 0)


def test_exrenet_triangulates_without_any_scale():
    hyps = [hypothesis(k, T, with_scale=False) for k, T in enumerate(keyframes())]
    res = fuse(hyps, "exrenet")
    dt, dr = pose_error(res.T_map_cam, T_QUERY)
    assert dt < 1e-6 and dr < 1e-6 and len(res.inliers) == 5


def test_outlier_is_voted_out_and_noise_is_averaged():
    kfs = keyframes(5)
    wrong = make_T(np.eye(3), T_QUERY[:3, 3] + [1.5, -1.0, 0.3])
    hyps = [hypothesis(k, T, rot_noise_deg=1.0, dir_noise_deg=1.0) for k, T in enumerate(kfs[:4])]
    hyps.append(hypothesis(4, kfs[4], T_map_q=wrong))
    for method in ("exrenet", "irls"):
        res = fuse(hyps, method)
        dt, dr = pose_error(res.T_map_cam, T_QUERY)
        assert 4 not in res.inliers and dt < 0.05 and dr < 2.0, (method, dt, dr, res.inliers)


def test_scale_test_rejects_a_ray_that_points_right_but_is_far_off_in_distance():
    hyps = [hypothesis(k, T) for k, T in enumerate(keyframes(4))]
    hyps[3] = hypothesis(3, hyps[3].T_map_kf, scale_factor=3.0)  # direction right, distance 3x
    res = fuse(hyps, "exrenet")
    assert 3 not in res.inliers and len(res.inliers) == 3


def test_ties_go_to_the_less_uncertain_pair():
    kfs = keyframes(4)
    other = make_T(np.eye(3), T_QUERY[:3, 3] + [0.8, 0.0, 0.0])
    # two consistent groups of two: the certain one must win
    hyps = [hypothesis(0, kfs[0], uncertainty=5.0, with_scale=False), hypothesis(1, kfs[1], uncertainty=5.0, with_scale=False),
            hypothesis(2, kfs[2], other, uncertainty=0.5, with_scale=False), hypothesis(3, kfs[3], other, uncertainty=0.5, with_scale=False)]
    res = fuse(hyps, "exrenet", alpha_max_deg=3.0)
    assert sorted(res.inliers) == [2, 3], res.inliers


def test_parallel_rays_do_not_intersect():
    c = np.array([[0, 0, 0], [1, 0, 0]], float)
    d = np.array([[0, 0, 1], [0, 0, 1]], float)
    assert intersect_rays(c, d) is None


def test_unknown_fusion_is_a_clear_error():
    with pytest.raises(ValueError, match="exrenet"):
        fuse([], "average")


def test_two_view_relative_pose_and_depth_scale_from_exact_matches():
    from relocal_ros.geometry.camera import Intrinsics
    from relocal_ros.solver.two_view import relative_pose_hypothesis
    intr = Intrinsics(525.0, 525.0, 319.5, 239.5, 640, 480)
    T_map_kf = make_T(Rotation.from_euler("y", 10, degrees=True).as_matrix(), [0.2, 0.0, 0.1])
    T_map_q = T_map_kf @ make_T(Rotation.from_euler("xy", [3, -8], degrees=True).as_matrix(), [0.3, 0.05, 0.1])
    X_kf = np.column_stack([rng.uniform(-1.5, 1.5, 300), rng.uniform(-1, 1, 300), rng.uniform(1.5, 4.0, 300)])
    X_map = X_kf @ T_map_kf[:3, :3].T + T_map_kf[:3, 3]

    def project(T_map_cam):
        Xc = (X_map - T_map_cam[:3, 3]) @ T_map_cam[:3, :3]
        return np.column_stack([intr.fx * Xc[:, 0] / Xc[:, 2] + intr.cx, intr.fy * Xc[:, 1] / Xc[:, 2] + intr.cy])

    X_known = X_map.copy()
    X_known[::3] = np.nan  # missing depth on a third of the keyframe's pixels
    h, n = relative_pose_hypothesis(7, T_map_kf, project(T_map_kf), intr, X_known, project(T_map_q), intr)
    assert n > 250 and h.keyframe_id == 7
    truth = invert(T_map_kf) @ T_map_q
    assert abs(h.scale - np.linalg.norm(truth[:3, 3])) < 1e-3
    dt, dr = pose_error(h.T_map_kf @ make_T(h.T_kf_query[:3, :3], h.T_kf_query[:3, 3] * h.scale), T_map_q)
    assert dt < 1e-3 and dr < 0.05
    # too few matches: no hypothesis, never a guess
    assert relative_pose_hypothesis(7, T_map_kf, project(T_map_kf)[:8], intr, X_known[:8],
                                    project(T_map_q)[:8], intr)[0] is None


def test_two_view_gives_no_hypothesis_for_degenerate_matches():
    """A query taken where its keyframe was (zero parallax: OpenCV 5's five-point solver asserts on it): no
    hypothesis, never an exception out of the solver."""
    from relocal_ros.geometry.camera import Intrinsics
    from relocal_ros.solver.two_view import relative_pose_hypothesis
    intr = Intrinsics(525.0, 525.0, 319.5, 239.5, 640, 480)
    uv = rng.uniform([0, 0], [640, 480], (60, 2))
    X = np.column_stack([rng.uniform(-1, 1, (60, 2)), rng.uniform(1, 3, 60)])
    assert relative_pose_hypothesis(0, np.eye(4), uv, intr, X, uv.copy(), intr) == (None, 0)
    # matches on one image row (the five-point solver asserted on this set too): an answer or none, no exception
    kf_line = np.column_stack([np.linspace(57, 582, 60), np.full(60, 239.5)])
    h, n = relative_pose_hypothesis(0, np.eye(4), kf_line, intr, X, kf_line + [52.5, 0.0], intr)
    assert (h is None) == (n < 15)
