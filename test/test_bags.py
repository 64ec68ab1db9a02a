"""ROS 2 bags written with rosbags and read back by BagSource and by rclpy's own deserializer."""
import numpy as np
import pytest
import yaml

from relocal_ros.data.bags import (DEFAULT_TOPICS, REALSENSE_LEGACY_TOPICS, BagReadError, BagSource,
                                   bag_from_dataset, stamp_from_sec_nanosec, stamp_to_sec_nanosec, write_bag)
from relocal_ros.data.frames import RGBDFrame
from relocal_ros.geometry.camera import Intrinsics
from relocal_ros.geometry.poses import T_from_tq

W, H = 64, 48
INTR = Intrinsics(52.0, 53.0, 31.5, 23.25, W, H, (0.1, -0.05, 0.001, -0.002, 0.01))
STAMPS = ["1305031229.528748", "1305031229.560686", "1305031229.596714", "1305031229.628729", "1305031229.660753"]


def make_frames(stamps=STAMPS, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for i, stamp in enumerate(stamps):
        depth = rng.uniform(0.3, 6.0, (H, W)).astype(np.float32)
        depth[0, :5] = [0.0, np.nan, np.inf, -1.0, 70.0]  # all unrepresentable / invalid -> 0
        pose = T_from_tq(rng.normal(size=3), rng.normal(size=4))
        frames.append(RGBDFrame(stamp=stamp, rgb=rng.integers(0, 256, (H, W, 3), dtype=np.uint8), depth=depth,
                                intrinsics=INTR, pose=pose, name=f"f{i}"))
    if len(frames) == 5:
        frames[1].pose = None    # no ground truth for this one
        frames[3].depth = None   # colour without depth
    return frames


class ListSource:
    def __init__(self, frames):
        self.frames, self.intrinsics = frames, frames[0].intrinsics

    def __len__(self):
        return len(self.frames)

    def __iter__(self):
        return iter(self.frames)

    def __getitem__(self, i):
        return self.frames[i]


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def written(request, tmp_path_factory):
    frames = make_frames()
    out = tmp_path_factory.mktemp(request.param) / "bag"
    assert bag_from_dataset(ListSource(frames), out, storage=request.param) == out
    return request.param, frames, out


def test_layout_is_a_standard_rosbag2_directory(written):
    storage, _, out = written
    meta = yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == storage
    files = meta["relative_file_paths"]
    assert files == ["bag.mcap" if storage == "mcap" else "bag.db3"] and (out / files[0]).is_file()
    counts = {t["topic_metadata"]["name"]: t["message_count"] for t in meta["topics_with_message_count"]}
    assert counts == {DEFAULT_TOPICS.color: 5, DEFAULT_TOPICS.color_info: 5, DEFAULT_TOPICS.depth: 4,
                      DEFAULT_TOPICS.depth_info: 4, DEFAULT_TOPICS.ground_truth: 4, DEFAULT_TOPICS.tf_static: 1}
    tf = next(t["topic_metadata"] for t in meta["topics_with_message_count"]
              if t["topic_metadata"]["name"] == "/tf_static")
    assert "transient_local" in str(tf["offered_qos_profiles"]).lower()
    # receive times equal header stamps for increasing stamps
    assert meta["starting_time"]["nanoseconds_since_epoch"] == 1305031229_528748000
    assert meta["duration"]["nanoseconds"] == 1305031229_660753000 - 1305031229_528748000


def test_read_back_exactly(written):
    _, frames, out = written
    with BagSource(out) as src:
        assert len(src) == len(frames) and src.intrinsics == INTR
        got = list(src)
    for ref, frame in zip(frames, got):
        assert frame.stamp == ref.stamp
        assert frame.intrinsics == INTR
        assert frame.rgb.dtype == np.uint8 and np.array_equal(frame.rgb, ref.rgb)
        if ref.depth is None:
            assert frame.depth is None
        else:
            assert frame.depth.dtype == np.float32 and frame.depth.shape == (H, W)
            np.testing.assert_array_equal(frame.depth[0, :5], 0.0)
            assert np.abs(frame.depth[1:] - ref.depth[1:]).max() <= 0.0005 + 1e-6  # 1 mm quantisation
        if ref.pose is None:
            assert frame.pose is None
        else:
            np.testing.assert_allclose(frame.pose, ref.pose, atol=1e-9)


def test_random_access_and_sources_dispatch(written):
    _, frames, out = written
    from relocal_ros.data.sources import open_source
    src = open_source(out)
    assert isinstance(src, BagSource)
    assert np.array_equal(src[-1].rgb, frames[-1].rgb) and src[2].stamp == STAMPS[2]
    with pytest.raises(IndexError):
        src[len(frames)]
    src.close()


def test_rclpy_reads_what_rosbags_wrote(written):
    storage, frames, out = written
    rclpy_ser = pytest.importorskip("rclpy.serialization", reason="rclpy not installed")
    from sensor_msgs.msg import CameraInfo, Image
    from rosbags.rosbag2 import Reader

    from relocal_ros.data.images import depth_from_msg, rgb_from_msg
    with Reader(out) as reader:
        conns = {c.topic: c for c in reader.connections}
        raws = {}
        for conn, _, raw in reader.messages(connections=[conns[DEFAULT_TOPICS.color], conns[DEFAULT_TOPICS.depth],
                                                         conns[DEFAULT_TOPICS.color_info]]):
            raws.setdefault(conn.topic, bytes(raw))
    img = rclpy_ser.deserialize_message(raws[DEFAULT_TOPICS.color], Image)
    assert (img.encoding, img.width, img.height, img.header.frame_id) == ("rgb8", W, H, "camera_color_optical_frame")
    assert (img.header.stamp.sec, img.header.stamp.nanosec) == (1305031229, 528748000)
    assert np.array_equal(rgb_from_msg(img), frames[0].rgb)
    depth = rclpy_ser.deserialize_message(raws[DEFAULT_TOPICS.depth], Image)
    assert depth.encoding == "16UC1"
    assert np.abs(depth_from_msg(depth)[1:] - frames[0].depth[1:]).max() <= 0.0005 + 1e-6
    info = rclpy_ser.deserialize_message(raws[DEFAULT_TOPICS.color_info], CameraInfo)
    assert info.distortion_model == "plumb_bob" and Intrinsics.from_camera_info(info) == INTR


def test_tf_static_is_the_optical_rotation(written):
    _, _, out = written
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore
    ts = get_typestore(Stores.ROS2_KILTED)
    with Reader(out) as reader:
        conn = next(c for c in reader.connections if c.topic == "/tf_static")
        (_, _, raw), = list(reader.messages(connections=[conn]))
    tf, = ts.deserialize_cdr(raw, conn.msgtype).transforms
    assert (tf.header.frame_id, tf.child_frame_id) == ("camera_link", "camera_color_optical_frame")
    q = tf.transform.rotation
    R = T_from_tq((0, 0, 0), (q.x, q.y, q.z, q.w))[:3, :3]
    # optical z (forward) is camera_link x, optical x (right) is camera_link -y, optical y (down) is -z
    np.testing.assert_allclose(R, [[0, 0, 1], [-1, 0, 0], [0, -1, 0]], atol=1e-12)


def test_stamps_are_exact():
    assert stamp_to_sec_nanosec("1305031229.528748") == (1305031229, 528748000)
    assert stamp_to_sec_nanosec("200005") == (200005, 0)
    assert stamp_to_sec_nanosec("1.000000001") == (1, 1)
    assert stamp_to_sec_nanosec("1.9999999999") == (2, 0)  # rounds to the nanosecond and carries
    assert stamp_from_sec_nanosec(1305031229, 528748000) == "1305031229.528748"
    assert stamp_from_sec_nanosec(1, 1) == "1.000000001"
    assert stamp_from_sec_nanosec(200005, 0) == "200005.000000"
    for bad in ("abc", "-1", "nan", "1e12"):
        with pytest.raises(ValueError, match="stamp"):
            stamp_to_sec_nanosec(bad)


def test_nanosecond_stamps_and_fixed_rate(tmp_path):
    frames = make_frames(["7.000000001", "7.000000002", "7.000000003"])
    out = write_bag(frames, tmp_path / "ns", storage="mcap")
    assert [f.stamp for f in BagSource(out, sync_tolerance_s=0)] == ["7.000000001", "7.000000002", "7.000000003"]

    backwards = make_frames(["200005", "100003", "100004"])  # e.g. two 7-Scenes sequences in the wrong order
    with pytest.raises(ValueError, match="does not increase; pass rate_hz"):
        write_bag(backwards, tmp_path / "back", storage="mcap")
    assert not (tmp_path / "back").exists()  # nothing half-written is left behind
    out = write_bag(backwards, tmp_path / "rate", storage="sqlite3", rate_hz=30.0)
    meta = yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["starting_time"]["nanoseconds_since_epoch"] == 200005 * 10**9
    assert meta["duration"]["nanoseconds"] == round(2 * 10**9 / 30)
    src = BagSource(out)
    assert sorted(f.stamp for f in src) == ["100003.000000", "100004.000000", "200005.000000"]


def test_legacy_realsense_topics_are_found(tmp_path):
    out = write_bag(make_frames()[:2], tmp_path / "legacy", topics=REALSENSE_LEGACY_TOPICS)
    src = BagSource(out)
    assert src.topics == REALSENSE_LEGACY_TOPICS and len(src) == 2
    with pytest.raises(BagReadError, match="no colour image topic /camera/camera/color/image_raw; image topics in "
                                           "this bag: /camera/aligned_depth_to_color/image_raw, /camera/color"):
        BagSource(out, topics=DEFAULT_TOPICS)


def test_depth_outside_tolerance_is_not_paired(tmp_path):
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    from relocal_ros.data.images import numpy_to_image_msg
    ts = get_typestore(Stores.ROS2_KILTED)
    T = ts.types
    f = make_frames()[0]

    def header(sec, ns):
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=ns), frame_id="c")

    out = tmp_path / "skew"
    with Writer(out, version=9) as w:
        c = w.add_connection(DEFAULT_TOPICS.color, "sensor_msgs/msg/Image", typestore=ts)
        d = w.add_connection(DEFAULT_TOPICS.depth, "sensor_msgs/msg/Image", typestore=ts)
        info = w.add_connection(DEFAULT_TOPICS.color_info, "sensor_msgs/msg/CameraInfo", typestore=ts)
        from relocal_ros.data.bags import _camera_info
        w.write(info, 10**9, ts.serialize_cdr(_camera_info(T, header(1, 0), INTR), "sensor_msgs/msg/CameraInfo"))
        for k, (sec, ns) in enumerate([(1, 0), (2, 0)]):
            w.write(c, sec * 10**9 + ns, ts.serialize_cdr(numpy_to_image_msg(f.rgb, "rgb8", header(sec, ns),
                                                                             T["sensor_msgs/msg/Image"]),
                                                          "sensor_msgs/msg/Image"))
        mm = np.full((H, W), 1500, np.uint16)
        for sec, ns in [(1, 15_000_000), (2, 25_000_000)]:  # 15 ms: paired; 25 ms: beyond the 20 ms tolerance
            w.write(d, sec * 10**9 + ns, ts.serialize_cdr(numpy_to_image_msg(mm, "16UC1", header(sec, ns),
                                                                             T["sensor_msgs/msg/Image"]),
                                                          "sensor_msgs/msg/Image"))
    src = BagSource(out)
    np.testing.assert_allclose(src[0].depth, 1.5)
    assert src[1].depth is None and src[0].pose is None


