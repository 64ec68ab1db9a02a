"""image_transport `compressed` (JPEG/PNG) and `compressedDepth` (PNG behind its 12-byte ConfigHeader): the
decoders, the bag writer/reader (a robot's bag holds only those topics), the CLI's one-line errors for bags it
cannot read, and mapping + localizing from a compressed TUM bag with the raw bag's accuracy."""
import struct
import subprocess
import sys
import types

import numpy as np
import pytest
import yaml

from relocal_ros.data import images as im
from relocal_ros.data.bags import DEFAULT_TOPICS, BagSource, bag_from_dataset, write_bag
from relocal_ros.data.images import ImageFormatError, UnsupportedEncodingError, depth_from_msg, rgb_from_msg
from test_bags import INTR, ListSource, make_frames

REPO_PY = sys.executable


def cmsg(fmt, data):
    return types.SimpleNamespace(format=fmt, data=np.frombuffer(data, np.uint8) if isinstance(data, bytes) else data)


def smooth_rgb(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 3, y * 4, (x + y) * 2], -1) % 256
    return np.clip(base + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)


def test_jpeg_and_png_colour_decode_to_rgb():
    rgb = smooth_rgb()
    fmt, data = im.compress_rgb(rgb, "png")
    assert fmt == "rgb8; png compressed bgr8"
    assert np.array_equal(rgb_from_msg(cmsg(fmt, data)), rgb)          # lossless, and channel order is RGB
    fmt, data = im.compress_rgb(rgb, "jpeg", 95)
    got = rgb_from_msg(cmsg(fmt, data))
    assert got.shape == rgb.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - rgb).mean() < 4.0
    # red stays red: a BGR/RGB mix-up would swap channel means
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 200
    got = rgb_from_msg(cmsg(*im.compress_rgb(red, "jpeg")))
    assert got[..., 0].mean() > 180 and got[..., 2].mean() < 20


def test_grey_jpeg_is_replicated_to_rgb():
    import cv2
    grey = smooth_rgb()[..., 0]
    ok, data = cv2.imencode(".jpg", grey)
    got = rgb_from_msg(cmsg("mono8; jpeg compressed mono8", data.tobytes()))
    assert got.shape == (48, 64, 3) and np.array_equal(got[..., 0], got[..., 2])


def test_compressed_depth_16uc1_has_the_transport_header_and_is_exact():
    mm = np.random.default_rng(1).integers(0, 8000, (48, 64)).astype(np.uint16)
    fmt, data = im.compress_depth_mm(mm)
    assert fmt == "16UC1; compressedDepth png"
    # compressed_depth_image_transport::ConfigHeader: int32 format (INV_DEPTH = 0), float32 depthParam[2]
    fmt_enum, a, b = struct.unpack("<iff", data[:12])
    assert fmt_enum == 0 and data[12:20] == im.PNG_SIGNATURE
    depth = depth_from_msg(cmsg(fmt, data))
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth, mm * 0.001, atol=1e-6)
    # the same PNG without the header (some recorders strip it) and the older "…; compressedDepth" format
    np.testing.assert_allclose(depth_from_msg(cmsg("16UC1; compressedDepth", data[12:])), mm * 0.001, atol=1e-6)


def test_compressed_depth_32fc1_inverse_depth_quantization():
    """32FC1 goes through compressed_depth_image_transport's inverse-depth quantization: depth = A / (q - B),
    A = Q (Q + 1), B = 1 - A / depth_max (defaults Q = 100, depth_max = 10 m); q = 0 is no measurement."""
    rng = np.random.default_rng(2)
    d = rng.uniform(0.3, 9.5, (48, 64)).astype(np.float32)
    d[0, :4] = [0.0, np.nan, 12.0, -1.0]
    fmt, data = im.compress_depth_inverse(d)
    _, a, b = struct.unpack("<iff", data[:12])
    assert a == pytest.approx(100 * 101) and b == pytest.approx(1 - 100 * 101 / 10.0)
    got = depth_from_msg(cmsg(fmt, data))
    np.testing.assert_array_equal(got[0, :4], 0.0)            # invalid and beyond depth_max -> no measurement
    ok = np.ones_like(d, bool)
    ok[0, :4] = False
    step = d[ok] ** 2 / a                                      # one quantization step at that depth
    assert np.all(np.abs(got[ok] - d[ok]) <= step * 1.01 + 1e-6)
    # a hand-built message as the C++ codec writes it decodes to the same depths
    q = np.where(d[ok] < 10.0, a / d[ok] + b, 0).astype(np.uint16)
    np.testing.assert_allclose(a / (q.astype(np.float64) - b), got[ok], rtol=1e-5)


