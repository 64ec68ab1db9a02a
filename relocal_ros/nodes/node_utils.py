"""What the three nodes share: validated parameters, QoS profiles, /diagnostics, throttled logging."""
from __future__ import annotations

import time

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

SENSOR_QOS = qos_profile_sensor_data
LATCHED_QOS = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
RELIABLE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# Reliable image subscription for publishers that are reliable (bag replay, most drivers' default): large images
# sent best-effort lose fragments under CPU load; depth 2 keeps the newest without queueing.
RELIABLE_IMAGE_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)


def image_qos(reliable: bool) -> QoSProfile:
    """Best effort (sensor data) matches any publisher; reliable only matches reliable publishers."""
    return RELIABLE_IMAGE_QOS if reliable else SENSOR_QOS


def declare(node, name: str, default, description: str, lo=None, hi=None):
    """Declare a parameter with its description and, for numbers, its valid range: rclpy then rejects an
    out-of-range value from a params file or `-p` at start-up, and at run time, with a message naming the range."""
    desc = ParameterDescriptor(description=description)
    if lo is not None and isinstance(default, bool) is False and isinstance(default, float):
        desc.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    elif lo is not None and isinstance(default, int) and not isinstance(default, bool):
        desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
    return node.declare_parameter(name, default, desc).value


class Diagnostics:
    """Counters and last reasons published on /diagnostics once per second."""

    def __init__(self, node, name: str, period_s: float = 1.0):
        from diagnostic_msgs.msg import DiagnosticArray
        self.node, self.name = node, name
        self.counts: dict[str, int] = {}
        self.values: dict[str, str] = {}
        self.problem = ""
        self._pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        node.create_timer(period_s, self.publish)

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def publish(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
        st = DiagnosticStatus(name=f"{self.node.get_name()}: {self.name}", hardware_id="relocal_ros")
        st.level = DiagnosticStatus.WARN if self.problem else DiagnosticStatus.OK
        st.message = self.problem or "ok"
        st.values = [KeyValue(key=k, value=str(v)) for k, v in sorted(self.counts.items())] + \
                    [KeyValue(key=k, value=v) for k, v in sorted(self.values.items())]
        arr = DiagnosticArray(status=[st])
        arr.header.stamp = self.node.get_clock().now().to_msg()
        self._pub.publish(arr)


class Throttle:
    """Log a recurring problem at most once per period, with how many times it happened meanwhile."""

    def __init__(self, period_s: float = 5.0):
        self.period_s = period_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, logger, level: str, key: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self.period_s:
            n = self._suppressed.pop(key, 0)
            message += f" (and {n} more since last report)" if n else ""
            # one call site per severity: rclpy refuses a severity change at the same call site
            if level == "error":
                logger.error(message)
            elif level == "warning":
                logger.warning(message)
            else:
                logger.info(message)
            self._last[key] = now
        else:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1


class LatestFrameWorker:
    """A thread that processes the newest complete frame of a FrameSynchronizer whenever woken: the callbacks
    stay fast, a slow consumer skips stale frames, and an exception costs one frame, never the node."""

    def __init__(self, node, sync, process, diag, what: str = "image"):
        import threading
        self.node, self.sync, self.process, self.diag, self.what = node, sync, process, diag, what
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(timeout=0.5)
            self._wake.clear()
            frame = self.sync.pop_latest()
            self.diag.counts["frames_dropped"] = self.sync.dropped
            self.diag.counts["clock_resets"] = self.sync.clock_resets
            self.diag.counts["stale_or_duplicate_stamps"] = self.sync.stale
            if frame is None:
                continue
            try:
                self.process(frame)
            except Exception as e:
                self.node.get_logger().error(f"internal error on one {self.what} (skipped): {type(e).__name__}: {e}")
                self.diag.count("internal_errors")


def run_node(node_cls, args=None) -> None:
    """Spin one node until shutdown (Ctrl-C or SIGTERM) with a multi-threaded executor."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
    rclpy.init(args=args)
    node = None
    try:
        node = node_cls()
        ex = MultiThreadedExecutor(num_threads=3)
        ex.add_node(node)
        ex.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
