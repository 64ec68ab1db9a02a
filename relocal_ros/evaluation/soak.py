"""Soak run: a bag looped at camera rate through the three real node processes for minutes, as on a robot.

The player publishes colour + aligned depth + both camera_infos from the bag, /tf_static base_link->camera and a
simulated odometry /tf odom->base_link at each image time (the ground truth moved by a known map->odom offset), so
the solver's REP-105 map->odom output can be checked against that offset. Stamps are rewritten onto the wall clock
at every loop and spaced 1/rate_hz apart, like a live camera. Recorded: the RSS of each node
process over time, image->pose latency, pose errors against the ground truth, the map->odom error and the last
/diagnostics of each node. Used by bench/soak.py (10 minutes, plot) and test/test_soak.py (60 s)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from relocal_ros.data.bags import DEFAULT_TOPICS, BagSource, BagTopics
from relocal_ros.geometry.poses import invert, make_T, pose_error

# a simulated odometry frame: map->odom is this offset, so the published map->odom must equal it
ODOM_OFFSET = make_T(np.array([[np.cos(0.2), -np.sin(0.2), 0], [np.sin(0.2), np.cos(0.2), 0], [0, 0, 1.0]]),
                     [0.5, -0.3, 0.0])
# base_link 10 cm behind the camera body, which looks along base x (REP-103): base->optical is this
OPTICAL_IN_BASE = make_T(np.array([[0, 0, 1.0], [-1, 0, 0], [0, -1, 0]]), [0.1, 0.0, 0.0])


def rss_mib(pid: int) -> float | None:
    """Resident set size of a process from /proc (Linux); None when it has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


@dataclass
class SoakReport:
    seconds: float
    rate_hz: float
    images_sent: int = 0
    poses: list = field(default_factory=list)        # (t since start, latency s, position err m, rotation err deg)
    map_odom_errors: list = field(default_factory=list)  # (position err m, rotation err deg) of the map->odom per pose
    rss: dict = field(default_factory=dict)          # process name -> list of (t since start, MiB)
    diagnostics: dict = field(default_factory=dict)  # status name -> {key: value}, the last received
    alive_at_end: dict = field(default_factory=dict)

    def rss_growth(self, warm_up_s: float) -> dict:
        """Per process: max RSS after warm-up minus the RSS at the end of warm-up (MiB)."""
        out = {}
        for name, samples in self.rss.items():
            after = [m for t, m in samples if t >= warm_up_s]
            if after:
                out[name] = max(after) - after[0]
        return out

    def summary(self, warm_up_s: float = 20.0) -> dict:
        lat = np.array([p[1] for p in self.poses]) * 1000.0
        err_t = np.array([p[2] for p in self.poses])
        err_r = np.array([p[3] for p in self.poses])
        inf = next((v for k, v in self.diagnostics.items() if k.startswith("inference_node")), {})
        solver = next((v for k, v in self.diagnostics.items() if k.startswith("pose_solver")), {})
        mo = np.array(self.map_odom_errors).reshape(-1, 2)
        return {
            "seconds": self.seconds, "rate_hz": self.rate_hz, "images_sent": self.images_sent,
            "poses_published": len(self.poses),
            "latency_ms_p50": float(np.percentile(lat, 50)) if len(lat) else None,
            "latency_ms_p95": float(np.percentile(lat, 95)) if len(lat) else None,
            "latency_ms_max": float(lat.max()) if len(lat) else None,
            "within_5cm_5deg": float(np.mean((err_t < 0.05) & (err_r < 5))) if len(lat) else None,
            "wrong_over_25cm_10deg": int(np.sum((err_t > 0.25) | (err_r > 10))),
            "map_odom_median_cm": float(np.median(mo[:, 0]) * 100) if len(mo) else None,
            "map_odom_median_deg": float(np.median(mo[:, 1])) if len(mo) else None,
            "rss_mib_end": {n: s[-1][1] for n, s in self.rss.items() if s},
            "rss_growth_mib_after_warm_up": self.rss_growth(warm_up_s),
            "inference_diagnostics": inf, "solver_diagnostics": solver,
            "alive_at_end": self.alive_at_end,
        }


