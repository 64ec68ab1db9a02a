"""The three nodes as ROS 2 lifecycle (managed) nodes: configure loads, activate opens the topics, deactivate
closes them, cleanup frees; twice over without leaking entities or threads, in-process and driven over the
lifecycle services the way nav2_lifecycle_manager drives them (bond off)."""
import subprocess
import sys
import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 PyPI wheels) not installed")
pytest.importorskip("relocal_msgs.msg", reason="relocal_msgs not built: run scripts/build_interfaces.sh .venv")
pytest.importorskip("lifecycle_msgs.msg", reason="lifecycle_msgs not installed")

import planar_scene as ps  # noqa: E402
from relocal_ros.mapping.builder import build_map  # noqa: E402

pytestmark = pytest.mark.ros  # make test-fast leaves these out (pytest.ini)


@pytest.fixture(scope="module")
def plane_map(tmp_path_factory):
    d = tmp_path_factory.mktemp("lifecycle") / "map"
    build_map(ps.map_frames(), {"vocabulary": "map", "vocabulary_words": 16}, progress=False).save(d)
    return d


def _entities(node):
    return {"pub": len(list(node.publishers)), "sub": len(list(node.subscriptions)),
            "timer": len(list(node.timers)), "srv": len(list(node.services))}


def _names(node):
    return {t for t, _ in node.get_topic_names_and_types()}


@pytest.mark.parametrize("which", ["pose_solver", "inference_node", "keyframe_indexer"])
def test_configure_activate_deactivate_cleanup_twice_without_leaks(which, plane_map, own_domain, tmp_path):
    from rclpy.parameter import Parameter

    from relocal_ros.nodes.inference_node import InferenceNode
    from relocal_ros.nodes.keyframe_indexer import KeyframeIndexerNode
    from relocal_ros.nodes.pose_solver_node import PoseSolverNode
    rclpy.init()
    try:
        if which == "pose_solver":
            node = PoseSolverNode()
            active_topics = {"/relocalization/pose", "/initialpose", "/relocalization/evidence"}
        elif which == "inference_node":
            node = InferenceNode(parameter_overrides=[Parameter("map_path", value=str(plane_map)),
                                                      Parameter("image_transport", value="compressed"),
                                                      Parameter("use_depth", value=True)])
            active_topics = {"/relocalization/evidence", "/camera/camera/color/image_raw/compressed",
                             "/camera/camera/aligned_depth_to_color/image_raw/compressedDepth"}
        else:
            node = KeyframeIndexerNode(parameter_overrides=[
                Parameter("map_path", value=str(tmp_path / "new_map")), Parameter("mapping", value=True),
                Parameter("mapping_pose_type", value="Odometry"), Parameter("mapping_pose_topic", value="odom"),
                Parameter("image_transport", value="compressed")])
            active_topics = {"/odom", "/camera/camera/color/image_raw/compressed",
                             "/camera/camera/aligned_depth_to_color/image_raw/compressedDepth"}
        base_entities, base_threads = _entities(node), threading.active_count()
        for cycle in range(2):
            node.trigger_configure()
            assert node._configured, cycle
            if which == "inference_node":
                assert node.engine is not None and len(node.engine.map) > 0   # configure loaded the map
            node.trigger_activate()
            assert node.is_active, cycle
            time.sleep(0.3)
            assert active_topics <= _names(node), (cycle, _names(node))
            node.trigger_deactivate()
            assert not node.is_active and node._entities == []
            node.trigger_cleanup()
            assert not node._configured
            if which == "inference_node":
                assert node.engine is None                                     # cleanup freed it
            time.sleep(0.3)
            assert _entities(node) == base_entities, (cycle, _entities(node), base_entities)
            assert threading.active_count() <= base_threads, (cycle, threading.enumerate())
        node.destroy_node()
    finally:
        rclpy.shutdown()


def _change_state(node, ex, target, transition_id, timeout=30.0):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    cli = node.create_client(ChangeState, f"/{target}/change_state")
    assert cli.wait_for_service(timeout_sec=timeout), f"/{target}/change_state"
    fut = cli.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
    end = time.monotonic() + timeout
    while not fut.done() and time.monotonic() < end:
        ex.spin_once(timeout_sec=0.05)
    node.destroy_client(cli)
    return fut.done() and fut.result().success


