"""sensor_msgs/Image <-> numpy.

Works with rclpy message classes and with rosbags message dataclasses alike: only the fields height, width,
encoding, is_bigendian, step and data are read (duck typing), so nothing here imports ROS at module level.

Encodings:
  colour  rgb8, bgr8, rgba8, bgra8 (alpha dropped by rgb_from_msg), mono8 / 8UC1 (grey, replicated to RGB),
          8UC3 (no channel order given; read as bgr8 because that is what OpenCV / cv_bridge "passthrough" send)
  depth   16UC1 / mono16 (millimetres, the RealSense and OpenNI convention), 32FC1 (metres)

cv_bridge is used for rclpy messages when it imports *and* converts a probe image exactly like the hand-written
path; the PyPI cv-bridge (ROS 1 era) fails with numpy 2, so on such installs the numpy path is used.
"""
from __future__ import annotations

import array
import sys
from functools import lru_cache

import numpy as np


class UnsupportedEncodingError(ValueError):
    """The image encoding is not one this module converts."""


class ImageFormatError(ValueError):
    """The message's size fields and data disagree (bad step, short data, empty image) or the array is wrong."""


# encoding -> (numpy dtype, channels)
_LAYOUTS = {
    "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1), "8UC1": (np.uint8, 1), "8UC3": (np.uint8, 3),
    "mono16": (np.uint16, 1), "16UC1": (np.uint16, 1), "32FC1": (np.float32, 1),
}
SUPPORTED_ENCODINGS = tuple(_LAYOUTS)
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "8UC3")
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
MILLIMETRE = 0.001


def _layout(encoding: str, allowed=SUPPORTED_ENCODINGS) -> tuple[type, int]:
    if encoding not in allowed:
        raise UnsupportedEncodingError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(allowed)}")
    return _LAYOUTS[encoding]


def _raw_bytes(data) -> np.ndarray:
    """The message's data as a flat uint8 array without copying (bytes, array.array, numpy or a list)."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype.itemsize == 1 else np.frombuffer(data.tobytes(), np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:  # a plain list of ints
        return np.asarray(data, dtype=np.uint8)


def _checked(msg) -> tuple[str, type, int, np.ndarray]:
    """(encoding, dtype, channels, H x step uint8 rows) after checking the size fields against the data."""
    encoding = str(msg.encoding)
    dtype, channels = _layout(encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageFormatError(f"empty image: {width}x{height} ({encoding})")
    row_bytes = width * channels * np.dtype(dtype).itemsize
    if step < row_bytes:
        raise ImageFormatError(f"step {step} is smaller than one row of {width} {encoding} pixels ({row_bytes} bytes)")
    buf = _raw_bytes(msg.data)
    if buf.size != step * height:
        raise ImageFormatError(f"data has {buf.size} bytes, expected step*height = {step}*{height} = {step * height} "
                               f"({width}x{height} {encoding})")
    return encoding, dtype, channels, buf.reshape(height, step)


def _numpy_from_msg(msg) -> tuple[np.ndarray, str]:
    encoding, dtype, channels, rows = _checked(msg)
    height, width = rows.shape[0], int(msg.width)
    rows = rows[:, :width * channels * np.dtype(dtype).itemsize]  # drop the row padding
    order = ">" if msg.is_bigendian else "<"
    arr = np.ascontiguousarray(rows).view(np.dtype(dtype).newbyteorder(order)).astype(dtype, copy=False)
    if arr.base is not None or not arr.flags.writeable:
        arr = arr.copy()  # the result must own its memory: the message buffer may be read-only or reused
    shape = (height, width) if channels == 1 else (height, width, channels)
    return arr.reshape(shape), encoding


@lru_cache(maxsize=1)
def _working_cv_bridge():
    """A CvBridge instance when cv_bridge imports and converts a probe exactly like the numpy path, else None."""
    try:
        from cv_bridge import CvBridge
        from sensor_msgs.msg import Image
        bridge = CvBridge()
        probe = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
        depth = np.array([[1, 2, 3], [4000, 5000, 65535]], dtype=np.uint16)
        for arr, enc in ((probe, "rgb8"), (depth, "16UC1")):
            msg = numpy_to_image_msg(arr, enc, msg_type=Image)
            got = bridge.imgmsg_to_cv2(msg, desired_encoding="passthrough")
            if got.dtype != arr.dtype or not np.array_equal(got, arr):
                return None
        return bridge
    except Exception:  # ImportError, numpy-2 AttributeErrors, type-code errors: all mean "do not use it"
        return None


def _is_rclpy_image(msg) -> bool:
    mod = sys.modules.get("sensor_msgs.msg")
    return mod is not None and isinstance(msg, getattr(mod, "Image", ()))


def image_msg_to_numpy(msg) -> tuple[np.ndarray, str]:
    """(array, encoding): HxW for one channel, HxWxC otherwise, in the encoding's dtype and native byte order."""
    if _is_rclpy_image(msg) and (bridge := _working_cv_bridge()) is not None:
        encoding = _checked(msg)[0]  # our own clear errors for bad encodings and sizes, whichever path converts
        return np.array(bridge.imgmsg_to_cv2(msg, desired_encoding="passthrough")), encoding
    return _numpy_from_msg(msg)


