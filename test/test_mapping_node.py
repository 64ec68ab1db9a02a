"""The keyframe indexer in mapping mode, as a real process: frames + mapping poses in over DDS, keyframes selected
and indexed online, the map saved atomically on request and announced to the inference side."""
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 PyPI wheels) not installed")
pytest.importorskip("relocal_msgs.msg", reason="relocal_msgs not built: run scripts/build_interfaces.sh .venv")

import planar_scene as ps  # noqa: E402
from mapping_harness import mapping_indexer  # noqa: E402
from relocal_ros.mapping.keyframe_map import KeyframeMap  # noqa: E402

pytestmark = pytest.mark.ros  # make test-fast leaves these out (pytest.ini)


def test_online_mapping_then_save_and_announce(tmp_path):
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import String

    from relocal_ros.data.images import numpy_to_image_msg
    from relocal_ros.nodes.conversions import camera_info_msg, pose_msg_from_T, time_msg

    with mapping_indexer(tmp_path, "mapping_probe") as probe:
        node, map_dir = probe.node, probe.map_dir
        pubs = {"color": node.create_publisher(Image, "/camera/camera/color/image_raw", 10),
                "depth": node.create_publisher(Image, "/camera/camera/aligned_depth_to_color/image_raw", 10),
                "info": node.create_publisher(CameraInfo, "/camera/camera/color/camera_info", 10),
                "pose": node.create_publisher(PoseStamped, "mapping/pose", 10)}
        announced = []
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(String, "relocalization/map_updated", announced.append, latched)

        probe.wait_for_indexer("mapping/pose")
        probe.spin(1.0)
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
            probe.wait_for_keyframes(i + 1)
        probe.save_map()
        probe.spin(1.0)
        kmap = KeyframeMap.load(map_dir)
        assert len(kmap) == len(frames) and kmap.version
        assert {kf.stamp for kf in kmap.keyframes} == {f"{500 + i}.000000" for i in range(len(frames))}
        assert announced and announced[-1].data == f"{map_dir}\n{kmap.version}"
        assert probe.proc.poll() is None
