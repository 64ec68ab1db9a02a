"""The pairing and transform-history rules the nodes rely on, without ROS."""
import numpy as np
import pytest

from relocal_ros.frame_sync import FrameSynchronizer
from relocal_ros.geometry.poses import T_from_tq, make_T, pose_error
from relocal_ros.tf_tree import TransformTree

S = 1_000_000_000


def test_newest_complete_frame_wins_and_stale_ones_are_counted():
    sync = FrameSynchronizer(use_depth=True, max_dt_s=0.02)
    assert sync.pop_latest() is None
    for i in range(5):
        sync.add_color(i * S // 10, f"c{i}")
        sync.add_depth(i * S // 10 + 5_000_000, f"d{i}")   # 5 ms later: pairs
    assert sync.pop_latest() is None                          # no camera_info yet: nothing can be localized
    sync.set_camera_info("info")
    f = sync.pop_latest()
    assert (f.color, f.depth, f.camera_info) == ("c4", "d4", "info")
    assert sync.dropped == 4 and sync.pop_latest() is None


def test_colour_without_matching_depth_waits_and_is_bounded():
    sync = FrameSynchronizer(use_depth=True, max_dt_s=0.02, max_pending=3)
    sync.set_camera_info("info")
    for i in range(10):
        sync.add_color(i * S, f"c{i}")
        sync.add_depth(i * S + 50_000_000, "late")              # 50 ms away: never pairs
    assert sync.pop_latest() is None
    assert sync.dropped == 7                                   # only max_pending colour images are kept


def test_optional_depth_waits_while_depth_flows_and_goes_on_without_it():
    """The inference node's rule (depth_optional_after_s): a camera without aligned depth still gets answers; while
    depth arrives each colour image waits for its own; when depth stops, colour goes on alone after the grace."""
    sync = FrameSynchronizer(use_depth=True, max_dt_s=0.02, depth_optional_after_s=1.0)
    sync.set_camera_info("info")
    sync.add_color(0, "c0")                                      # no depth stream (yet): colour alone
    f = sync.pop_latest()
    assert f.color == "c0" and f.depth is None and sync.colour_only == 1
    sync.add_depth(S // 10, "d1")
    sync.add_color(2 * S // 10, "c2")                            # depth flows: c2 waits for its own depth image
    assert sync.pop_latest() is None
    sync.add_depth(2 * S // 10, "d2")
    f = sync.pop_latest()
    assert (f.color, f.depth) == ("c2", "d2") and sync.colour_only == 1
    sync.add_color(S, "c10")                                     # 0.8 s after the last depth: still waits
    assert sync.pop_latest() is None
    sync.add_color(13 * S // 10, "c13")                          # 1.1 s: the depth stream stopped, colour goes on
    f = sync.pop_latest()
    assert (f.color, f.depth) == ("c13", None) and sync.colour_only == 2 and sync.dropped == 1
    strict = FrameSynchronizer(use_depth=True)                   # mapping: every colour image needs its depth
    strict.set_camera_info("info")
    strict.add_color(5 * S, "c")
    assert strict.pop_latest() is None


def test_clock_jump_backwards_clears_pending_frames():
    sync = FrameSynchronizer(use_depth=True)
    sync.set_camera_info("info")
    sync.add_color(100 * S, "old")
    sync.add_depth(100 * S, "old-depth")
    sync.add_color(5 * S, "new")            # bag loop: time restarts
    sync.add_depth(5 * S, "new-depth")
    f = sync.pop_latest()
    assert (f.color, f.depth) == ("new", "new-depth") and sync.clock_resets == 1


def test_transform_tree_interpolates_chains_and_refuses_extrapolation():
    tree = TransformTree(tolerance_s=0.05)
    T_base_cam = T_from_tq([0.1, 0, 0.5], [-0.5, 0.5, -0.5, 0.5])
    tree.set_transform("base_link", "camera", T_base_cam, 0, static=True)
    tree.set_transform("odom", "base_link", make_T(np.eye(3), [0, 0, 0]), 10 * S)
    tree.set_transform("odom", "base_link", T_from_tq([1, 0, 0], [0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)]), 11 * S)
    mid = tree.lookup("odom", "base_link", int(10.5 * S))
    assert np.allclose(mid[:3, 3], [0.5, 0, 0]) and pose_error(mid, np.eye(4))[1] == pytest.approx(45.0)
    chain = tree.lookup("odom", "camera", int(10.5 * S))
    assert np.allclose(chain, mid @ T_base_cam)
    assert np.allclose(tree.lookup("camera", "odom", int(10.5 * S)), np.linalg.inv(chain))
    assert tree.lookup("odom", "base_link", 12 * S) is None       # 1 s past the last sample
    assert tree.lookup("odom", "base_link", int(11.03 * S)) is not None  # within tolerance
    assert tree.lookup("map", "base_link", 10 * S) is None         # not connected


def test_transform_tree_forgets_history_on_clock_jump():
    tree = TransformTree()
    tree.set_transform("odom", "base_link", np.eye(4), 100 * S)
    tree.set_transform("odom", "base_link", np.eye(4), 3 * S)       # sim time reset
    assert tree.clock_resets == 1
    assert tree.lookup("odom", "base_link", 100 * S) is None
    assert tree.lookup("odom", "base_link", 3 * S) is not None


def test_duplicated_and_out_of_order_images_are_counted_not_handed_out():
    s = FrameSynchronizer(use_depth=False)
    s.set_camera_info("info")
    assert s.add_color(2_000_000_000, "b")
    assert s.pop_latest().color == "b"
    assert not s.add_color(2_000_000_000, "b again")      # duplicate
    assert not s.add_color(1_900_000_000, "older")        # out of order, 0.1 s back: not a clock jump
    assert s.pop_latest() is None and s.stale == 2
    assert s.add_color(2_100_000_000, "c") and s.pop_latest().color == "c"
    assert s.add_color(100_000_000, "after a bag loop")   # 2 s back: a clock jump, accepted afresh
    assert s.pop_latest().color == "after a bag loop" and s.clock_resets == 1