def _load_bag(bag, topics: BagTopics):
    """Per colour image: (colour msg, depth msg or None, colour info, T_map_cam ground truth) as rclpy messages."""
    from rclpy.serialization import deserialize_message

    from relocal_ros.evaluation.replay import _read_bag, get_message
    from relocal_ros.nodes.conversions import stamp_ns
    gt = {}
    with BagSource(bag, topics) as src:
        for i in range(len(src)):
            ref, _, _, pose = src._frames[i]
            gt[ref.stamp_ns] = pose
    by_topic: dict[str, list] = {}
    messages, topics = _read_bag(bag, topics)
    for t, topic, msgtype, data in messages:
        by_topic.setdefault(topic, []).append((t, deserialize_message(data, get_message(msgtype))))
    depth = {stamp_ns(m.header.stamp): m for _, m in by_topic.get(topics.depth, [])}
    info = by_topic[topics.color_info][-1][1] if topics.color_info in by_topic else None
    depth_info = by_topic[topics.depth_info][-1][1] if topics.depth_info in by_topic else None
    frames = []
    for t, m in by_topic[topics.color]:
        s = stamp_ns(m.header.stamp)
        if gt.get(s) is not None:
            frames.append((t, m, depth.get(s), gt[s]))
    if not frames:
        raise ValueError(f"{bag}: no colour image with a ground-truth pose: a soak needs ground truth")
    return frames, info, depth_info


