import numpy as np

from relocal_ros.geometry.camera import Intrinsics
from relocal_ros.geometry.poses import make_T, pose_error
from relocal_ros.solver.pnp import (depth_sensor_sigma, pose_covariance, refine_rotation_on_image, solve_pnp_ransac,
                                   split_half_covariance)
from scipy.spatial.transform import Rotation

INTR = Intrinsics(500.0, 500.0, 320.0, 240.0, 640, 480)


def _scene(n, seed, noise_px=0.0):
    rng = np.random.default_rng(seed)
    T_map_cam = make_T(Rotation.from_rotvec(rng.normal(0, 0.3, 3)).as_matrix(), rng.normal(0, 1, 3))
    pc = np.column_stack([rng.uniform(-2, 2, n), rng.uniform(-1.5, 1.5, n), rng.uniform(1.5, 6, n)])
    X = pc @ T_map_cam[:3, :3].T + T_map_cam[:3, 3]
    uv = np.column_stack([INTR.fx * pc[:, 0] / pc[:, 2] + INTR.cx, INTR.fy * pc[:, 1] / pc[:, 2] + INTR.cy])
    return T_map_cam, uv + rng.normal(0, noise_px, uv.shape) if noise_px else uv, X


def test_exact_correspondences_recover_pose_below_1cm_and_0_1deg():
    T, uv, X = _scene(200, 0)
    res = solve_pnp_ransac(uv, X, INTR)
    dt, dr = pose_error(res.T_map_cam, T)
    assert dt < 0.01 and dr < 0.1
    assert res.num_inliers == 200


def test_half_outliers_are_rejected():
    T, uv, X = _scene(300, 1, noise_px=0.5)
    rng = np.random.default_rng(2)
    bad = rng.random(300) < 0.5
    uv[bad] = rng.uniform([0, 0], [640, 480], (bad.sum(), 2))
    res = solve_pnp_ransac(uv, X, INTR)
    dt, dr = pose_error(res.T_map_cam, T)
    assert dt < 0.02 and dr < 0.3
    # inliers found are (almost) exactly the clean correspondences
    assert (res.inliers & bad).sum() <= 3 and (res.inliers & ~bad).sum() >= 0.95 * (~bad).sum()


def test_too_few_points_gives_no_pose():
    T, uv, X = _scene(3, 3)
    assert solve_pnp_ransac(uv, X, INTR).T_map_cam is None


def test_covariance_matches_monte_carlo_spread():
    """The first-order covariance must predict the scatter of PnP solutions under pixel noise (within 2x)."""
    T, uv_clean, X = _scene(60, 4)
    sigma = 1.0
    rng = np.random.default_rng(5)
    positions, rotvecs = [], []
    for _ in range(150):
        res = solve_pnp_ransac(uv_clean + rng.normal(0, sigma, uv_clean.shape), X, INTR, max_reproj_error=6.0)
        positions.append(res.T_map_cam[:3, 3] - T[:3, 3])
        rotvecs.append(Rotation.from_matrix(res.T_map_cam[:3, :3] @ T[:3, :3].T).as_rotvec())
    empirical = np.cov(np.column_stack([positions, rotvecs]).T)
    predicted = pose_covariance(T, uv_clean, X, INTR, sigma, depth_noise=None)
    assert np.all(np.linalg.eigvalsh(predicted) > 0)
    ratio = np.diag(empirical) / np.diag(predicted)
    assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio


