"""sensor_msgs/Image <-> numpy with real rclpy and rosbags message classes."""
import array
import sys
import types

import numpy as np
import pytest

from relocal_ros.data import images
from relocal_ros.data.images import (ImageFormatError, UnsupportedEncodingError, depth_from_msg, image_msg_to_numpy,
                                     numpy_to_image_msg, rgb_from_msg)

Image = pytest.importorskip("sensor_msgs.msg", reason="ROS 2 sensor_msgs (PyPI wheels) not installed").Image
rng = np.random.default_rng(7)
H, W = 5, 7

ARRAYS = {
    "rgb8": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
    "bgr8": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
    "rgba8": rng.integers(0, 256, (H, W, 4), dtype=np.uint8),
    "bgra8": rng.integers(0, 256, (H, W, 4), dtype=np.uint8),
    "8UC3": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
    "mono8": rng.integers(0, 256, (H, W), dtype=np.uint8),
    "8UC1": rng.integers(0, 256, (H, W), dtype=np.uint8),
    "16UC1": rng.integers(0, 65536, (H, W), dtype=np.uint16),
    "mono16": rng.integers(0, 65536, (H, W), dtype=np.uint16),
    "32FC1": rng.uniform(-1, 10, (H, W)).astype(np.float32),
}


@pytest.mark.parametrize("encoding", sorted(ARRAYS))
def test_round_trip_every_encoding_with_rclpy_messages(encoding):
    arr = ARRAYS[encoding]
    msg = numpy_to_image_msg(arr, encoding)
    assert isinstance(msg, Image)
    assert (msg.height, msg.width, msg.encoding) == (H, W, encoding)
    assert msg.step == W * arr.itemsize * (arr.shape[2] if arr.ndim == 3 else 1)
    assert len(msg.data) == msg.step * H
    back, enc = image_msg_to_numpy(msg)
    assert enc == encoding and back.dtype == arr.dtype and np.array_equal(back, arr)
    back[...] = 0  # the result is writable and does not alias the message's buffer
    assert np.array_equal(image_msg_to_numpy(msg)[0], arr)


def test_rgb_from_msg_orders_channels():
    ref = ARRAYS["rgb8"]
    assert np.array_equal(rgb_from_msg(numpy_to_image_msg(ref, "rgb8")), ref)
    assert np.array_equal(rgb_from_msg(numpy_to_image_msg(ref[:, :, ::-1].copy(), "bgr8")), ref)
    assert np.array_equal(rgb_from_msg(numpy_to_image_msg(ref[:, :, ::-1].copy(), "8UC3")), ref)  # read as BGR
    rgba = np.dstack([ref, np.full((H, W), 9, np.uint8)])
    assert np.array_equal(rgb_from_msg(numpy_to_image_msg(rgba, "rgba8")), ref)
    bgra = np.dstack([ref[:, :, ::-1], np.full((H, W), 9, np.uint8)])
    assert np.array_equal(rgb_from_msg(numpy_to_image_msg(bgra, "bgra8")), ref)
    grey = rgb_from_msg(numpy_to_image_msg(ARRAYS["mono8"], "mono8"))
    assert grey.shape == (H, W, 3) and all(np.array_equal(grey[:, :, c], ARRAYS["mono8"]) for c in range(3))


def test_depth_units_and_invalid_values():
    mm = np.array([[0, 1, 1234, 65535]], dtype=np.uint16)
    d = depth_from_msg(numpy_to_image_msg(mm, "16UC1"))
    assert d.dtype == np.float32
    np.testing.assert_allclose(d, [[0.0, 0.001, 1.234, 65.535]], rtol=1e-6)
    m = np.array([[1.5, np.nan, np.inf, -np.inf, -2.0, 0.0]], dtype=np.float32)
    d = depth_from_msg(numpy_to_image_msg(m, "32FC1"))
    np.testing.assert_array_equal(d, [[1.5, 0, 0, 0, 0, 0]])
    with pytest.raises(UnsupportedEncodingError, match="rgb8"):
        depth_from_msg(numpy_to_image_msg(ARRAYS["rgb8"], "rgb8"))
    with pytest.raises(UnsupportedEncodingError, match="16UC1"):
        rgb_from_msg(numpy_to_image_msg(ARRAYS["16UC1"], "16UC1"))


def test_step_padding_is_skipped():
    arr = ARRAYS["rgb8"]
    pad = 5
    rows = np.zeros((H, W * 3 + pad), np.uint8)
    rows[:, :W * 3] = arr.reshape(H, -1)
    rows[:, W * 3:] = 255  # garbage in the padding must not leak into the image
    msg = Image(height=H, width=W, encoding="rgb8", is_bigendian=0, step=W * 3 + pad,
                data=array.array("B", rows.tobytes()))
    assert np.array_equal(rgb_from_msg(msg), arr)


