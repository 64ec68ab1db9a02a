"""sensor_msgs/Image <-> numpy.

Works with rclpy message classes and with rosbags message dataclasses alike: only the fields height, width,
encoding, is_bigendian, step and data are read (duck typing), so nothing here imports ROS at module level.

Encodings:
  colour  rgb8, bgr8, rgba8, bgra8 (alpha dropped by rgb_from_msg), mono8 / 8UC1 (grey, replicated to RGB),
          8UC3 (no channel order given; read as bgr8 because that is what OpenCV / cv_bridge "passthrough" send)
  depth   16UC1 / mono16 (millimetres, the RealSense and OpenNI convention), 32FC1 (metres)

cv_bridge is used for rclpy messages when it imports *and* converts a probe image exactly like the hand-written
path; the PyPI cv-bridge (ROS 1 era) fails with numpy 2, so on such installs the numpy path is used.

sensor_msgs/CompressedImage (image_transport's `compressed` and `compressedDepth` transports, what robots record)
is decoded with OpenCV by the same rgb_from_msg / depth_from_msg (a message with `format` and no `encoding`):
  compressed       format "<encoding>; jpeg compressed <bgr8|mono8>" or "...; png compressed ..." (or just "jpeg",
                   "png"): colour as OpenCV wrote it (BGR or grey); 16-bit PNG on a depth topic is millimetres
  compressedDepth  format "16UC1; compressedDepth png" (or "...; compressedDepth" from older transports): a 12-byte
                   ConfigHeader (int32 format = INV_DEPTH, float32 depthParam[2]) then a 16-bit PNG; 16UC1 holds
                   millimetres, 32FC1 holds inverse depth q with depth = depthParam[0] / (q - depthParam[1]),
                   q = 0 meaning no measurement (compressed_depth_image_transport's codec). RVL is refused.
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
    """HxWx3 uint8 RGB from any colour encoding, or from a CompressedImage (see the module docstring)."""
    if is_compressed_msg(msg):
        return rgb_from_compressed(msg)
    _layout(str(msg.encoding), COLOR_ENCODINGS)
    arr, encoding = image_msg_to_numpy(msg)
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if encoding in ("bgr8", "bgra8", "8UC3"):
        return np.ascontiguousarray(arr[:, :, 2::-1])
    return np.ascontiguousarray(arr[:, :, :3])


def depth_from_msg(msg, unit_m: float = MILLIMETRE) -> np.ndarray:
    """HxW float32 metres; 16UC1/mono16 counts are multiplied by unit_m (millimetres by default), 32FC1 is metres.
    Invalid depth (0, NaN, inf, negative) becomes 0. A CompressedImage goes to depth_from_compressed."""
    if is_compressed_msg(msg):
        return depth_from_compressed(msg, unit_m)
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


# ------------------------------------------------------------------------------------ compressed (image_transport)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COMPRESSED_DEPTH_HEADER = 12          # compressed_depth_image_transport::ConfigHeader: int32 + float32[2]
INV_DEPTH = 0                          # its compressionFormat enum (UNDEFINED = -1, INV_DEPTH)


def is_compressed_msg(msg) -> bool:
    """A sensor_msgs/CompressedImage (rclpy or rosbags): it has `format` and no `encoding`."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def _compressed_bytes(msg) -> np.ndarray:
    buf = _raw_bytes(msg.data)
    if buf.size == 0:
        raise ImageFormatError(f"empty compressed image (format {str(msg.format)!r})")
    return buf


def _imdecode(buf: np.ndarray, flags: int, what: str) -> np.ndarray:
    import cv2
    img = cv2.imdecode(buf, flags)
    if img is None or img.size == 0:
        raise ImageFormatError(f"{what}: OpenCV cannot decode the {buf.size} bytes (truncated or not an image)")
    return img


def _split_format(fmt: str) -> tuple[str, str]:
    """'rgb8; jpeg compressed bgr8' -> ('rgb8', 'jpeg compressed bgr8'); 'jpeg' -> ('', 'jpeg')."""
    fmt = str(fmt).strip()
    if ";" in fmt:
        enc, rest = fmt.split(";", 1)
        return enc.strip(), rest.strip().lower()
    return "", fmt.lower()


def rgb_from_compressed(msg) -> np.ndarray:
    """HxWx3 uint8 RGB from an image_transport `compressed` message (JPEG or PNG, colour or grey)."""
    import cv2
    enc, rest = _split_format(msg.format)
    if "compresseddepth" in rest or enc in DEPTH_ENCODINGS:
        raise UnsupportedEncodingError(f"compressed image format {str(msg.format)!r} is depth, not colour")
    if rest and not any(k in rest for k in ("jpeg", "jpg", "png")):
        raise UnsupportedEncodingError(f"unsupported compressed image format {str(msg.format)!r}; supported: "
                                       f"jpeg, png (image_transport 'compressed')")
    img = _imdecode(_compressed_bytes(msg), cv2.IMREAD_UNCHANGED, f"compressed image ({msg.format})")
    if img.dtype != np.uint8:
        raise UnsupportedEncodingError(f"compressed colour image decodes to {img.dtype}, expected 8-bit")
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.shape[2] == 4:
        img = img[:, :, :3]
    return np.ascontiguousarray(img[:, :, ::-1])  # OpenCV decodes to BGR


