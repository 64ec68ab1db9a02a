"""Reading and publishing TF from a node: tf2_ros when it is installed (any ROS 2 distro), otherwise the
TransformTree fallback fed from /tf and /tf_static through tf2_msgs (generated into the PyPI virtualenv by
scripts/build_interfaces.sh). Both behind the same calls.

Both listen on a node and thread of their own (tf2_ros: TransformListener(spin_thread=True)): /tf arrives at
odometry rate (30-100 Hz) and, sharing the node's executor with the image and evidence callbacks on a loaded
CPU, fell seconds behind in the soak run, so lookups at an image's time failed although the data had been sent.
`lookup(..., timeout_s)` waits briefly for a transform newer than what has arrived, as tf2's lookup with a
timeout does, but never for one that can no longer come. The fallback listener ignores the dynamic transforms this
TfIO sends itself (the solver's post-dated map->odom): they are never looked up here, and their "now" stamps
next to image stamps of a replayed bag would look like clock jumps to the history."""
from __future__ import annotations

import threading
import time

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


def _dynamic_qos():
    # best effort (matches reliable publishers too): a reliable reader holds every later sample back until a lost
    # one is repaired, which under load delayed /tf by 1-3 s here; a lost odometry sample is just interpolated over
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    return QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)


class TfIO:
    def __init__(self, node, use_tf2_ros: bool | None = None):
        self.node = node
        self.uses_tf2_ros = HAVE_TF2_ROS if use_tf2_ros is None else (use_tf2_ros and HAVE_TF2_ROS)
        self.received = 0
        self.clock_resets = 0
        self._listener_node = None
        self._own_edges: set[tuple[str, str]] = set()
        if self.uses_tf2_ros:
            import tf2_ros
            from rclpy.duration import Duration
            self._buffer = tf2_ros.Buffer(cache_time=Duration(seconds=10.0))
            self._listener = tf2_ros.TransformListener(self._buffer, node, spin_thread=True, qos=_dynamic_qos())
            self._broadcaster = tf2_ros.TransformBroadcaster(node)
            self._static_broadcaster = tf2_ros.StaticTransformBroadcaster(node)
            return
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from tf2_msgs.msg import TFMessage
        self.tree = TransformTree()
        self._pub = node.create_publisher(TFMessage, "/tf", 100)
        self._static_pub = node.create_publisher(TFMessage, "/tf_static", _static_qos())
        self._static_sent = {}
        listener = rclpy.create_node(f"{node.get_name()}_tf_listener", namespace=node.get_namespace(),
                                     context=node.context, start_parameter_services=False)
        listener.create_subscription(TFMessage, "/tf", lambda m: self._on_tf(m, False), _dynamic_qos())
        listener.create_subscription(TFMessage, "/tf_static", lambda m: self._on_tf(m, True), _static_qos())
        self._listener_node = listener
        self._executor = SingleThreadedExecutor(context=node.context)
        self._executor.add_node(listener)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name="tf_listener", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.node.context.ok():
            try:
                self._executor.spin_once(timeout_sec=0.1)
            except Exception:  # context shut down under us: the node is going away
                return

    def _on_tf(self, msg, static: bool) -> None:
        self.received += 1
        for t in msg.transforms:
            if not static and (t.header.frame_id, t.child_frame_id) in self._own_edges:
                continue
            self.tree.set_transform(t.header.frame_id, t.child_frame_id, T_from_transform_msg(t.transform),
                                    stamp_ns(t.header.stamp), static)

    def lookup(self, target: str, source: str, t_ns: int, timeout_s: float = 0.0) -> np.ndarray | None:
        """T_target_source at t, or None when it is not known (never extrapolated). With timeout_s, wait up to
        that long while the transform may still arrive (t newer than the newest sample received)."""
        if self.uses_tf2_ros:
            from rclpy.duration import Duration
            from rclpy.time import Time
            try:
                tr = self._buffer.lookup_transform(target, source, Time(nanoseconds=t_ns),
                                                   timeout=Duration(seconds=timeout_s))
            except Exception:
                return None
            return T_from_transform_msg(tr.transform)
        deadline = time.monotonic() + timeout_s
        while True:
            T = self.tree.lookup(target, source, t_ns)
            if T is not None or time.monotonic() >= deadline or not self.tree.may_still_arrive(t_ns):
                return T
            time.sleep(0.005)

    def note_stamp(self, t_ns: int, jump_s: float = 1.0) -> None:
        """Called with each image's stamp. The fallback tree forgets its history itself when TF jumps back in
        time; tf2's buffer keeps up to 10 s, so a bag loop would interleave two loops' transforms there: clear it."""
        newest = getattr(self, "_newest_ns", None)
        if newest is not None and t_ns < newest - int(jump_s * 1e9):
            self.clock_resets += 1
            if self.uses_tf2_ros:
                self._buffer.clear()
            self._newest_ns = t_ns
        self._newest_ns = t_ns if newest is None else max(newest, t_ns)

    @property
    def tf_clock_resets(self) -> int:
        return self.clock_resets if self.uses_tf2_ros else self.tree.clock_resets

    def frame_known(self, frame: str) -> bool:
        if self.uses_tf2_ros:
            return self._buffer._frameExists(frame)
        return self.tree.has_frame(frame)

    def clear(self) -> None:
        if self.uses_tf2_ros:
            self._buffer.clear()
        else:
            self.tree.clear()

    def send(self, T_parent_child: np.ndarray, parent: str, child: str, stamp: str, static: bool = False) -> None:
        self._send(T_parent_child, parent, child, time_msg(stamp), static)

    def send_ns(self, T_parent_child: np.ndarray, parent: str, child: str, stamp_ns: int) -> None:
        """A dynamic transform stamped stamp_ns (e.g. now + transform_tolerance)."""
        from builtin_interfaces.msg import Time
        self._send(T_parent_child, parent, child, Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000),
                   False)

    def _send(self, T_parent_child: np.ndarray, parent: str, child: str, stamp_msg, static: bool) -> None:
        from geometry_msgs.msg import TransformStamped
        if not static:
            self._own_edges.add((parent, child))
        t = TransformStamped()
        t.header.stamp = stamp_msg
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
        if static:
            self._on_tf(TFMessage(transforms=[t]), static)

    def close(self) -> None:
        if self.uses_tf2_ros:
            for h in ("_listener", "_broadcaster", "_static_broadcaster"):
                obj = getattr(self, h, None)
                if obj is not None and hasattr(obj, "unregister"):
                    obj.unregister()
            return
        if self._listener_node is not None:
            self.node.destroy_publisher(self._pub)
            self.node.destroy_publisher(self._static_pub)
            self._stop.set()
            self._thread.join(timeout=2.0)
            self._executor.shutdown(timeout_sec=1.0)
            self._listener_node.destroy_node()
            self._listener_node = None