def test_covariance_keeps_a_shift_shared_by_every_point():
    """Independent pixel noise averages out over 300 points, a shift common to all of them does not: with the
    common term the 6-DoF 95 % ellipsoid holds about 95 % of PnP solutions under both noises; without it, the
    direction that moves every point alike is claimed far too narrow."""
    from relocal_ros.evaluation.metrics import CHI2_95, mahalanobis_sq
    T, uv_clean, X = _scene(300, 9)
    rng = np.random.default_rng(10)
    with_common = pose_covariance(T, uv_clean, X, INTR, 0.5, depth_noise=None, common_pixel_sigma=0.5)
    independent_only = pose_covariance(T, uv_clean, X, INTR, 0.5, depth_noise=None)
    inside_with, inside_without = [], []
    for _ in range(200):
        uv = uv_clean + rng.normal(0, 0.5, uv_clean.shape) + rng.normal(0, 0.5, 2)
        est = solve_pnp_ransac(uv, X, INTR, max_reproj_error=4.0).T_map_cam
        # the ellipsoid is centred on the estimate; the truth is what it must hold
        inside_with.append(mahalanobis_sq(est, with_common, T)[1] < CHI2_95[6])
        inside_without.append(mahalanobis_sq(est, independent_only, T)[1] < CHI2_95[6])
    assert 0.88 <= np.mean(inside_with) <= 0.99, np.mean(inside_with)
    assert np.mean(inside_without) < 0.6, np.mean(inside_without)
    # what the term adds is confined to that direction: the marginals barely grow
    assert np.trace(with_common[:3, :3]) < 1.5 * np.trace(independent_only[:3, :3])


def test_covariance_shrinks_with_more_points():
    T, uv, X = _scene(400, 6)
    small = pose_covariance(T, uv[:40], X[:40], INTR, 1.0)
    large = pose_covariance(T, uv, X, INTR, 1.0)
    floor = pose_covariance(T, uv, X, INTR, 1.0, map_sigma_m=0.02)
    assert np.allclose(np.diag(floor)[:3] - np.diag(large)[:3], 0.02 ** 2)
    assert np.trace(large[:3, :3]) < 0.3 * np.trace(small[:3, :3])


def test_covariance_accounts_for_depth_noise_of_map_points():
    """Map points with depth-sensor-sized noise in unknown directions (isotropic): the covariance with the depth
    model must predict the scatter (within 2x); the pixel-only covariance underestimates it."""
    T, uv, X_true = _scene(80, 7)
    rng = np.random.default_rng(8)
    centre = T[:3, 3]
    z = (X_true - centre) @ T[:3, 2]
    positions = []
    for _ in range(120):
        X = X_true + rng.normal(0, 1, X_true.shape) * depth_sensor_sigma(z)[:, None]
        res = solve_pnp_ransac(uv + rng.normal(0, 0.5, uv.shape), X, INTR, max_reproj_error=8.0)
        positions.append(res.T_map_cam[:3, 3] - centre)
    emp = np.trace(np.cov(np.array(positions).T))
    with_depth = np.trace(pose_covariance(T, uv, X_true, INTR, 0.5)[:3, :3])
    pixel_only = np.trace(pose_covariance(T, uv, X_true, INTR, 0.5, depth_noise=None)[:3, :3])
    assert 0.5 < emp / with_depth < 2.0, (emp, with_depth)
    assert emp / pixel_only > 2.0


def test_soft_inlier_scoring_recovers_the_pose_with_half_outliers():
    from relocal_ros.solver.soft_ransac import soft_inlier_score, solve_pnp_soft_inlier
    T, uv, X = _scene(400, 5)
    rng = np.random.default_rng(5)
    uv_noisy = uv + rng.normal(0, 0.5, uv.shape)
    uv_noisy[:200] = rng.uniform([0, 0], [640, 480], (200, 2))  # half outliers
    res, score = solve_pnp_soft_inlier(uv_noisy, X, INTR, tau=4.0)
    dt, dr = pose_error(res.T_map_cam, T)
    assert dt < 0.02 and dr < 0.3
    assert res.inliers[200:].mean() > 0.95 and res.inliers[:200].mean() < 0.05
    assert 150 < score < 230   # about the 200 true correspondences, counted softly (P3P from noisy points)
    # the soft count is a smooth version of the hard one: half a point at the threshold
    assert abs(soft_inlier_score(np.array([4.0]), 4.0, 0.5) - 0.5) < 1e-12
    assert solve_pnp_soft_inlier(uv[:3], X[:3], INTR)[0].T_map_cam is None