def depth_from_compressed(msg, unit_m: float = MILLIMETRE) -> np.ndarray:
    """HxW float32 metres from image_transport `compressedDepth` (header stripped) or a 16-bit PNG `compressed`
    depth image. Invalid depth becomes 0, as in depth_from_msg."""
    import cv2
    enc, rest = _split_format(msg.format)
    buf = _compressed_bytes(msg)
    if "rvl" in rest:
        raise UnsupportedEncodingError(f"compressedDepth format {str(msg.format)!r}: RVL is not supported, "
                                       f"publish with the png format (parameter format: png)")
    raw = buf.tobytes()
    params = None
    if raw[:8] == PNG_SIGNATURE:  # no header (some recorders strip it)
        png = buf
    elif raw[COMPRESSED_DEPTH_HEADER:COMPRESSED_DEPTH_HEADER + 8] == PNG_SIGNATURE:
        fmt_enum = int(np.frombuffer(raw[:4], "<i4")[0])
        params = np.frombuffer(raw[4:COMPRESSED_DEPTH_HEADER], "<f4").astype(np.float64)
        if fmt_enum != INV_DEPTH:
            raise UnsupportedEncodingError(f"compressedDepth header format {fmt_enum} (expected INV_DEPTH = 0)")
        png = buf[COMPRESSED_DEPTH_HEADER:]
    else:
        raise ImageFormatError(f"compressed depth ({msg.format}): no PNG image after the 12-byte header")
    q = _imdecode(png, cv2.IMREAD_UNCHANGED, f"compressed depth ({msg.format})")
    if q.ndim != 2 or q.dtype != np.uint16:
        raise UnsupportedEncodingError(f"compressed depth ({msg.format}) decodes to {q.dtype} x{q.shape[2:] or 1} "
                                       f"channels, expected one 16-bit channel")
    if enc == "32FC1":
        if params is None:
            raise ImageFormatError("32FC1 compressedDepth without its header: the inverse-depth quantization "
                                   "parameters are unknown")
        a, b = params
        qf = q.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = np.where(q > 0, a / (qf - b), 0.0).astype(np.float32)
    elif enc in ("", "16UC1", "mono16"):
        depth = q.astype(np.float32) * np.float32(unit_m)
    else:
        raise UnsupportedEncodingError(f"unsupported compressed depth encoding {enc!r}; supported: 16UC1, mono16, "
                                       f"32FC1")
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    return depth


def compress_rgb(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 95) -> tuple[str, bytes]:
    """(format string, data) of image_transport `compressed` for an RGB uint8 image (published as rgb8)."""
    import cv2
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageFormatError(f"compress_rgb needs HxWx3 uint8, got {rgb.dtype} {rgb.shape}")
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    if fmt == "jpeg":
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif fmt == "png":
        ok, data = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        raise ValueError(f"compressed format must be jpeg or png, got {fmt!r}")
    if not ok:
        raise ImageFormatError("OpenCV could not encode the image")
    return f"rgb8; {fmt} compressed bgr8", data.tobytes()


def compress_depth_mm(mm: np.ndarray) -> tuple[str, bytes]:
    """(format string, data) of image_transport `compressedDepth` (png) for a uint16 millimetre image: the
    ConfigHeader (INV_DEPTH, depthParam = 0 as the transport leaves them for 16UC1) and a 16-bit PNG."""
    import cv2
    if mm.ndim != 2 or mm.dtype != np.uint16:
        raise ImageFormatError(f"compress_depth_mm needs HxW uint16, got {mm.dtype} {mm.shape}")
    ok, data = cv2.imencode(".png", mm, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ImageFormatError("OpenCV could not encode the depth image")
    header = np.array([INV_DEPTH], "<i4").tobytes() + np.zeros(2, "<f4").tobytes()
    return "16UC1; compressedDepth png", header + data.tobytes()


def compress_depth_inverse(depth_m: np.ndarray, depth_max: float = 10.0,
                           depth_quantization: float = 100.0) -> tuple[str, bytes]:
    """compressedDepth of a 32FC1 metre image, quantized as compressed_depth_image_transport does (inverse
    depth, depth_max and depth_quantization as its parameters)."""
    import cv2
    a = np.float32(depth_quantization * (depth_quantization + 1.0))
    b = np.float32(1.0 - a / depth_max)
    d = np.asarray(depth_m, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(np.isfinite(d) & (d > 0) & (d < depth_max), a / d + b, 0.0)
    q = np.clip(q, 0, 65535).astype(np.uint16)
    ok, data = cv2.imencode(".png", q, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ImageFormatError("OpenCV could not encode the depth image")
    header = np.array([INV_DEPTH], "<i4").tobytes() + np.array([a, b], "<f4").tobytes()
    return "32FC1; compressedDepth png", header + data.tobytes()