def test_lifecycle_services_drive_a_node_started_without_autostart(own_domain, tmp_path):
    """What nav2_lifecycle_manager does (bond_timeout: 0.0): change_state configure, activate, deactivate,
    cleanup, twice; the pose topic exists only while active, and ~/relocalize answers when active again."""
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import GetState
    from rclpy.executors import SingleThreadedExecutor
    from std_srvs.srv import Trigger
    log = open(tmp_path / "solver.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "relocal_ros.nodes.pose_solver_node", "--ros-args",
                             "-p", "autostart:=false"], stdout=log, stderr=subprocess.STDOUT)
    rclpy.init()
    node = rclpy.create_node("lifecycle_manager_probe")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    try:
        def state():
            cli = node.create_client(GetState, "/pose_solver/get_state")
            assert cli.wait_for_service(timeout_sec=60)
            fut = cli.call_async(GetState.Request())
            while not fut.done():
                ex.spin_once(timeout_sec=0.05)
            node.destroy_client(cli)
            return fut.result().current_state.id

        def spin(s):
            end = time.monotonic() + s
            while time.monotonic() < end:
                ex.spin_once(timeout_sec=0.05)

        assert state() == State.PRIMARY_STATE_UNCONFIGURED
        assert node.count_publishers("/relocalization/pose") == 0
        for cycle in range(2):
            assert _change_state(node, ex, "pose_solver", Transition.TRANSITION_CONFIGURE)
            assert state() == State.PRIMARY_STATE_INACTIVE
            assert _change_state(node, ex, "pose_solver", Transition.TRANSITION_ACTIVATE)
            assert state() == State.PRIMARY_STATE_ACTIVE
            spin(1.0)
            assert node.count_publishers("/relocalization/pose") == 1, cycle
            cli = node.create_client(Trigger, "/pose_solver/relocalize")
            assert cli.wait_for_service(timeout_sec=10)
            fut = cli.call_async(Trigger.Request())
            while not fut.done():
                ex.spin_once(timeout_sec=0.05)
            assert fut.result().success
            node.destroy_client(cli)
            assert _change_state(node, ex, "pose_solver", Transition.TRANSITION_DEACTIVATE)
            spin(1.0)
            assert node.count_publishers("/relocalization/pose") == 0, cycle
            assert _change_state(node, ex, "pose_solver", Transition.TRANSITION_CLEANUP)
            assert state() == State.PRIMARY_STATE_UNCONFIGURED
        assert proc.poll() is None
    finally:
        node.destroy_node()
        rclpy.shutdown()
        import signal
        proc.send_signal(signal.SIGINT)     # what ros2 launch and relocal-graph send first
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
            print((tmp_path / "solver.log").read_text()[-3000:])
    assert proc.returncode == 0, proc.returncode


def test_solver_without_odometry_sends_map_to_base_without_waiting_for_it(own_domain):
    """No odom frame anywhere (a camera-only robot, or a bag without odometry): map->base_link is sent at once.
    Before, each accepted pose waited tf_timeout for an odom->base_link that could not come, blocking the solver's
    callback so the next image's evidence waited behind it. The lookups a real TfIO is asked for are recorded."""
    import numpy as np

    from relocal_ros.nodes.pose_solver_node import PoseSolverNode
    rclpy.init()
    try:
        node = PoseSolverNode()
        node.trigger_configure()
        node.trigger_activate()
        asked, sent = [], []
        lookup, send = node.tf.lookup, node.tf.send_ns
        node.tf.lookup = lambda *a: asked.append(a) or lookup(*a)
        node.tf.send_ns = lambda T, parent, child, stamp: sent.append((parent, child)) or send(T, parent, child, stamp)
        node._update_tf(node.tf, np.eye(4), 1_700_000_000_000_000_000)
        assert [a[:2] for a in asked] == [("odom", "base_link")] and asked[0][3] == 0.0, asked
        assert sent and set(sent) == {("map", "base_link")}, sent
        node.trigger_deactivate()
        node.trigger_cleanup()
        node.destroy_node()
    finally:
        rclpy.shutdown()
