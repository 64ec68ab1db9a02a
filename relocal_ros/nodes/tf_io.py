"""Reading and publishing TF from a node: tf2_ros when it is installed (any ROS 2 distro), otherwise the
TransformTree fallback fed from /tf and /tf_static through tf2_msgs (generated into the PyPI virtualenv by
scripts/build_interfaces.sh). Both behind the same three calls."""
from __future__ import annotations

import numpy as np

from relocal_ros.nodes.conversions import T_from_transform_msg, stamp_ns, time_msg, transform_msg_from_T
from relocal_ros.tf_tree import TransformTree

try:
    import tf2_ros  # noqa: F401
    HAVE_TF2_ROS = True
except ImportError:
    HAVE_TF2_ROS = False


def _static_qos():
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    return QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)


class TfIO:
    def __init__(self, node, use_tf2_ros: bool | None = None):
        self.node = node
        self.uses_tf2_ros = HAVE_TF2_ROS if use_tf2_ros is None else (use_tf2_ros and HAVE_TF2_ROS)
        if self.uses_tf2_ros:
            import tf2_ros
            from rclpy.duration import Duration
            self._buffer = tf2_ros.Buffer(cache_time=Duration(seconds=10.0))
            self._listener = tf2_ros.TransformListener(self._buffer, node)
            self._broadcaster = tf2_ros.TransformBroadcaster(node)
            self._static_broadcaster = tf2_ros.StaticTransformBroadcaster(node)
        else:
            from tf2_msgs.msg import TFMessage
            self.tree = TransformTree()
            self._pub = node.create_publisher(TFMessage, "/tf", 100)
            self._static_pub = node.create_publisher(TFMessage, "/tf_static", _static_qos())
            self._static_sent = {}
            node.create_subscription(TFMessage, "/tf", lambda m: self._on_tf(m, False), 100)
            node.create_subscription(TFMessage, "/tf_static", lambda m: self._on_tf(m, True), _static_qos())

    def _on_tf(self, msg, static: bool) -> None:
        for t in msg.transforms:
            self.tree.set_transform(t.header.frame_id, t.child_frame_id, T_from_transform_msg(t.transform),
                                    stamp_ns(t.header.stamp), static)

    def lookup(self, target: str, source: str, t_ns: int) -> np.ndarray | None:
        """T_target_source at t, or None when it is not known (never extrapolated)."""
        if self.uses_tf2_ros:
            from rclpy.time import Time
            try:
                tr = self._buffer.lookup_transform(target, source, Time(nanoseconds=t_ns))
            except Exception:
                return None
            return T_from_transform_msg(tr.transform)
        return self.tree.lookup(target, source, t_ns)

    def clear(self) -> None:
        if self.uses_tf2_ros:
            self._buffer.clear()
        else:
            self.tree.clear()

    def send(self, T_parent_child: np.ndarray, parent: str, child: str, stamp: str, static: bool = False) -> None:
        from geometry_msgs.msg import TransformStamped
        t = TransformStamped()
        t.header.stamp = time_msg(stamp)
        t.header.frame_id = parent
        t.child_frame_id = child
        t.transform = transform_msg_from_T(T_parent_child)
        if self.uses_tf2_ros:
            (self._static_broadcaster.sendTransform if static else self._broadcaster.sendTransform)(t)
            return
        from tf2_msgs.msg import TFMessage
        if static:
            self._static_sent[child] = t  # latched: a late subscriber gets every static transform
            self._static_pub.publish(TFMessage(transforms=list(self._static_sent.values())))
        else:
            self._pub.publish(TFMessage(transforms=[t]))
        self._on_tf(TFMessage(transforms=[t]), static)
