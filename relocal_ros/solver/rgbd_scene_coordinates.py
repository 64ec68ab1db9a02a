"""RGB-D mode of the dense scene-coordinate methods (SANet, DSAC++), as DSAC*'s RGB-D mode: each network cell's
predicted scene coordinate is paired with the same cell lifted by the query's own depth, a rigid pose comes from
Kabsch-RANSAC on those 3D–3D pairs, point-to-plane ICP of the query's depth against the keyframes' depth refines it,
and the depth check judges the refined pose in the keyframes that looked its way.

Why: a cell's scene coordinate is often 5–20 cm off (fr1_rpy queries: 26 / 45 / 63 % within 5 / 10 / 20 cm for a
300 s DSAC++ head), and PnP over rays of 16–32 px cells turns that into poses 5–18 cm off, most of which the depth
check refuses. The depth fixes each pair's range, so a consensus of roughly right cells gives a roughly right pose,
and ICP then puts the query's surfaces onto the map's: on the same head and fr1_rpy queries, 24 % → 74 % within
5 cm / 5° (docs/measurements.md "Scene coordinates with the query's depth")."""
from __future__ import annotations

import numpy as np

from relocal_ros.solver.icp import SurfaceCache, refine_pose_icp
from relocal_ros.solver.pnp import refine_rotation_on_image, reprojection_errors
from relocal_ros.solver.rigid import rigid_inliers, solve_rigid_ransac
from relocal_ros.solver.verification import DenseCheck, dense_consistency, keyframe_depth_view, nearest_views, \
    sample_query_points

# the 3D inlier distance's floor: scene coordinates are coarser than keypoint matches (3 cm floor there); 5 cm
# kept 40 of 70 fr1_rpy Kabsch poses within 5 cm / 5 deg against 33 with 10 cm (the same after ICP: 52 vs 53)
KABSCH_FLOOR_M = 0.05
KABSCH_ITERATIONS = 1000
# the orientation is re-solved on the colour image from this many rigid inliers or more (soft-L1 scale: px at 640)
ROTATION_MIN_PAIRS = 20
ROTATION_LOSS_PX = 4.0
ROTATION_ROUNDS = 3
ROTATION_WINDOW = 0.05  # reprojection window of the later rounds, a share of the image width (32 px at 640)


def scene_coordinate_pose(query_points: np.ndarray, map_points: np.ndarray, depth: np.ndarray, rgb: np.ndarray,
                          intr, keyframe_map, viewpoints, surfaces: SurfaceCache,
                          refs: list[int] | None = None, image_points: np.ndarray | None = None
                          ) -> tuple[np.ndarray | None, DenseCheck | None, str]:
    """(pose, its depth check, '') or (None, None, why): the ICP-refined pose, or the Kabsch pose where ICP found
    too few pairs or the depth agreed less with it. query_points: the cells lifted by the query's depth (camera
    frame, NaN where it has none), map_points: their predicted scene coordinates. refs: the retrieved keyframes
    (SANet); without them (DSAC++) the keyframes nearest the pose in position and viewing direction (viewpoints:
    the map's keyframe centres and optical axes) refine and check it. image_points: the cells' undistorted pixels;
    with them the orientation is re-solved on the colour image (below)."""
    ok = np.isfinite(query_points).all(1) & np.isfinite(map_points).all(1)
    if ok.sum() < 3:
        return None, None, f"only {int(ok.sum())} scene coordinates where the query has depth"
    rig = solve_rigid_ransac(query_points[ok], map_points[ok], KABSCH_ITERATIONS, floor_m=KABSCH_FLOOR_M)
    if rig.T_map_cam is None:
        return None, None, "no rigid consensus between the scene coordinates and the query's depth"
    samples, grey = sample_query_points(depth, intr, rgb=rgb)
    if len(samples) == 0:
        return None, None, "the query's depth has no valid samples"

    def views_at(T):
        ids = list(refs) if refs else nearest_views(viewpoints, T)
        pairs = [(k, keyframe_depth_view(keyframe_map.keyframes[k])) for k in ids]
        return [(k, v) for k, v in pairs if v is not None]

    T = rig.T_map_cam
    views = views_at(T)
    if not views:
        return None, None, "no keyframe with depth to check the pose in"

    def check_at(T_other):  # a moved pose is checked where a camera there would look (DSAC++: no retrieval)
        there = views if refs else (views_at(T_other) or views)
        return dense_consistency(T_other, samples, [v for _, v in there], query_grey=grey)

    check = dense_consistency(T, samples, [v for _, v in views], query_grey=grey)
    # a third of the samples: enough for ICP, 3x faster (as the feature-matching path)
    T_icp = refine_pose_icp(T, samples[::3], [v for _, v in views], [surfaces.get(k, v) for k, v in views])
    if T_icp is not None:
        icp_check = check_at(T_icp)
        # ICP minimises point-to-plane distances to thumbnails of noisy depth: against one SUN3D keyframe it drew
        # the true pose 9-29 cm away while the depth agreement fell (0.90 -> 0.88, 0.84 -> 0.80); it is kept only
        # when the depth agrees better with it than with the Kabsch pose
        if icp_check.consistency > check.consistency:
            T, check = T_icp, icp_check
    if image_points is not None:
        T_colour = colour_orientation(T, query_points, map_points, image_points, intr)
        if T_colour is not None:
            colour_check = check_at(T_colour)
            # kept when the brightness agrees at least as well: where the depth does not lag (synthetic scenes),
            # noisy scene coordinates turned right SANet poses 1-2 deg away and their brightness agreement fell
            # from 0.74-0.95 to 0.07-0.55
            if colour_check.photometric >= check.photometric:
                T, check = T_colour, colour_check
    return T, check, ""


