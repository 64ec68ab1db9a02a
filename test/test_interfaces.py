"""The generated interface packages (tf2_msgs from interfaces/pypi_only, relocal_msgs) with real rclpy."""
import math
import time
from pathlib import Path

import numpy as np
import pytest

BUILD_HINT = "not built: run scripts/build_interfaces.sh .venv"
rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 PyPI wheels) not installed")
tf2_msgs = pytest.importorskip("tf2_msgs.msg", reason=f"tf2_msgs {BUILD_HINT}")
relocal_msgs = pytest.importorskip("relocal_msgs.msg", reason=f"relocal_msgs {BUILD_HINT}")

from geometry_msgs.msg import Pose, TransformStamped  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import CameraInfo  # noqa: E402

QueryEvidence, RelativePoseHypothesis = relocal_msgs.QueryEvidence, relocal_msgs.RelativePoseHypothesis
TFMessage = tf2_msgs.TFMessage
MSG_DIR = Path(__file__).resolve().parents[1] / "interfaces" / "relocal_msgs" / "msg"


def make_evidence() -> QueryEvidence:
    ev = QueryEvidence()
    ev.header.stamp.sec, ev.header.stamp.nanosec = 1305031229, 528748000
    ev.header.frame_id = "camera_color_optical_frame"
    ev.camera_info = CameraInfo(width=640, height=480, distortion_model="plumb_bob",
                                k=[525.0, 0.0, 319.5, 0.0, 525.0, 239.5, 0.0, 0.0, 1.0], d=[0.1, -0.2, 0.0, 0.0, 0.0])
    ev.method = "exrenet"
    ev.image_points = np.array([10.5, 20.25, 30.0, 40.0], dtype=np.float32)
    ev.map_points = np.array([1.0, 2.0, 3.0, -1.0, 0.5, 4.0], dtype=np.float32)
    ev.weights = np.array([0.9, 0.25], dtype=np.float32)
    ev.keyframe_ids = np.array([7, 3, 11], dtype=np.uint32)
    for kf, scale in ((7, 1.25), (3, math.nan)):
        h = RelativePoseHypothesis(keyframe_id=kf, scale=scale, uncertainty=0.05 * kf)
        h.keyframe_pose.position.x, h.keyframe_pose.orientation.w = float(kf), 1.0
        h.relative_pose.position.z, h.relative_pose.orientation.w = 1.0, 1.0
        h.translation_samples = np.array([0.0, 0.1, 0.99, 0.01, 0.0, 1.0], dtype=np.float64)
        h.dense_consistency = 0.5 if kf == 7 else -1.0  # -1: not checked (the message's default)
        h.photometric_agreement = 0.3 if kf == 3 else -1.0
        ev.hypotheses.append(h)
    ev.inference_seconds = 0.042
    ev.checked_pose = np.eye(4).ravel().tolist()  # a pose inference derived and checked (empty: none)
    ev.checked_pose[3] = 1.25
    ev.photometric_agreement, ev.photometric_band = 0.45, 0.625  # RGB-only checks of the evidence's pose
    ev.refusal = ""
    return ev


def assert_same_evidence(got: QueryEvidence, ref: QueryEvidence):
    assert (got.header.stamp.sec, got.header.stamp.nanosec, got.header.frame_id) == (
        ref.header.stamp.sec, ref.header.stamp.nanosec, ref.header.frame_id)
    assert list(got.camera_info.k) == list(ref.camera_info.k) and got.camera_info.width == 640
    assert got.method == ref.method and got.refusal == ref.refusal
    for field in ("image_points", "map_points", "weights", "keyframe_ids"):
        np.testing.assert_array_equal(np.asarray(getattr(got, field)), np.asarray(getattr(ref, field)))
    assert len(got.hypotheses) == 2
    for g, r in zip(got.hypotheses, ref.hypotheses):
        assert g.keyframe_id == r.keyframe_id and g.keyframe_pose == r.keyframe_pose
        assert g.relative_pose == r.relative_pose and g.uncertainty == r.uncertainty
        assert (math.isnan(g.scale) and math.isnan(r.scale)) or g.scale == r.scale
        np.testing.assert_array_equal(g.translation_samples, r.translation_samples)
        assert g.dense_consistency == r.dense_consistency and g.photometric_agreement == r.photometric_agreement
    assert got.inference_seconds == ref.inference_seconds
    assert list(got.checked_pose) == list(ref.checked_pose) and len(got.checked_pose) == 16
    assert (got.photometric_agreement, got.photometric_band) == (ref.photometric_agreement, ref.photometric_band)