def test_missing_camera_info_names_the_topic(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from relocal_ros.data.images import numpy_to_image_msg
    ts = get_typestore(Stores.ROS2_KILTED)
    T = ts.types
    out = tmp_path / "noinfo"
    hdr = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="c")
    with Writer(out, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        c = w.add_connection(DEFAULT_TOPICS.color, "sensor_msgs/msg/Image", typestore=ts)
        w.write(c, 10**9, ts.serialize_cdr(numpy_to_image_msg(np.zeros((H, W, 3), np.uint8), "rgb8", hdr,
                                                              T["sensor_msgs/msg/Image"]), "sensor_msgs/msg/Image"))
    with pytest.raises(BagReadError, match="no camera_info on /camera/camera/color/camera_info"):
        BagSource(out)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_or_corrupt_bag_raises_bag_read_error(tmp_path, storage):
    out = write_bag(make_frames(), tmp_path / "bag", storage=storage)
    data_file = out / ("bag.mcap" if storage == "mcap" else "bag.db3")
    full = data_file.read_bytes()
    data_file.write_bytes(full[: len(full) // 2])
    with pytest.raises(BagReadError, match="bag"):
        src = BagSource(out)
        list(src)  # some damage only shows when the images are read
    data_file.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(BagReadError):
        BagSource(out)
    with pytest.raises(BagReadError):
        BagSource(data_file)  # the storage file alone


def test_non_bag_paths_raise_bag_read_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not a bag")
    (tmp_path / "empty").mkdir()
    (tmp_path / "fake.mcap").write_bytes(b"\x89MCAP0\r\n" + b"\x00" * 40)
    for path in ("notes.txt", "empty", "fake.mcap", "missing.db3"):
        with pytest.raises(BagReadError, match=str(tmp_path / path)):
            BagSource(tmp_path / path)


def test_write_rejects_bad_input(tmp_path):
    frames = make_frames()
    with pytest.raises(ValueError, match="storage"):
        write_bag(frames, tmp_path / "a", storage="rosbag1")
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError):
        write_bag(frames, tmp_path / "exists")
    bad = make_frames()[:1]
    bad[0].pose = np.diag([2.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="not a rigid"):
        write_bag(bad, tmp_path / "b")
    assert not (tmp_path / "b").exists()
    with pytest.raises(ValueError, match="no frames"):
        write_bag([], tmp_path / "c")


def test_real_tum_frames_round_trip(tum_rpy, tmp_path):
    from relocal_ros.data.sources import open_source
    tum = open_source(tum_rpy)
    frames = [tum[i] for i in range(4)]
    out = write_bag(frames, tmp_path / "tum", storage="sqlite3")
    src = BagSource(out)
    assert [f.stamp for f in src] == [f.stamp for f in frames]  # e.g. 1305031102.175304 survives exactly
    for ref, got in zip(frames, src):
        assert np.array_equal(got.rgb, ref.rgb) and got.intrinsics == ref.intrinsics
        valid = np.isfinite(ref.depth) & (ref.depth > 0)
        np.testing.assert_array_equal(got.depth > 0, valid)
        assert np.abs(got.depth[valid] - ref.depth[valid]).max() <= 0.0005 + 1e-6  # TUM's 0.2 mm -> bag's 1 mm
        if ref.pose is None:
            assert got.pose is None
        else:
            np.testing.assert_allclose(got.pose, ref.pose, atol=1e-9)