def run_soak(bag, seconds: float, graph, rate_hz: float = 30.0, topics: BagTopics = DEFAULT_TOPICS,
             rss_period_s: float = 1.0, wait_for_graph_s: float = 120.0, progress=None,
             clock_jumps: bool = False) -> SoakReport:
    """Loop `bag` at rate_hz for `seconds` into a started GraphProcesses `graph` and record a SoakReport.
    clock_jumps: every loop starts again at the first stamp (`ros2 bag play --loop`, a simulation reset) and the
    odometry frame moves to a new offset, so that pairing an image with the previous loop's TF shows as a wrong
    map->odom."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    from relocal_ros.nodes.conversions import T_from_pose_msg, transform_msg_from_T

    frames, info, depth_info = _load_bag(bag, topics)
    report = SoakReport(seconds, rate_hz, rss={n: [] for n in graph.procs})
    own = not rclpy.ok()
    if own:
        rclpy.init()
    node = rclpy.create_node("relocal_soak_player")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    static_qos = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
    pub_color = node.create_publisher(Image, topics.color, 10)
    pub_depth = node.create_publisher(Image, topics.depth, 10)
    pub_info = node.create_publisher(CameraInfo, topics.color_info, 10)
    pub_dinfo = node.create_publisher(CameraInfo, topics.depth_info, 10)
    pub_tf = node.create_publisher(TFMessage, "/tf", 100)
    pub_static = node.create_publisher(TFMessage, "/tf_static", static_qos)
    sent: dict[int, tuple[float, np.ndarray]] = {}   # stamp ns -> (wall time sent, T_map_base truth)
    odom_offset: dict[int, np.ndarray] = {}          # stamp ns -> the map->odom in force when it was sent
    odom_base: dict[int, np.ndarray] = {}            # stamp ns -> the odom->base_link published for it
    t0 = time.perf_counter()

    def on_pose(msg):
        s = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        if s in sent:
            t_sent, T_true = sent.pop(s)
            now = time.perf_counter()
            T_est = T_from_pose_msg(msg.pose.pose)
            dt, dr = pose_error(T_est, T_true)
            report.poses.append((now - t0, now - t_sent, dt, dr))
            # REP-105: the map->odom this pose implies (the solver re-sends it post-dated, so TF stamps no longer
            # name the image) against the offset in force when the image was sent
            if s in odom_offset and s in odom_base:
                report.map_odom_errors.append(pose_error(T_est @ invert(odom_base[s]), odom_offset[s]))

    def on_diag(msg):
        for st in msg.status:
            report.diagnostics[st.name] = {kv.key: kv.value for kv in st.values}

    node.create_subscription(PoseWithCovarianceStamped, "relocalization/pose", on_pose, 100)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 100)

    def transform(T, parent, child, stamp):
        t = TransformStamped()
        t.header.stamp, t.header.frame_id, t.child_frame_id = stamp, parent, child
        t.transform = transform_msg_from_T(T)
        return t

    try:
        deadline = time.monotonic() + wait_for_graph_s
        while node.count_subscribers(topics.color) == 0 or node.count_publishers("relocalization/pose") == 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the graph did not come up within {wait_for_graph_s:.0f} s")
            ex.spin_once(timeout_sec=0.1)
        optical = frames[0][1].header.frame_id or "camera_color_optical_frame"
        pub_static.publish(TFMessage(transforms=[transform(OPTICAL_IN_BASE, "base_link", optical,
                                                           node.get_clock().now().to_msg())]))
        ex.spin_once(timeout_sec=1.0)
        t0 = time.perf_counter()
        clock0_ns = node.get_clock().now().nanoseconds
        i, loop, next_rss = 0, 0, 0.0
        while time.perf_counter() - t0 < seconds:
            _, color, depth, T_map_cam = frames[i]
            offset_s = (loop * len(frames) + i) / rate_hz   # the camera rate asked for, whatever the bag's
            stamp_offset_s = i / rate_hz if clock_jumps else offset_s
            T_map_odom = ODOM_OFFSET @ make_T(np.eye(3), [0.2 * loop, 0, 0]) if clock_jumps else ODOM_OFFSET
            target = t0 + offset_s
            while True:
                now = time.perf_counter()
                if now >= target:
                    break
                ex.spin_once(timeout_sec=min(0.005, target - now))
            stamp_ns_ = clock0_ns + int(stamp_offset_s * 1e9)
            stamp = rclpy.time.Time(nanoseconds=stamp_ns_).to_msg()
            T_map_base = T_map_cam @ invert(OPTICAL_IN_BASE)
            odom_offset[stamp_ns_] = T_map_odom
            odom_base[stamp_ns_] = invert(T_map_odom) @ T_map_base
            pub_tf.publish(TFMessage(transforms=[transform(odom_base[stamp_ns_], "odom", "base_link", stamp)]))
            for m in (color, depth, info, depth_info):
                if m is not None:
                    m.header.stamp = stamp
            if info is not None:
                pub_info.publish(info)
            if depth is not None:
                pub_depth.publish(depth)
                if depth_info is not None:
                    pub_dinfo.publish(depth_info)
            sent[stamp_ns_] = (time.perf_counter(), T_map_base)
            pub_color.publish(color)
            report.images_sent += 1
            for d in (sent, odom_offset, odom_base):
                if len(d) > 2000:  # images never answered (dropped or refused): forget the oldest
                    for k in sorted(d)[:1000]:
                        del d[k]
            if now - t0 >= next_rss:
                for name, p in graph.procs.items():
                    m = rss_mib(p.pid)
                    if m is not None:
                        report.rss[name].append((now - t0, m))
                next_rss += rss_period_s
                if progress is not None:
                    progress(now - t0, report)
            i += 1
            if i == len(frames):
                i, loop = 0, loop + 1
        end = time.perf_counter() + 3.0
        while time.perf_counter() < end:  # answers in flight and one more /diagnostics period
            ex.spin_once(timeout_sec=0.05)
        report.alive_at_end = graph.alive()
    finally:
        node.destroy_node()
        if own and rclpy.ok():
            rclpy.shutdown()
    return report


def plot_soak(report: SoakReport, out_png) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for name, s in report.rss.items():
        if s:
            t, m = zip(*s)
            a.plot(t, m, label=name)
    a.set_ylabel("RSS (MiB)")
    a.legend(fontsize=8)
    a.grid(alpha=0.3)
    if report.poses:
        t = [p[0] for p in report.poses]
        b.plot(t, [p[1] * 1000 for p in report.poses], ".", ms=3)
    b.set_ylabel("image -> pose latency (ms)")
    b.set_xlabel("time since start (s)")
    b.grid(alpha=0.3)
    fig.suptitle(f"soak: {report.images_sent} images at {report.rate_hz:.0f} Hz, {len(report.poses)} poses")
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
