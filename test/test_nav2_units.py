"""The Nav2-facing rules without ROS: the map->odom keeper (AMCL-style re-sending), one-shot relocalization
requests, the missing base->camera message, and mapping poses from what robots publish, interpolated to the
image stamp and composed with TF."""
import types

import numpy as np
import pytest

from relocal_ros.geometry.poses import T_from_tq, invert, pose_error
from relocal_ros.nodes.map_odom import MapOdomKeeper, OneShotRequests, base_tf_problem, map_odom_from
from relocal_ros.nodes.pose_history import (PoseHistory, StampedPose, camera_pose_in_map, interpolate,
                                            pose_from_msg)

S = 1_000_000_000


def yaw(deg, t=(0, 0, 0)):
    a = np.radians(deg) / 2
    return T_from_tq(t, [0, 0, np.sin(a), np.cos(a)])


def test_map_odom_composition_is_rep105():
    T_map_base, T_odom_base = yaw(30, (2, 1, 0)), yaw(-10, (0.5, 0, 0))
    T_map_odom = map_odom_from(T_map_base, T_odom_base)
    np.testing.assert_allclose(T_map_odom @ T_odom_base, T_map_base, atol=1e-12)
    np.testing.assert_allclose(map_odom_from(T_map_base, None), T_map_base)