def test_field_types_are_as_specified():
    ev = make_evidence()
    assert isinstance(ev.hypotheses[0].keyframe_pose, Pose)
    # unbounded numeric sequences are array.array in rclpy: f = float32, I = uint32, d = float64
    assert (ev.image_points.typecode, ev.map_points.typecode, ev.weights.typecode) == ("f", "f", "f")
    assert ev.keyframe_ids.typecode == "I" and ev.hypotheses[0].translation_samples.typecode == "d"
    assert set(QueryEvidence.get_fields_and_field_types()) == {
        "header", "camera_info", "method", "image_points", "map_points", "weights", "keyframe_ids", "hypotheses",
        "inference_seconds", "map_pose_sigma_m", "map_pose_sigma_deg", "refusal", "independent", "query_points",
        "dense_consistency", "dense_judged", "dense_samples", "dense_photometric", "fallback", "photometric_agreement",
        "photometric_band", "checked_pose"}
    assert set(RelativePoseHypothesis.get_fields_and_field_types()) == {
        "keyframe_id", "keyframe_pose", "relative_pose", "scale", "uncertainty", "translation_samples",
        "dense_consistency", "photometric_agreement"}


def test_serialize_round_trip():
    ev = make_evidence()
    raw = serialize_message(ev)
    assert_same_evidence(deserialize_message(raw, QueryEvidence), ev)
    refused = QueryEvidence(method="xfeat_pnp", refusal="no map loaded")
    back = deserialize_message(serialize_message(refused), QueryEvidence)
    assert back.refusal == "no map loaded" and len(back.hypotheses) == 0 and len(back.image_points) == 0


def rosbags_typestore_with_relocal_msgs():
    from rosbags.typesys import Stores, get_typestore, get_types_from_msg
    ts = get_typestore(Stores.ROS2_KILTED)
    for name in ("RelativePoseHypothesis", "QueryEvidence"):
        ts.register(get_types_from_msg((MSG_DIR / f"{name}.msg").read_text(), f"relocal_msgs/msg/{name}"))
    return ts


def test_rosbags_reads_and_writes_the_same_wire_format():
    """rosbags (which records and reads our bags) and the generated code agree on the CDR layout both ways
    (bytes differ only in padding, which fastcdr leaves uninitialised)."""
    ts = rosbags_typestore_with_relocal_msgs()
    ev = make_evidence()
    decoded = ts.deserialize_cdr(serialize_message(ev), "relocal_msgs/msg/QueryEvidence")
    assert decoded.method == "exrenet" and decoded.hypotheses[0].keyframe_id == 7
    np.testing.assert_array_equal(decoded.map_points, np.asarray(ev.map_points))
    again = deserialize_message(bytes(ts.serialize_cdr(decoded, "relocal_msgs/msg/QueryEvidence")), QueryEvidence)
    assert_same_evidence(again, ev)


def _spin_until(executor, done, timeout_s, tick=None):
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        if tick:
            tick()
        executor.spin_once(timeout_sec=0.05)
    return done()


@pytest.mark.ros
def test_publish_between_two_nodes(own_domain):
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile
    from rosbags.typesys import Stores, get_typestore

    ctx = Context()
    rclpy.init(context=ctx)  # in the test's own domain (own_domain), so parallel runs on one host never cross-talk
    try:
        assert ctx.get_domain_id() == int(own_domain)
        talker = rclpy.create_node("relocal_test_talker", context=ctx)
        listener = rclpy.create_node("relocal_test_listener", context=ctx)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(talker)
        executor.add_node(listener)
        got_tf, got_ev = [], []
        listener.create_subscription(TFMessage, "/tf", got_tf.append, 10)
        listener.create_subscription(QueryEvidence, "/relocal/query_evidence", got_ev.append,
                                     QoSProfile(depth=5, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL))
        pub_tf = talker.create_publisher(TFMessage, "/tf", 10)
        pub_ev = talker.create_publisher(QueryEvidence, "/relocal/query_evidence",
                                         QoSProfile(depth=5, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL))

        t = TransformStamped()
        t.header.frame_id, t.child_frame_id = "map", "camera_color_optical_frame"
        t.header.stamp.sec = 42
        t.transform.translation.x, t.transform.rotation.w = 1.5, 1.0
        evidence = make_evidence()

        def publish():  # volatile /tf: keep publishing until discovery has matched the subscription
            pub_tf.publish(TFMessage(transforms=[t]))
            if not got_ev:
                pub_ev.publish(evidence)

        assert _spin_until(executor, lambda: got_tf and got_ev, 10.0, publish), "no messages within 10 s"
        tf, = got_tf[0].transforms
        assert (tf.header.frame_id, tf.child_frame_id, tf.header.stamp.sec) == ("map", "camera_color_optical_frame", 42)
        assert tf.transform.translation.x == 1.5 and tf.transform.rotation.w == 1.0
        assert_same_evidence(got_ev[0], evidence)

        # what goes on the wire carries upstream tf2_msgs' type hash, so real ROS 2 tf listeners accept it
        info, = talker.get_publishers_info_by_topic("/tf")
        assert str(info.topic_type_hash) == get_typestore(Stores.ROS2_KILTED).hash_rihs01("tf2_msgs/msg/TFMessage")
        # and relocal_msgs' hash is the one rosbags computes from the .msg files (bags record it in metadata)
        info, = talker.get_publishers_info_by_topic("/relocal/query_evidence")
        assert str(info.topic_type_hash) == rosbags_typestore_with_relocal_msgs().hash_rihs01(
            "relocal_msgs/msg/QueryEvidence")
        executor.shutdown()
        talker.destroy_node()
        listener.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