def test_rotation_on_the_image_undoes_a_lagging_depth_cameras_turn():
    # a pose with the right centre but turned 4 deg about the optical axis (what a depth camera lagging the colour
    # camera gives in a roll): the colour image's pixels bring the orientation back, despite noise and 30 % outliers
    T, uv, X = _scene(300, 5, noise_px=2.0)
    rng = np.random.default_rng(6)
    bad = rng.random(300) < 0.3
    uv[bad] = rng.uniform([0, 0], [640, 480], (bad.sum(), 2))
    turned = T.copy()
    turned[:3, :3] = T[:3, :3] @ Rotation.from_rotvec([0.01, -0.02, np.radians(4.0)]).as_matrix()
    assert pose_error(turned, T)[1] > 4.0
    fixed = refine_rotation_on_image(turned, uv, X, INTR, loss_scale_px=4.0)
    dt, dr = pose_error(fixed, T)
    assert dr < 0.2
    assert np.allclose(fixed[:3, 3], turned[:3, 3])  # the centre is kept


def _keyframe_off_under_the_left_half(seed, deg=2.0, metres=0.03):
    """Correspondences whose left-half map points come from a keyframe whose pose is off by deg / metres (what the
    first-order covariance does not model), 0.5 px pixel noise; the PnP pose and the true one."""
    T, uv, X = _scene(200, 100 + seed, noise_px=0.5)
    rng = np.random.default_rng(seed)
    left = uv[:, 0] < INTR.cx
    turn = Rotation.from_rotvec(rng.normal(size=3) / np.sqrt(3) * np.radians(deg)).as_matrix()
    X = X.copy()
    X[left] = (X[left] - T[:3, 3]) @ turn.T + T[:3, 3] + rng.normal(0, metres / np.sqrt(3), 3)
    res = solve_pnp_ransac(uv, X, INTR, max_reproj_error=20.0)
    assert res.num_inliers > 150 and (res.inliers & left).sum() > 50  # the pose rests on both keyframes
    return T, res.T_map_cam, uv[res.inliers], X[res.inliers]


def test_split_half_term_grows_with_what_the_halves_disagree_on():
    """A keyframe 2 deg / 3 cm off under half the image moves the PnP pose by 1-17 cm; the first-order covariance
    claims a few mm, the split-half term about the error's own size."""
    term_vs_error, first_order_vs_error = [], []
    for seed in range(12):
        T, est, uv, X = _keyframe_off_under_the_left_half(seed)
        error = np.linalg.norm(est[:3, 3] - T[:3, 3])
        term = split_half_covariance(est, uv, X, INTR, 4.0)
        first_order = pose_covariance(est, uv, X, INTR, 0.5, depth_noise=None)
        term_vs_error.append(np.sqrt(np.trace(term[:3, :3])) / error)
        first_order_vs_error.append(np.sqrt(np.trace(first_order[:3, :3])) / error)
        assert np.allclose(term, term.T) and np.linalg.eigvalsh(term).min() > -1e-12
    assert 0.3 < min(term_vs_error) and max(term_vs_error) < 3.0, term_vs_error
    assert max(first_order_vs_error) < 0.15, first_order_vs_error


def test_split_half_term_is_the_first_order_size_where_the_model_holds():
    """Pixel noise alone: each split's δδᵀ/4 estimates the pose covariance (halves with half the information), so
    the term over two splits is about twice the first-order one (median over scenes), and it is zero below two
    halves of 6 points."""
    ratios = []
    for seed in range(20):
        T, uv, X = _scene(200, 200 + seed, noise_px=0.5)
        est = solve_pnp_ransac(uv, X, INTR, max_reproj_error=4.0).T_map_cam
        term = split_half_covariance(est, uv, X, INTR, 4.0)
        ratios.append(np.trace(term[:3, :3]) / np.trace(pose_covariance(est, uv, X, INTR, 0.5, depth_noise=None)[:3, :3]))
    assert 1.0 < np.median(ratios) < 4.0, ratios
    T, uv, X = _scene(11, 3, noise_px=0.5)
    assert not split_half_covariance(T, uv, X, INTR, 4.0).any()