def test_keeper_resends_the_latest_post_dated_until_replaced():
    k = MapOdomKeeper(tolerance_s=0.5)
    assert k.due(100 * S) is None                                   # nothing before the first accepted pose
    A, B = yaw(10, (1, 0, 0)), yaw(20, (2, 0, 0))
    first = k.update(A, "map", "odom", image_stamp_ns=99 * S, now_ns=100 * S)
    # the first one also at its image stamp: a lookup at now works at once, not only after the tolerance
    assert [s.stamp_ns for s in first] == [99 * S, 100 * S + S // 2]
    for t in (101 * S, 105 * S, 200 * S):                          # refusing meanwhile: the same transform
        st = k.due(t)
        assert st.stamp_ns == t + S // 2 and (st.parent, st.child) == ("map", "odom")
        np.testing.assert_array_equal(st.T, A)
    second = k.update(B, "map", "odom", image_stamp_ns=200 * S, now_ns=201 * S)
    assert [s.stamp_ns for s in second] == [201 * S + S // 2]      # later ones only post-dated (no older sample
    np.testing.assert_array_equal(k.due(202 * S).T, B)             # interleaved with those already sent)
    # a change of frames (odom appeared) is a first one again
    third = k.update(A, "map", "base_link", image_stamp_ns=300 * S, now_ns=301 * S)
    assert len(third) == 2 and third[1].child == "base_link"
    assert k.updates == 3


def test_one_initialpose_per_request():
    r = OneShotRequests()
    assert not r.take()
    r.request()
    r.request()                 # asked twice before the next pose: one answer
    assert r.take() and not r.take()
    r.request()
    assert r.take()
    assert (r.requested, r.answered) == (3, 2)


def test_missing_base_tf_is_a_warning_then_an_error_naming_the_transform():
    level, msg = base_tf_problem("base_link", "camera_color_optical_frame", 1.0, 5.0)
    assert level == "warn" and "no TF base_link -> camera_color_optical_frame" in msg
    level, msg = base_tf_problem("base_link", "camera_color_optical_frame", 6.0, 5.0)
    assert level == "error" and "no TF base_link -> camera_color_optical_frame" in msg
    assert "allow_camera_pose" in msg


def _msg(kind, stamp_ns, T, frame="map", child=""):
    from relocal_ros.geometry.poses import tq_from_T
    t, q = tq_from_T(T)
    pose = types.SimpleNamespace(position=types.SimpleNamespace(x=t[0], y=t[1], z=t[2]),
                                 orientation=types.SimpleNamespace(x=q[0], y=q[1], z=q[2], w=q[3]))
    header = types.SimpleNamespace(stamp=types.SimpleNamespace(sec=stamp_ns // S, nanosec=stamp_ns % S),
                                   frame_id=frame)
    if kind == "PoseStamped":
        return types.SimpleNamespace(header=header, pose=pose)
    wrapped = types.SimpleNamespace(pose=pose, covariance=[0.0] * 36)
    if kind == "PoseWithCovarianceStamped":
        return types.SimpleNamespace(header=header, pose=wrapped)
    return types.SimpleNamespace(header=header, child_frame_id=child, pose=wrapped)


@pytest.mark.parametrize("kind", ["PoseStamped", "PoseWithCovarianceStamped", "Odometry"])
def test_pose_messages_of_each_type(kind):
    T = yaw(40, (1, 2, 3))
    t, got, frame, child = pose_from_msg(_msg(kind, 7 * S + 5, T, "odom", "base_footprint"), kind)
    assert t == 7 * S + 5 and frame == "odom" and child == ("base_footprint" if kind == "Odometry" else "")
    np.testing.assert_allclose(got, T, atol=1e-12)
    with pytest.raises(ValueError, match="mapping pose type"):
        pose_from_msg(_msg(kind, 0, T), "Twist")


def test_history_interpolates_to_the_image_stamp_and_never_extrapolates():
    h = PoseHistory(max_interval_s=0.5, tolerance_s=0.005)
    h.add(StampedPose(10 * S, yaw(0, (0, 0, 0)), "map", "base_link"))
    h.add(StampedPose(10 * S + S // 5, yaw(20, (1, 0, 0)), "map", "base_link"))   # 5 Hz amcl_pose-like
    p = h.at(10 * S + S // 20)                                                      # a quarter of the way
    dt, dr = pose_error(p.T, yaw(5, (0.25, 0, 0)))
    assert dt < 1e-9 and dr < 1e-4 and p.pose_frame == "base_link"
    assert h.at(10 * S + S // 5 + 3_000_000) is not None      # 3 ms after the newest: within tolerance
    assert h.at(10 * S + S // 5 + 50_000_000) is None         # 50 ms after: not yet known, never extrapolated
    assert h.at(9 * S) is None
    h.add(StampedPose(12 * S, yaw(90, (5, 0, 0)), "map", "base_link"))             # 1.8 s later: a gap
    assert h.at(11 * S) is None                                # too far apart to interpolate (may have turned)
    h.add(StampedPose(3 * S, np.eye(4), "map", "base_link"))                        # clock jumped back: reset
    assert h.clock_resets == 1 and h.at(10 * S) is None and h.at(3 * S) is not None


def test_camera_pose_from_a_base_pose_in_odom_composed_with_tf():
    """nav_msgs/Odometry of base_link in odom, map->odom and base_link->camera from TF: the camera in the map."""
    T_map_odom, T_base_cam = yaw(15, (3, -1, 0)), T_from_tq([0.2, 0, 0.4], [-0.5, 0.5, -0.5, 0.5])
    T_odom_base_true = yaw(33, (1.0, 0.5, 0))
    h = PoseHistory()
    for k, a in ((0, 0.0), (1, 1.0)):   # two odometry samples bracketing the image
        T = interpolate(yaw(30, (0.9, 0.5, 0)), yaw(36, (1.1, 0.5, 0)), a)
        t, T, frame, child = pose_from_msg(_msg("Odometry", 5 * S + k * S // 10, T, "odom", "base_link"),
                                           "Odometry")
        h.add(StampedPose(t, T, frame, child))
    p = h.at(5 * S + S // 20)
    T_map_cam = camera_pose_in_map(p, T_map_odom, T_base_cam)
    dt, dr = pose_error(T_map_cam, T_map_odom @ T_odom_base_true @ T_base_cam)
    assert dt < 1e-9 and dr < 1e-4
    assert camera_pose_in_map(p, None, T_base_cam) is None and camera_pose_in_map(p, T_map_odom, None) is None
    np.testing.assert_allclose(invert(T_map_odom) @ T_map_cam, T_odom_base_true @ T_base_cam, atol=1e-9)