@pytest.mark.parametrize("fmt,data,err", [
    ("16UC1; compressedDepth rvl", b"\x00" * 40, UnsupportedEncodingError),
    ("16UC1; compressedDepth png", b"\x00" * 12 + b"not a png at all", ImageFormatError),
    ("16UC1; compressedDepth png", b"", ImageFormatError),
])
def test_bad_compressed_depth_is_a_clear_value_error(fmt, data, err):
    with pytest.raises(err):
        depth_from_msg(cmsg(fmt, data))


def test_bad_compressed_colour_is_a_clear_value_error():
    with pytest.raises(UnsupportedEncodingError, match="unsupported compressed image format"):
        rgb_from_msg(cmsg("rgb8; theora", b"\x00" * 10))
    with pytest.raises(ImageFormatError, match="cannot decode"):
        rgb_from_msg(cmsg("rgb8; jpeg compressed bgr8", b"\xff\xd8\xff" + b"\x00" * 50))
    fmt, data = im.compress_rgb(smooth_rgb(), "jpeg")
    with pytest.raises(ValueError):
        rgb_from_msg(cmsg(fmt, data[: len(data) // 3]))          # truncated JPEG: refused, not half an image
    with pytest.raises(UnsupportedEncodingError, match="depth, not colour"):
        rgb_from_msg(cmsg("16UC1; compressedDepth png", data))


def test_rclpy_compressed_image_messages_decode():
    pytest.importorskip("sensor_msgs.msg", reason="rclpy messages not installed")
    import array

    from sensor_msgs.msg import CompressedImage
    rgb = smooth_rgb()
    fmt, data = im.compress_rgb(rgb, "png")
    msg = CompressedImage(format=fmt, data=array.array("B", data))
    assert np.array_equal(rgb_from_msg(msg), rgb)
    mm = np.full((48, 64), 1234, np.uint16)
    fmt, data = im.compress_depth_mm(mm)
    np.testing.assert_allclose(depth_from_msg(CompressedImage(format=fmt, data=array.array("B", data))), 1.234,
                               atol=1e-6)


# ------------------------------------------------------------------------------------------------------ bags

@pytest.fixture(scope="module")
def compressed_bag(tmp_path_factory):
    frames = make_frames()
    for f in frames:
        f.rgb = smooth_rgb(seed=hash(f.stamp) % 1000)
    out = tmp_path_factory.mktemp("cbag") / "bag"
    bag_from_dataset(ListSource(frames), out, compressed=True)
    return frames, out


def test_compressed_bag_holds_only_the_transport_topics(compressed_bag):
    _, out = compressed_bag
    meta = yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    topics = {t["topic_metadata"]["name"]: (t["topic_metadata"]["type"], t["message_count"])
              for t in meta["topics_with_message_count"]}
    assert topics == {
        DEFAULT_TOPICS.color + "/compressed": ("sensor_msgs/msg/CompressedImage", 5),
        DEFAULT_TOPICS.depth + "/compressedDepth": ("sensor_msgs/msg/CompressedImage", 4),
        DEFAULT_TOPICS.color_info: ("sensor_msgs/msg/CameraInfo", 5),
        DEFAULT_TOPICS.depth_info: ("sensor_msgs/msg/CameraInfo", 4),
        DEFAULT_TOPICS.ground_truth: ("geometry_msgs/msg/PoseStamped", 4),
        DEFAULT_TOPICS.tf_static: ("tf2_msgs/msg/TFMessage", 1)}


def test_compressed_bag_is_read_without_options(compressed_bag):
    frames, out = compressed_bag
    with BagSource(out) as src:
        assert src.topics.color == DEFAULT_TOPICS.color + "/compressed"
        assert src.topics.depth == DEFAULT_TOPICS.depth + "/compressedDepth"
        got = list(src)
    assert [f.stamp for f in got] == [f.stamp for f in frames]
    for ref, f in zip(frames, got):
        assert f.rgb.shape == ref.rgb.shape and np.abs(f.rgb.astype(int) - ref.rgb).mean() < 4.0
        assert f.intrinsics == INTR
        if ref.depth is None:
            assert f.depth is None
        else:   # PNG is lossless: the bag's millimetres exactly
            np.testing.assert_array_equal(f.depth[0, :5], 0.0)
            assert np.abs(f.depth[1:] - ref.depth[1:]).max() <= 0.0005 + 1e-6
        if ref.pose is not None:
            np.testing.assert_allclose(f.pose, ref.pose, atol=1e-9)


def _bag_with(tmp_path, name, writer_fn):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    ts = get_typestore(Stores.ROS2_KILTED)
    out = tmp_path / name
    with Writer(out, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        writer_fn(w, ts)
    return out


def _unreadable_bags(tmp_path):
    """Bags `relocal build-map` cannot use, each for another reason."""
    from relocal_ros.data.bags import _camera_info
    bags = {}
    good = write_bag(make_frames(), tmp_path / "good", storage="mcap")
    corrupt = tmp_path / "corrupt"
    import shutil
    shutil.copytree(good, corrupt)
    data = next(corrupt.glob("*.mcap"))
    data.write_bytes(data.read_bytes()[: len(data.read_bytes()) // 3])
    bags["corrupt"] = corrupt
    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(b"\x89MCAP0\r\n" + b"\x00" * 100)
    bags["garbage"] = garbage

    def no_image(w, ts):
        T = ts.types
        c = w.add_connection(DEFAULT_TOPICS.color_info, "sensor_msgs/msg/CameraInfo", typestore=ts)
        hdr = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="c")
        w.write(c, 10**9, ts.serialize_cdr(_camera_info(T, hdr, INTR), "sensor_msgs/msg/CameraInfo"))
    bags["no image topic"] = _bag_with(tmp_path, "noimage", no_image)

    def bad_encoding(w, ts, encoding="yuv422", compressed=False):
        T = ts.types
        hdr = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="c")
        info = w.add_connection(DEFAULT_TOPICS.color_info, "sensor_msgs/msg/CameraInfo", typestore=ts)
        gt = w.add_connection(DEFAULT_TOPICS.ground_truth, "geometry_msgs/msg/PoseStamped", typestore=ts)
        w.write(info, 10**9, ts.serialize_cdr(_camera_info(T, hdr, INTR), "sensor_msgs/msg/CameraInfo"))
        pose = T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](0.0, 0.0, 0.0),
                                           orientation=T["geometry_msgs/msg/Quaternion"](0.0, 0.0, 0.0, 1.0))
        w.write(gt, 10**9, ts.serialize_cdr(T["geometry_msgs/msg/PoseStamped"](header=hdr, pose=pose),
                                            "geometry_msgs/msg/PoseStamped"))
        if compressed:
            c = w.add_connection(DEFAULT_TOPICS.color + "/compressed", "sensor_msgs/msg/CompressedImage", typestore=ts)
            msg = T["sensor_msgs/msg/CompressedImage"](header=hdr, format="rgb8; theora",
                                                       data=np.zeros(64, np.uint8))
            w.write(c, 10**9, ts.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"))
        else:
            c = w.add_connection(DEFAULT_TOPICS.color, "sensor_msgs/msg/Image", typestore=ts)
            msg = T["sensor_msgs/msg/Image"](header=hdr, height=48, width=64, encoding=encoding, is_bigendian=0,
                                             step=128, data=np.zeros(48 * 128, np.uint8))
            w.write(c, 10**9, ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    bags["unknown encoding"] = _bag_with(tmp_path, "yuv", bad_encoding)
    bags["unknown compressed format"] = _bag_with(tmp_path, "theora",
                                                  lambda w, ts: bad_encoding(w, ts, compressed=True))
    return bags


def test_every_unreadable_bag_is_one_line_and_exit_code_2(tmp_path, capsys):
    from relocal_ros.cli import main
    bags = _unreadable_bags(tmp_path)
    for why, bag in bags.items():
        code = main(["--quiet", "build-map", str(bag), "--out", str(tmp_path / f"map_{bag.name}")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, (why, err)
        assert len(err) == 1 and err[0].startswith("relocal build-map: error: "), (why, err)
        assert str(bag) in err[0] and "Traceback" not in err[0], (why, err)
    # and through a real process: no traceback on stderr
    p = subprocess.run([REPO_PY, "-m", "relocal_ros.cli", "--quiet", "build-map", str(bags["unknown encoding"]), "--out",
                        str(tmp_path / "m")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "yuv422" in p.stderr


def test_replay_plays_a_compressed_bag_as_recorded(compressed_bag):
    """The live-graph replay reads a robot's recording (compressed topics only) without options."""
    from relocal_ros.evaluation.replay import _read_bag
    frames, out = compressed_bag
    messages, topics = _read_bag(out, DEFAULT_TOPICS)
    assert topics.color == DEFAULT_TOPICS.color + "/compressed"
    assert topics.depth == DEFAULT_TOPICS.depth + "/compressedDepth"
    colour = [m for m in messages if m[1] == topics.color]
    assert len(colour) == len(frames) and all(m[2] == "sensor_msgs/msg/CompressedImage" for m in colour)
    assert [m[0] for m in messages] == sorted(m[0] for m in messages)


def _copy_bag_spoiling_one_image(src, out, index: int):
    """A message-for-message copy of the bag at src whose index-th colour image carries an encoding no reader knows
    (what a recorder's misconfigured camera or a damaged message looks like to a reader)."""
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    ts = get_typestore(Stores.ROS2_KILTED)
    seen = 0
    with Reader(src) as r, Writer(out, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {c.id: w.add_connection(c.topic, c.msgtype, typestore=ts,
                                        offered_qos_profiles=getattr(c.ext, "offered_qos_profiles", ()))
                 for c in r.connections}
        for c, t, raw in r.messages():
            if c.topic == DEFAULT_TOPICS.color:
                if seen == index:
                    msg = ts.deserialize_cdr(raw, c.msgtype)
                    msg.encoding = "yuv422"
                    raw = ts.serialize_cdr(msg, c.msgtype)
                seen += 1
            w.write(conns[c.id], t, raw)
    assert seen > index
    return out


def test_one_undecodable_image_in_a_bag_costs_that_frame_not_the_map_or_the_run(tmp_path, capsys, caplog):
    """A recording with one bad colour message still maps (that frame skipped, counted, said why) and localizes
    (that image refused and counted, every other one answered or refused on its own), as a dataset folder with one
    corrupt PNG does; a bag with no readable image at all stays a one-line error."""
    from relocal_ros.cli import main
    from relocal_ros.data.sources import open_source
    from relocal_ros.data.synth import generate_scene
    from relocal_ros.mapping.keyframe_map import KeyframeMap
    scene = generate_scene(tmp_path / "scene", 6, width=160, height=120, n_map=20, n_query=6, workers=1,
                           progress=False)
    good_map = write_bag(open_source(scene / "seq-01"), tmp_path / "map_good")
    good_q = write_bag(open_source(scene / "seq-02"), tmp_path / "q_good")
    map_bag = _copy_bag_spoiling_one_image(good_map, tmp_path / "map_bag", 4)
    query_bag = _copy_bag_spoiling_one_image(good_q, tmp_path / "query_bag", 2)
    assert len(BagSource(map_bag)) == 20 and len(BagSource(query_bag)) == 6

    assert main(["--quiet", "build-map", str(map_bag), "--out", str(tmp_path / "map")]) == 0
    assert "1 of 20 frames were unreadable or ill-formed and were skipped" in caplog.text, caplog.text
    assert "frame 4: " + str(map_bag) in caplog.text and "yuv422" in caplog.text, caplog.text
    kmap = KeyframeMap.load(tmp_path / "map")
    spoiled = open_source(scene / "seq-01")[4].stamp
    assert len(kmap) >= 2 and spoiled not in {k.stamp for k in kmap.keyframes}

    assert main(["--quiet", "localize", str(tmp_path / "map"), str(query_bag), "--out", str(tmp_path / "est.txt")]) == 0
    out = capsys.readouterr().out
    assert "of 6 images" in out and "1 unreadable or failed" in out, out
    assert "image 2 of " + str(query_bag) + " refused" in caplog.text and "yuv422" in caplog.text
    answered = [ln.split()[0] for ln in (tmp_path / "est.txt").read_text().splitlines()]
    assert open_source(scene / "seq-02")[2].stamp not in answered and answered, answered

    # nothing readable at all: the source itself is unusable, and the run ends with an error line and exit code 2
    one = write_bag([open_source(scene / "seq-02")[0]], tmp_path / "one")
    all_bad = _copy_bag_spoiling_one_image(one, tmp_path / "all_bad", 0)
    assert main(["--quiet", "localize", str(tmp_path / "map"), str(all_bad), "--out", str(tmp_path / "e2.txt")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("relocal localize: error: none of the 1 query images could be read") and "yuv422" in last