def test_big_endian_16uc1():
    mm = np.array([[1, 256, 1000, 65534]], dtype=np.uint16)
    msg = Image(height=1, width=4, encoding="16UC1", is_bigendian=1, step=8,
                data=array.array("B", mm.astype(">u2").tobytes()))
    back, _ = image_msg_to_numpy(msg)
    assert back.dtype == np.uint16 and back.dtype.isnative
    assert np.array_equal(back, mm)
    np.testing.assert_allclose(depth_from_msg(msg), mm / 1000.0, rtol=1e-6)


def test_rosbags_message_dataclasses_work_too():
    from rosbags.typesys import Stores, get_typestore
    T = get_typestore(Stores.ROS2_KILTED).types
    header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=3, nanosec=4), frame_id="cam")
    msg = numpy_to_image_msg(ARRAYS["bgr8"], "bgr8", header, msg_type=T["sensor_msgs/msg/Image"])
    assert type(msg).__name__ == "sensor_msgs__msg__Image" and msg.header.frame_id == "cam"
    assert np.array_equal(rgb_from_msg(msg), ARRAYS["bgr8"][:, :, ::-1])
    with pytest.raises(ValueError, match="header"):
        numpy_to_image_msg(ARRAYS["bgr8"], "bgr8", None, msg_type=T["sensor_msgs/msg/Image"])


def _msg(**kw):
    fields = dict(height=2, width=3, encoding="mono8", is_bigendian=0, step=3, data=array.array("B", bytes(6)))
    fields.update(kw)
    return Image(**fields)


def test_errors_name_the_problem():
    with pytest.raises(UnsupportedEncodingError, match=r"'yuv422'.*supported: rgb8, bgr8"):
        image_msg_to_numpy(_msg(encoding="yuv422"))
    with pytest.raises(ImageFormatError, match="step 2 is smaller"):
        image_msg_to_numpy(_msg(step=2))
    with pytest.raises(ImageFormatError, match="data has 5 bytes, expected step\\*height"):
        image_msg_to_numpy(_msg(data=array.array("B", bytes(5))))
    with pytest.raises(ImageFormatError, match="empty image"):
        image_msg_to_numpy(_msg(height=0, width=0, step=0, data=array.array("B")))
    with pytest.raises(ImageFormatError, match="dtype uint16, got float32"):
        numpy_to_image_msg(np.zeros((2, 2), np.float32), "16UC1")
    with pytest.raises(ImageFormatError, match="HxWx3"):
        numpy_to_image_msg(np.zeros((2, 2), np.uint8), "rgb8")
    with pytest.raises(ImageFormatError, match="empty"):
        numpy_to_image_msg(np.zeros((0, 4, 3), np.uint8), "rgb8")
    with pytest.raises(UnsupportedEncodingError):
        numpy_to_image_msg(np.zeros((2, 2), np.uint8), "bayer_rggb8")
    assert issubclass(UnsupportedEncodingError, ValueError) and issubclass(ImageFormatError, ValueError)


@pytest.fixture
def fresh_bridge_probe():
    images._working_cv_bridge.cache_clear()
    yield
    images._working_cv_bridge.cache_clear()


def test_broken_cv_bridge_is_detected_and_not_used(monkeypatch, fresh_bridge_probe):
    """The PyPI cv-bridge imports but fails on numpy 2; the probe must fall back to the numpy path."""
    class BrokenBridge:
        def imgmsg_to_cv2(self, msg, desired_encoding="passthrough"):
            raise AttributeError("'numpy.ndarray' object has no attribute 'tostring'")

    class WrongBridge:  # converts, but wrongly (e.g. ignores step or byte order)
        def imgmsg_to_cv2(self, msg, desired_encoding="passthrough"):
            return np.zeros((msg.height, msg.width), np.uint8)

    for bridge in (BrokenBridge, WrongBridge):
        monkeypatch.setitem(sys.modules, "cv_bridge", types.SimpleNamespace(CvBridge=bridge))
        images._working_cv_bridge.cache_clear()
        assert images._working_cv_bridge() is None
        back, _ = image_msg_to_numpy(numpy_to_image_msg(ARRAYS["rgb8"], "rgb8"))
        assert np.array_equal(back, ARRAYS["rgb8"])

    class GoodBridge:  # a working bridge is used, and gives the same arrays
        calls = 0

        def imgmsg_to_cv2(self, msg, desired_encoding="passthrough"):
            GoodBridge.calls += 1
            return images._numpy_from_msg(msg)[0]

    monkeypatch.setitem(sys.modules, "cv_bridge", types.SimpleNamespace(CvBridge=GoodBridge))
    images._working_cv_bridge.cache_clear()
    assert images._working_cv_bridge() is not None
    before = GoodBridge.calls
    back, _ = image_msg_to_numpy(numpy_to_image_msg(ARRAYS["16UC1"], "16UC1"))
    assert GoodBridge.calls == before + 1 and np.array_equal(back, ARRAYS["16UC1"])