def rgb_from_msg(msg) -> np.ndarray:
    """HxWx3 uint8 RGB from any colour encoding (see the module docstring)."""
    _layout(str(msg.encoding), COLOR_ENCODINGS)
    arr, encoding = image_msg_to_numpy(msg)
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if encoding in ("bgr8", "bgra8", "8UC3"):
        return np.ascontiguousarray(arr[:, :, 2::-1])
    return np.ascontiguousarray(arr[:, :, :3])


def depth_from_msg(msg, unit_m: float = MILLIMETRE) -> np.ndarray:
    """HxW float32 metres; 16UC1/mono16 counts are multiplied by unit_m (millimetres by default), 32FC1 is metres.
    Invalid depth (0, NaN, inf, negative) becomes 0."""
    _layout(str(msg.encoding), DEPTH_ENCODINGS)
    arr, encoding = image_msg_to_numpy(msg)
    if encoding == "32FC1":
        depth = arr.astype(np.float32, copy=True)
    else:
        depth = arr.astype(np.float32) * np.float32(unit_m)
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    return depth


def numpy_to_image_msg(arr: np.ndarray, encoding: str, header=None, msg_type=None):
    """A sensor_msgs/Image holding arr (dtype and channel count must match the encoding; no silent casts).

    msg_type defaults to rclpy's sensor_msgs.msg.Image; pass a rosbags class (typestore.types[
    'sensor_msgs/msg/Image']) together with a header of that typestore to build a rosbags message.
    Rows are packed (step = width * bytes per pixel), data in this machine's byte order."""
    dtype, channels = _layout(encoding)
    arr = np.asarray(arr)
    if arr.size == 0:
        raise ImageFormatError(f"empty array {arr.shape} for a {encoding} image")
    if channels == 1 and arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    want_ndim = 2 if channels == 1 else 3
    if arr.ndim != want_ndim or (channels > 1 and arr.shape[2] != channels):
        want = "HxW" if channels == 1 else f"HxWx{channels}"
        raise ImageFormatError(f"{encoding} needs a {want} array, got shape {arr.shape}")
    if arr.dtype != dtype:
        raise ImageFormatError(f"{encoding} needs dtype {np.dtype(dtype).name}, got {arr.dtype.name}")
    arr = np.ascontiguousarray(arr, dtype=np.dtype(dtype).newbyteorder("="))
    height, width = arr.shape[:2]
    fields = dict(height=height, width=width, encoding=encoding, is_bigendian=int(sys.byteorder == "big"),
                  step=width * channels * arr.dtype.itemsize)
    raw = arr.tobytes()
    if msg_type is None:
        from sensor_msgs.msg import Image as msg_type
    if msg_type.__module__.startswith("sensor_msgs"):  # rclpy: array.array('B') is its fast path for uint8[]
        msg = msg_type(data=array.array("B", raw), **fields)
        if header is not None:
            msg.header = header
        return msg
    if header is None:
        raise ValueError("a header is required when building a non-rclpy (e.g. rosbags) Image message")
    return msg_type(header=header, data=np.frombuffer(raw, dtype=np.uint8), **fields)
