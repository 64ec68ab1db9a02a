"""What the three nodes share: the lifecycle base, validated parameters, QoS profiles, /diagnostics, throttled
logging."""
from __future__ import annotations

import time

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

SENSOR_QOS = qos_profile_sensor_data
LATCHED_QOS = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
RELIABLE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# like amcl_pose: a late subscriber (a restarted EKF, an operator's RViz) gets the last pose at once
POSE_QOS = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
# Reliable image subscription for publishers that are reliable (bag replay, most drivers' default): large images
# sent best-effort lose fragments under CPU load; depth 2 keeps the newest without queueing.
RELIABLE_IMAGE_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)


def image_qos(reliable: bool) -> QoSProfile:
    """Best effort (sensor data) matches any publisher; reliable only matches reliable publishers."""
    return RELIABLE_IMAGE_QOS if reliable else SENSOR_QOS


def declare_settings(node, node_name: str) -> dict:
    """Declare every parameter that relocal_ros/settings.py gives this node (default, description, range), check
    the choices (an unknown value stops the node at start, naming the choices), and set each as an attribute of
    the node. Returns {name: value}."""
    from relocal_ros.settings import node_settings
    values = {}
    for s in node_settings(node_name):
        choices = " | ".join(repr(c) if c == "" else c for c in s.choices or ())
        description = s.description + (f" ({choices})" if choices else "")
        lo, hi = s.range if s.range else (None, None)
        value = declare(node, s.name, s.ros_default, description, lo, hi)
        s.check(value)
        if hasattr(node, s.name):  # a setting must never shadow an rclpy Node attribute
            raise RuntimeError(f"parameter {s.name!r} collides with an attribute of {type(node).__name__}")
        setattr(node, s.name, value)
        values[s.name] = value
    if "reliable_images" in values:
        node.qos = image_qos(values["reliable_images"])
    return values


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
        self.error = ""   # an ERROR-level problem (e.g. a missing transform that blocks every pose); wins over problem
        self._pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._timer = node.create_timer(period_s, self.publish)

    def close(self) -> None:
        self.node.destroy_timer(self._timer)
        self.node.destroy_publisher(self._pub)

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def publish(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
        st = DiagnosticStatus(name=f"{self.node.get_name()}: {self.name}", hardware_id="relocal_ros")
        st.level = DiagnosticStatus.ERROR if self.error else DiagnosticStatus.WARN if self.problem else \
            DiagnosticStatus.OK
        st.message = self.error or self.problem or "ok"
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
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(timeout=0.5)
            self._wake.clear()
            frame = self.sync.pop_latest()
            self.diag.counts["frames_dropped"] = self.sync.dropped
            self.diag.counts["clock_resets"] = self.sync.clock_resets
            self.diag.counts["stale_or_duplicate_stamps"] = self.sync.stale
            if self.sync.use_depth:
                self.diag.counts["colour_only_no_depth_stream"] = self.sync.colour_only
            if frame is None:
                continue
            try:
                self.process(frame)
            except Exception as e:
                self.node.get_logger().error(f"internal error on one {self.what} (skipped): {type(e).__name__}: {e}")
                self.diag.count("internal_errors")


class ManagedNode(LifecycleNode):
    """A ROS 2 managed (lifecycle) node: parameters are declared and checked in the constructor (an absurd value
    stops the process at start), `configure()` loads what is heavy (map, models), `activate()` opens the topics,
    services and timers, `deactivate()` closes them, `cleanup()` frees what configure loaded. Subclasses implement
    those four; exceptions there fail the transition with the reason logged. Lifecycle services (~/change_state,
    ~/get_state) are those of rclpy, so nav2_lifecycle_manager can drive the node (with bond_timeout: 0.0: no
    bond is offered). With the parameter `autostart` (default true) run_node configures and activates it itself."""

    # run_node's executor: threads for callbacks that may block (a map save, a wait for a mapping pose). Nodes whose
    # callbacks are short set 1: rclpy's MultiThreadedExecutor picked up the solver's evidence up to 330 ms (p95)
    # after the message had arrived (docs/measurements.md, "The executor was the rest of it"); the single-threaded
    # one within 1.4 ms
    executor_threads: int = 3

    def __init__(self, name: str, **kwargs):
        super().__init__(name, **kwargs)
        # every parameter of this node, autostart included, from relocal_ros/settings.py, as attributes
        self.params = declare_settings(self, name)
        self._entities: list = []   # (kind, handle) opened by activate(), destroyed by deactivate()
        self._configured = self._active = False

    # the four transitions subclasses implement
    def configure(self) -> None: ...
    def activate(self) -> None: ...
    def deactivate(self) -> None: ...
    def cleanup(self) -> None: ...

    # helpers: what activate() opens through these is closed by close_active()
    def open_subscription(self, *args, **kwargs):
        sub = self.create_subscription(*args, **kwargs)
        self._entities.append(("sub", sub))
        return sub

    def open_publisher(self, *args, **kwargs):
        pub = self.create_publisher(*args, **kwargs)
        self._entities.append(("pub", pub))
        return pub

    def open_service(self, *args, **kwargs):
        srv = self.create_service(*args, **kwargs)
        self._entities.append(("srv", srv))
        return srv

    def open_timer(self, *args, **kwargs):
        t = self.create_timer(*args, **kwargs)
        self._entities.append(("timer", t))
        return t

    def close_active(self) -> None:
        destroy = {"sub": self.destroy_subscription, "pub": self.destroy_publisher, "srv": self.destroy_service,
                   "timer": self.destroy_timer}
        while self._entities:
            kind, h = self._entities.pop()
            destroy[kind](h)

    def _transition(self, what: str, fn):
        try:
            fn()
        except Exception as e:
            self.get_logger().error(f"{what} failed: {type(e).__name__}: {e}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def _do_configure(self):
        self.configure()
        self._configured = True

    def _do_activate(self):
        try:
            self.activate()
        except BaseException:
            self.close_active()
            raise
        self._active = True

    def _do_deactivate(self):
        if self._active:
            self._active = False
            try:
                self.deactivate()
            finally:
                self.close_active()

    def _do_cleanup(self):
        if self._configured:
            self._configured = False
            self.cleanup()

    def on_configure(self, state):
        return self._transition("configure", self._do_configure)

    def on_activate(self, state):
        return self._transition("activate", self._do_activate)

    def on_deactivate(self, state):
        return self._transition("deactivate", self._do_deactivate)

    def on_cleanup(self, state):
        return self._transition("cleanup", self._do_cleanup)

    def on_shutdown(self, state):
        def run():
            self._do_deactivate()
            self._do_cleanup()
        return self._transition("shutdown", run)

    def stage_params(self, stage: str) -> dict:
        """The pipeline settings of one stage ("inference", "solver") as this node's parameters set them."""
        from relocal_ros.settings import all_settings
        return {s.name: self.params[s.name] for s in all_settings() if s.stage == stage}

    @property
    def is_active(self) -> bool:
        return self._active

    def start(self) -> bool:
        """configure + activate (what `autostart` and relocal-graph do); False when a transition failed."""
        self.trigger_configure()
        if not self._configured:
            return False
        self.trigger_activate()
        return self._active

    def destroy_node(self):
        try:
            self._do_deactivate()
            self._do_cleanup()
        except Exception as e:  # the node goes away anyway
            self.get_logger().error(f"shutdown: {type(e).__name__}: {e}")
        return super().destroy_node()


def run_node(node_cls, args=None) -> None:
    """Spin one node until shutdown (Ctrl-C or SIGTERM) with a multi-threaded executor; with `autostart` the node
    is configured and activated first (a failed configure ends the process with exit code 1)."""
    import sys

    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor

    from relocal_ros.nodes.dds_profile import use_large_data_profile
    use_large_data_profile()  # before the first participant: camera images by shared memory (config/fastdds_*.xml)
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = node_cls()
        if node.autostart and not node.start():
            node.get_logger().error("could not configure and activate: see the error above")
            code = 1
        else:
            threads = node_cls.executor_threads
            ex = SingleThreadedExecutor() if threads == 1 else MultiThreadedExecutor(num_threads=threads)
            ex.add_node(node)
            ex.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    if code:
        sys.exit(code)
