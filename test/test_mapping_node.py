"""The keyframe indexer in mapping mode, as a real process: frames + mapping poses in over DDS, keyframes selected
and indexed online, the map saved atomically on request and announced to the inference side."""
import os
import random
import subprocess
import sys
import time

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 PyPI wheels) not installed")
pytest.importorskip("relocal_msgs.msg", reason="relocal_msgs not built: run scripts/build_interfaces.sh .venv")

import planar_scene as ps  # noqa: E402
from relocal_ros.mapping.keyframe_map import KeyframeMap  # noqa: E402

pytestmark = pytest.mark.ros  # make test-fast leaves these out (pytest.ini)


def test_online_mapping_then_save_and_announce(tmp_path):
    from geometry_msgs.msg import PoseStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from relocal_ros.data.images import numpy_to_image_msg
    from relocal_ros.nodes.conversions import camera_info_msg, pose_msg_from_T, time_msg

    env = {**os.environ, "ROS_DOMAIN_ID": str(random.randint(20, 200)), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    map_dir = tmp_path / "map"
    log = open(tmp_path / "indexer.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "relocal_ros.nodes.keyframe_indexer", "--ros-args",
                             "-p", f"map_path:={map_dir}", "-p", "mapping:=true", "-p", "bootstrap_keyframes:=4",
                             "-p", "reliable_images:=true", "-p", "autosave_keyframes:=0"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    os.environ["ROS_DOMAIN_ID"], saved = env["ROS_DOMAIN_ID"], os.environ.get("ROS_DOMAIN_ID")
    rclpy.init()
    try:
        node = rclpy.create_node("mapping_probe")
        ex = SingleThreadedExecutor()
        ex.add_node(node)
        pubs = {"color": node.create_publisher(Image, "/camera/camera/color/image_raw", 10),
                "depth": node.create_publisher(Image, "/camera/camera/aligned_depth_to_color/image_raw", 10),
                "info": node.create_publisher(CameraInfo, "/camera/camera/color/camera_info", 10),
                "pose": node.create_publisher(PoseStamped, "mapping/pose", 10)}
        announced, keyframes = [], {"n": 0}
        from diagnostic_msgs.msg import DiagnosticArray

        def on_diag(msg):
            for st in msg.status:
                for kv in st.values:
                    if st.name.startswith("keyframe_indexer") and kv.key == "keyframes":
                        keyframes["n"] = int(kv.value)
        node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(String, "relocalization/map_updated", announced.append, latched)
        save = node.create_client(Trigger, "/keyframe_indexer/save_map")

        def spin(seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                ex.spin_once(timeout_sec=0.05)

        deadline = time.monotonic() + 60
        while node.count_subscribers("mapping/pose") == 0 and time.monotonic() < deadline:
            spin(0.2)
        assert node.count_subscribers("mapping/pose") > 0, "indexer did not come up"
        spin(1.0)
        frames = ps.map_frames()
        for i, f in enumerate(frames):
            stamp = f"{500 + i}.000000"
            header_t = time_msg(stamp)
            rgb = numpy_to_image_msg(f.rgb, "rgb8")
            depth = numpy_to_image_msg((f.depth * 1000).astype("uint16"), "16UC1")
            info = camera_info_msg(f.intrinsics)
            for m in (rgb, depth, info):
                m.header.stamp, m.header.frame_id = header_t, "camera_color_optical_frame"
            pose = PoseStamped()
            pose.header.stamp, pose.header.frame_id = header_t, "map"
            pose.pose = pose_msg_from_T(f.pose)
            pubs["info"].publish(info)
            pubs["pose"].publish(pose)
            pubs["depth"].publish(depth)
            pubs["color"].publish(rgb)
            # a busy indexer keeps only the newest frame: feed the next one once this one is in the map
            end = time.monotonic() + 30
            while keyframes["n"] < i + 1 and time.monotonic() < end:
                spin(0.1)
        assert save.wait_for_service(timeout_sec=10)
        fut = save.call_async(Trigger.Request())
        end = time.monotonic() + 60
        while not fut.done() and time.monotonic() < end:
            spin(0.1)
        assert fut.done() and fut.result().success, fut.result()
        spin(1.0)
        kmap = KeyframeMap.load(map_dir)
        assert len(kmap) == len(frames) and kmap.version
        assert {kf.stamp for kf in kmap.keyframes} == {f"{500 + i}.000000" for i in range(len(frames))}
        assert announced and announced[-1].data == f"{map_dir}\n{kmap.version}"
        assert proc.poll() is None
        node.destroy_node()
    finally:
        rclpy.shutdown()
        if saved is None:
            os.environ.pop("ROS_DOMAIN_ID", None)
        else:
            os.environ["ROS_DOMAIN_ID"] = saved
        proc.terminate()
        proc.wait(10)
        print((tmp_path / "indexer.log").read_text()[-3000:])
