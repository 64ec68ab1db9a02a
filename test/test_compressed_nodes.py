"""The live graph with `image_transport: compressed`: the inference node subscribes to image_transport's
`…/image_raw/compressed` (JPEG) and `…/compressedDepth` (PNG behind the 12-byte header), decodes them, and the
solver publishes the right pose; a truncated JPEG is refused and counted, nothing crashes."""
import array
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 PyPI wheels) not installed")
pytest.importorskip("relocal_msgs.msg", reason="relocal_msgs not built: run scripts/build_interfaces.sh .venv")

import planar_scene as ps  # noqa: E402
from relocal_ros.data import images as im  # noqa: E402
from relocal_ros.geometry.poses import pose_error  # noqa: E402
from relocal_ros.mapping.builder import build_map  # noqa: E402
from relocal_ros.nodes.conversions import T_from_pose_msg, camera_info_msg  # noqa: E402
from relocal_ros.nodes.runner import GraphProcesses  # noqa: E402
from graph_probe import query_frames  # noqa: E402

pytestmark = pytest.mark.ros  # make test-fast leaves these out (pytest.ini)

COLOR = "/camera/camera/color/image_raw/compressed"
DEPTH = "/camera/camera/aligned_depth_to_color/image_raw/compressedDepth"
OPTICAL = "camera_color_optical_frame"


@pytest.fixture(scope="module")
def graph(module_domain, tmp_path_factory):
    d = tmp_path_factory.mktemp("compressed_graph")
    build_map(ps.map_frames(), {"vocabulary": "map", "vocabulary_words": 16}, progress=False).save(d / "map")
    # the camera is the base here (base_frame = the optical frame): no mounting transform needed
    g = GraphProcesses(str(d / "map"), log_dir=d, extra=[
        "-p", "inference_node:image_transport:=compressed", "-p", "inference_node:use_depth:=true",
        "-p", "inference_node:reliable_images:=true", "-p", f"pose_solver:base_frame:={OPTICAL}"]).start()
    yield g
    g.stop()
    for f in d.glob("*.log"):
        print(f"---- {f.name}\n{f.read_text()[-3000:]}")


def test_jpeg_and_compressed_depth_are_localized_and_bad_jpeg_refused(graph):
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, CompressedImage
    rclpy.init()
    node = rclpy.create_node("compressed_probe")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    poses, diag = [], {}

    def on_diag(msg):
        for st in msg.status:
            diag[st.name.split(":")[0]] = {kv.key: kv.value for kv in st.values}
    pose_qos = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(PoseWithCovarianceStamped, "relocalization/pose", poses.append, pose_qos)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)
    color = node.create_publisher(CompressedImage, COLOR, 10)
    depth = node.create_publisher(CompressedImage, DEPTH, 10)
    info = node.create_publisher(CameraInfo, "/camera/camera/color/camera_info", 10)

    def spin(s):
        end = time.monotonic() + s
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.05)

    def send(f, sec, jpeg=None):
        fmt, data = im.compress_rgb(f.rgb, "jpeg", 95)
        dfmt, ddata = im.compress_depth_mm((f.depth * 1000).astype(np.uint16))
        c = CompressedImage(format=fmt, data=array.array("B", jpeg if jpeg is not None else data))
        d = CompressedImage(format=dfmt, data=array.array("B", ddata))
        i = camera_info_msg(f.intrinsics)
        for m in (c, d, i):
            m.header.stamp.sec, m.header.frame_id = sec, OPTICAL
        info.publish(i)
        spin(0.2)
        depth.publish(d)
        spin(0.05)
        color.publish(c)

    try:
        end = time.monotonic() + 90
        while time.monotonic() < end and not (node.count_subscribers(COLOR) and node.count_subscribers(DEPTH)
                                              and node.count_publishers("relocalization/pose")):
            spin(0.2)
        assert node.count_subscribers(COLOR) and node.count_subscribers(DEPTH), "no compressed subscription"
        assert node.count_subscribers("/camera/camera/color/image_raw") == 0   # raw topics are not subscribed
        spin(1.0)
        frames = query_frames(3)
        for k, f in enumerate(frames):
            n = len(poses)
            send(f, 700 + k)
            end = time.monotonic() + 30
            while len(poses) == n and time.monotonic() < end:
                spin(0.1)
            assert len(poses) == n + 1, f"no pose for compressed frame {k}"
            dt, dr = pose_error(T_from_pose_msg(poses[-1].pose.pose), f.pose)
            assert dt < 0.03 and dr < 1.0, (k, dt, dr)
        fmt, data = im.compress_rgb(frames[0].rgb, "jpeg")
        n = len(poses)
        send(frames[0], 800, jpeg=data[: len(data) // 4])     # a truncated JPEG (a lost packet's worth)
        spin(3.0)
        assert len(poses) == n
        inference = diag.get("inference_node", {})
        assert int(inference.get("bad_input", 0)) >= 1, inference
        assert all(graph.alive().values())
    finally:
        node.destroy_node()
        rclpy.shutdown()