def colour_orientation(T_map_cam: np.ndarray, query_points: np.ndarray, map_points: np.ndarray,
                       image_points: np.ndarray, intr) -> np.ndarray | None:
    """The pose with its orientation re-solved on the colour image, or None with too few rigid inliers.

    Why: the depth camera may lag the colour camera (TUM fr1: its depth fits the ground-truth poses best ~30 ms
    before the colour stamp), and ICP, which aligns the query's depth, then returns the depth camera's orientation:
    DSAC++ roll errors on fr1_rpy correlated with the roll rate at -0.83 (-0.21 without ICP, whose positions are
    2x worse). The centre barely moves in 30 ms. The pixels are those of the rigid inliers, chosen in 3D and so
    spread over the whole image (a reprojection threshold keeps the centre, where a roll moves pixels least)."""
    inl = rigid_inliers(T_map_cam, query_points, map_points, KABSCH_FLOOR_M)
    if inl.sum() < ROTATION_MIN_PAIRS:
        return None
    T = T_map_cam
    for _ in range(ROTATION_ROUNDS):
        T = refine_rotation_on_image(T, image_points[inl], map_points[inl], intr, ROTATION_LOSS_PX * intr.width / 640.0)
        # the turned depth's pairs agree in 3D only near the image centre, where a roll moves them least: the next
        # round takes the cells the turned-back pose reprojects near their pixels, out to the image's edges
        wider = reprojection_errors(T, image_points, map_points, intr) < ROTATION_WINDOW * intr.width
        if wider.sum() < ROTATION_MIN_PAIRS or np.array_equal(wider, inl):
            break
        inl = wider
    return T


def fill_rgbd_evidence(ev, query_points: np.ndarray, frame, keyframe_map, viewpoints, surfaces: SurfaceCache,
                       refs: list[int] | None = None) -> None:
    """The RGB-D mode's result into the evidence: query_points, the checked pose and its depth check (the solver
    scores and publishes that pose), or a refusal."""
    T, chk, why = scene_coordinate_pose(query_points, ev.map_points, frame.depth, frame.rgb, frame.intrinsics,
                                        keyframe_map, viewpoints, surfaces, refs, ev.image_points)
    ev.query_points = query_points.astype(np.float32)
    if T is None:
        ev.refusal = f"RGB-D: {why}"
        return
    ev.checked_pose = T
    ev.dense_consistency, ev.dense_judged, ev.dense_samples = chk.consistency, chk.judged, chk.samples
    ev.dense_photometric = chk.photometric
