"""What the live-graph tests share: the planar scene's query frames, a test-side ROS node (Probe) that publishes
raw inputs and records poses and /diagnostics, and a colour-image message builder. Imported by the tests; not a
test module itself."""
import time

import numpy as np

import planar_scene as ps


def query_frames(n=8):
    rng = np.random.default_rng(3)
    poses = [ps.pose(rng.uniform(-0.3, 0.3), rng.uniform(-0.15, 0.15), rng.uniform(-8, 8), rng.uniform(-4, 4),
                     rng.uniform(-0.1, 0.15)) for _ in range(n)]
    return [ps.frame(T, f"{200 + i}.{i * 25:06d}") for i, T in enumerate(poses)]


class Probe:
    """A test-side node: publishes raw inputs, records poses and /diagnostics."""

    def __init__(self):
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from sensor_msgs.msg import CameraInfo, Image
        from rclpy.executors import SingleThreadedExecutor
        import rclpy
        rclpy.init()
        self.node = rclpy.create_node("graph_probe")
        self.ex = SingleThreadedExecutor()
        self.ex.add_node(self.node)
        self.poses, self.diag = [], {}
        self.node.create_subscription(PoseWithCovarianceStamped, "relocalization/pose", self.poses.append, 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)
        self.img = self.node.create_publisher(Image, "/camera/camera/color/image_raw", 10)
        self.info = self.node.create_publisher(CameraInfo, "/camera/camera/color/camera_info", 10)

    def _on_diag(self, msg):
        for st in msg.status:
            self.diag[st.name] = ({kv.key: kv.value for kv in st.values}, st.message)

    def spin(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.ex.spin_once(timeout_sec=0.05)

    def wait_for_graph(self, timeout=90):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.node.count_subscribers("/camera/camera/color/image_raw") and \
                    self.node.count_publishers("relocalization/pose"):
                self.spin(1.0)
                return
            self.spin(0.2)
        raise TimeoutError("graph did not come up")

    def inference_diag(self):
        return next((v for k, v in self.diag.items() if k.startswith("inference_node")), ({}, ""))

    def inference_count(self, key):
        return int(self.inference_diag()[0].get(key, 0))

    def close(self):
        import rclpy
        self.node.destroy_node()
        rclpy.shutdown()


def image_msg(frame, encoding="rgb8", stamp=(300, 0)):
    from relocal_ros.data.images import numpy_to_image_msg
    msg = numpy_to_image_msg(frame.rgb, "rgb8")
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = "camera_color_optical_frame"
    msg.encoding = encoding
    return msg
