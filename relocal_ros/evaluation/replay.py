"""Replay a ROS 2 bag into the live graph with its original timing and record what the graph publishes:
the poses (converted to camera-to-map with the bag's base_link→camera transform, written as a TUM trajectory)
and the latency from publishing each image to receiving its pose."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path


from relocal_ros.data.bags import DEFAULT_TOPICS, BagReadError, BagTopics, compressed_topics
from relocal_ros.data.trajectory import write_tum_trajectory


@dataclass
class ReplayReport:
    images_sent: int = 0
    poses_received: int = 0
    latencies_s: list = field(default_factory=list)
    estimates: dict = field(default_factory=dict)   # stamp -> 4x4 camera-to-map
    diagnostics: dict = field(default_factory=dict)  # last /diagnostics values per status name
    # where the time goes, per localized image (s): image published -> its evidence received (transport of the
    # images, colour/depth pairing, the worker, retrieval + matching, transport of the evidence), of which the
    # inference node's own compute (QueryEvidence.inference_seconds); evidence received -> pose received
    to_evidence_s: list = field(default_factory=list)
    inference_s: list = field(default_factory=list)
    evidence_to_pose_s: list = field(default_factory=list)


def _read_bag(path, topics: BagTopics):
    """-> (messages sorted by time, the topic set found: raw or image_transport's compressed / compressedDepth)."""
    from rosbags.rosbag2 import Reader
    out = []
    try:
        with Reader(Path(path)) as r:
            present = {c.topic for c in r.connections}
            if topics.color not in present and compressed_topics(topics).color in present:
                topics = compressed_topics(topics)  # a robot's recording: play it as recorded
            wanted = {topics.color, topics.depth, topics.color_info, topics.depth_info, "/tf", "/tf_static"}
            conns = [c for c in r.connections if c.topic in wanted]
            for c, t, data in r.messages(connections=conns):
                out.append((t, c.topic, c.msgtype, bytes(data)))
    except Exception as e:
        raise BagReadError(f"{path}: cannot read as a ROS 2 bag ({type(e).__name__}: {e})") from e
    if not any(topic == topics.color for _, topic, _, _ in out):
        raise BagReadError(f"{path}: no messages on {topics.color}")
    out.sort(key=lambda x: x[0])
    return out, topics


def get_message(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy class (rosidl_runtime_py is not on PyPI; this is all we need of it)."""
    import importlib
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def replay_bag(bag, out_tum=None, rate: float = 1.0, topics: BagTopics = DEFAULT_TOPICS,
               base_frame: str = "base_link", wait_for_graph_s: float = 60.0, settle_s: float = 3.0,
               node_name: str = "relocal_replay") -> ReplayReport:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message

    from relocal_ros.nodes.conversions import T_from_pose_msg, T_from_transform_msg, msg_stamp_str

    messages, topics = _read_bag(bag, topics)
    own_context = not rclpy.ok()
    if own_context:
        from relocal_ros.nodes.dds_profile import use_large_data_profile
        use_large_data_profile()  # the images it publishes, by shared memory (config/fastdds_large_data.xml)
        rclpy.init(args=[])  # not sys.argv: a caller's own options are not ROS arguments
    node = rclpy.create_node(node_name)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    report = ReplayReport()
    sent_at: dict[str, float] = {}
    T_base_cam = None
    static_qos = QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {}
    try:
        types = {}
        for _, topic, msgtype, _ in messages:
            if topic not in pubs:
                types[topic] = get_message(msgtype)
                qos = static_qos if topic == "/tf_static" else 100
                pubs[topic] = node.create_publisher(types[topic], topic, qos)
        received = {}

        def on_pose(msg):
            received[msg_stamp_str(msg.header.stamp)] = (time.perf_counter(), T_from_pose_msg(msg.pose.pose))

        def on_diag(msg):
            for st in msg.status:
                report.diagnostics[st.name] = {kv.key: kv.value for kv in st.values}

        node.create_subscription(PoseWithCovarianceStamped, "relocalization/pose", on_pose, 100)
        evidence = {}
        try:
            from relocal_msgs.msg import QueryEvidence

            def on_evidence(msg):
                evidence[msg_stamp_str(msg.header.stamp)] = (time.perf_counter(), float(msg.inference_seconds))
            node.create_subscription(QueryEvidence, "relocalization/evidence", on_evidence, 100)
        except ImportError:  # relocal_msgs not built: no breakdown, the end-to-end latency still
            pass
        node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 100)
        deadline = time.monotonic() + wait_for_graph_s
        while time.monotonic() < deadline:  # the graph is up when someone listens to the images and poses flow out
            if (node.count_subscribers(topics.color) > 0 and node.count_publishers("relocalization/pose") > 0):
                break
            ex.spin_once(timeout_sec=0.1)
        else:
            raise TimeoutError(f"no node subscribed to {topics.color} and published relocalization/pose within "
                               f"{wait_for_graph_s:.0f} s")
        time.sleep(1.0)  # discovery of the other direction
        t_bag0, t_wall0 = messages[0][0], time.perf_counter()
        for t, topic, msgtype, data in messages:
            target = t_wall0 + (t - t_bag0) / 1e9 / rate
            while True:
                now = time.perf_counter()
                if now >= target:
                    break
                ex.spin_once(timeout_sec=min(0.005, target - now))
            msg = deserialize_message(data, types[topic])
            if topic == "/tf_static":
                for tr in msg.transforms:
                    if tr.header.frame_id == base_frame:
                        T_base_cam = T_from_transform_msg(tr.transform)
            pubs[topic].publish(msg)
            if topic == topics.color:
                sent_at[msg_stamp_str(msg.header.stamp)] = time.perf_counter()
                report.images_sent += 1
        last = time.perf_counter()
        while time.perf_counter() - last < settle_s:
            n = len(received)
            ex.spin_once(timeout_sec=0.05)
            if len(received) != n:
                last = time.perf_counter()
    finally:
        node.destroy_node()
        if own_context and rclpy.ok():
            rclpy.shutdown()
    for stamp, (t_recv, T_map_x) in received.items():
        if stamp not in sent_at:
            continue
        # the solver publishes base_link's pose when it knows base_link->camera (the bag's /tf_static)
        T_map_cam = T_map_x @ T_base_cam if T_base_cam is not None else T_map_x
        report.estimates[stamp] = T_map_cam
        report.latencies_s.append(t_recv - sent_at[stamp])
        if stamp in evidence:
            t_ev, inference_s = evidence[stamp]
            report.to_evidence_s.append(t_ev - sent_at[stamp])
            report.inference_s.append(inference_s)
            report.evidence_to_pose_s.append(t_recv - t_ev)
    report.poses_received = len(report.estimates)
    if out_tum is not None:
        stamps = sorted(report.estimates, key=float)
        write_tum_trajectory(Path(out_tum), stamps, [report.estimates[s] for s in stamps])
    return report
