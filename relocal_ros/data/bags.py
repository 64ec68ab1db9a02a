"""ROS 2 bags (.mcap or sqlite .db3, via `rosbags`) <-> RGBDFrame.

Topic and frame names default to what the realsense2_camera ROS 2 wrapper (4.5x, launched with its defaults
camera_namespace:=camera camera_name:=camera, align_depth.enable:=true) publishes, so a bag recorded from a
RealSense reads the same way as one written here:

  /camera/camera/color/image_raw                      sensor_msgs/Image rgb8, frame camera_color_optical_frame
  /camera/camera/color/camera_info                    sensor_msgs/CameraInfo (plumb_bob)
  /camera/camera/aligned_depth_to_color/image_raw     sensor_msgs/Image 16UC1 millimetres (0 = no measurement)
  /camera/camera/aligned_depth_to_color/camera_info   sensor_msgs/CameraInfo (= colour intrinsics: aligned)
  /tf_static                                          camera_link -> camera_color_optical_frame (once, latched)
  /ground_truth/pose                                  geometry_msgs/PoseStamped, frame "map", camera-to-map pose
                                                      of the optical frame (only frames with a known pose)

Robots record images through image_transport: `…/image_raw/compressed` (sensor_msgs/CompressedImage, JPEG or PNG)
and `…/aligned_depth_to_color/image_raw/compressedDepth` (PNG behind compressedDepth's 12-byte header). BagSource
reads those by itself when the raw image topics are absent (images.py decodes them), and write_bag(compressed=True)
writes only those (COMPRESSED_SUFFIX, COMPRESSED_DEPTH_SUFFIX), as such a robot's bag holds them.

Older wrappers (< 4.51) drop the doubled namespace (/camera/color/image_raw ...): REALSENSE_LEGACY_TOPICS, and
BagSource(topics=None) picks whichever of the two the bag holds. camera_link here coincides with the colour
optical centre (the dataset gives no camera body frame), rotated by the standard optical rotation.

Header stamps carry the frame stamps exactly (decimal string -> sec/nanosec without float rounding); receive
times equal header stamps, or are spaced 1/rate_hz apart when rate_hz is given (e.g. 7-Scenes index stamps).
"""
from __future__ import annotations

import bisect
import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from relocal_ros.data.frames import FrameFormatError, RGBDFrame
from relocal_ros.data.stamps import stamp_from_sec_nanosec, stamp_to_sec_nanosec
from relocal_ros.data.images import (compress_depth_mm, compress_rgb, depth_from_msg, numpy_to_image_msg,
                                     rgb_from_msg)
from relocal_ros.errors import UserInputError
from relocal_ros.geometry.camera import Intrinsics
from relocal_ros.geometry.poses import T_from_tq, is_rigid, tq_from_T


class BagReadError(UserInputError):
    """The path is not a readable ROS 2 bag, or lacks what a frame source needs."""


class BagFrameError(BagReadError, FrameFormatError):
    """One frame of a readable bag cannot be used (an image that does not decode, a size its camera_info
    contradicts, a message that cannot be read back): that frame is refused and counted, not the run, as with a
    corrupt PNG in a dataset folder."""


@dataclass(frozen=True)
class BagTopics:
    color: str = "/camera/camera/color/image_raw"
    color_info: str = "/camera/camera/color/camera_info"
    depth: str = "/camera/camera/aligned_depth_to_color/image_raw"
    depth_info: str = "/camera/camera/aligned_depth_to_color/camera_info"
    ground_truth: str = "/ground_truth/pose"
    tf_static: str = "/tf_static"


@dataclass(frozen=True)
class BagFrameIds:
    camera_link: str = "camera_link"
    optical: str = "camera_color_optical_frame"
    map: str = "map"


REALSENSE_TOPICS = BagTopics()
REALSENSE_LEGACY_TOPICS = BagTopics(color="/camera/color/image_raw", color_info="/camera/color/camera_info",
                                    depth="/camera/aligned_depth_to_color/image_raw",
                                    depth_info="/camera/aligned_depth_to_color/camera_info")
DEFAULT_TOPICS = REALSENSE_TOPICS
DEFAULT_FRAME_IDS = BagFrameIds()
# camera_link (x forward, y left, z up) -> optical (x right, y down, z forward), quaternion x, y, z, w
OPTICAL_ROTATION_XYZW = (-0.5, 0.5, -0.5, 0.5)
STORAGES = ("mcap", "sqlite3")
SYNC_TOLERANCE_S = 0.020
_NS = 10**9
_IMAGE, _INFO, _POSE = "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo", "geometry_msgs/msg/PoseStamped"
_COMPRESSED = "sensor_msgs/msg/CompressedImage"
COMPRESSED_SUFFIX, COMPRESSED_DEPTH_SUFFIX = "/compressed", "/compressedDepth"  # image_transport's topic names


def compressed_topics(topics: BagTopics) -> BagTopics:
    """The image_transport names of the colour (`compressed`) and depth (`compressedDepth`) topics."""
    return dataclasses.replace(topics, color=topics.color + COMPRESSED_SUFFIX,
                               depth=topics.depth + COMPRESSED_DEPTH_SUFFIX)


def _typestore():
    from rosbags.typesys import Stores, get_typestore
    return get_typestore(Stores.ROS2_KILTED)


# ---------------------------------------------------------------------------------------------------- writing

def _header(T, sec: int, nanosec: int, frame_id: str):
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                    frame_id=frame_id)


def _camera_info(T, header, intr: Intrinsics):
    fx, fy, cx, cy = intr.fx, intr.fy, intr.cx, intr.cy
    return T[_INFO](
        header=header, height=intr.height, width=intr.width, distortion_model="plumb_bob",
        d=np.asarray(intr.dist, dtype=np.float64),
        k=np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1], dtype=np.float64),
        r=np.eye(3).reshape(-1),
        p=np.array([fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0], dtype=np.float64),
        binning_x=0, binning_y=0,
        roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def _depth_millimetres(depth: np.ndarray) -> np.ndarray:
    """float metres -> uint16 millimetres; invalid (0, NaN, inf, negative) and beyond 65.535 m -> 0."""
    mm = np.rint(np.asarray(depth, dtype=np.float32) * np.float32(1000.0))
    valid = (mm >= 0) & (mm <= 65535)  # False for NaN
    return np.where(valid, mm, 0).astype(np.uint16)


def _latched_qos():
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
    zero = QosTime(sec=0, nsec=0)
    return [Qos(history=QosHistory.KEEP_LAST, depth=1, reliability=QosReliability.RELIABLE,
                durability=QosDurability.TRANSIENT_LOCAL, deadline=zero, lifespan=zero,
                liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=zero,
                avoid_ros_namespace_conventions=False)]


def write_bag(frames: Iterable[RGBDFrame], out_path, storage: str = "mcap", rate_hz: float | None = None,
              topics: BagTopics = DEFAULT_TOPICS, frame_ids: BagFrameIds = DEFAULT_FRAME_IDS,
              compressed: bool = False, jpeg_quality: int = 95) -> Path:
    """Write frames as a ROS 2 bag directory out_path (metadata.yaml + one .mcap or .db3 file).

    compressed=True writes colour only as image_transport `compressed` (JPEG, jpeg_quality as the transport's
    default 95) and depth only as `compressedDepth` (16UC1 PNG), on `<topic>/compressed` and
    `<topic>/compressedDepth`, as a robot that records through image_transport does.

    Without rate_hz the frame stamps must increase (they become the receive times, i.e. the playback timing);
    with rate_hz the receive times are first stamp + i / rate_hz and the header stamps keep the frame stamps.
    On any error the partly written directory is removed. Returns out_path."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    if rate_hz is not None and not rate_hz > 0:
        raise ValueError(f"rate_hz must be positive, got {rate_hz}")
    out_path = Path(out_path)
    if out_path.exists():
        raise FileExistsError(f"{out_path} exists already; a bag is never overwritten")
    ts = _typestore()
    T = ts.types
    writer = Writer(out_path, version=9, storage_plugin=plugins[storage])
    image_topics, image_type = (compressed_topics(topics), _COMPRESSED) if compressed else (topics, _IMAGE)
    try:
        writer.open()
        conn = {
            "color": writer.add_connection(image_topics.color, image_type, typestore=ts),
            "color_info": writer.add_connection(topics.color_info, _INFO, typestore=ts),
            "depth": writer.add_connection(image_topics.depth, image_type, typestore=ts),
            "depth_info": writer.add_connection(topics.depth_info, _INFO, typestore=ts),
            "ground_truth": writer.add_connection(topics.ground_truth, _POSE, typestore=ts),
            "tf_static": writer.add_connection(topics.tf_static, "tf2_msgs/msg/TFMessage", typestore=ts,
                                               offered_qos_profiles=_latched_qos()),
        }

        def put(key, msg, msgtype, recv_ns):
            writer.write(conn[key], recv_ns, ts.serialize_cdr(msg, msgtype))

        first_ns = prev_ns = None
        for i, frame in enumerate(frames):
            sec, nanosec = stamp_to_sec_nanosec(frame.stamp)
            stamp_ns = sec * _NS + nanosec
            if rate_hz is not None:
                recv_ns = (first_ns if first_ns is not None else stamp_ns) + round(i * _NS / rate_hz)
            else:
                if prev_ns is not None and stamp_ns <= prev_ns:
                    raise ValueError(f"frame {i} ({frame.name or frame.stamp}): stamp {frame.stamp} does not "
                                     f"increase; pass rate_hz to write such frames at a fixed rate")
                recv_ns = stamp_ns
            if first_ns is None:
                first_ns = recv_ns
                tf = T["geometry_msgs/msg/TransformStamped"](
                    header=_header(T, sec, nanosec, frame_ids.camera_link), child_frame_id=frame_ids.optical,
                    transform=T["geometry_msgs/msg/Transform"](
                        translation=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
                        rotation=T["geometry_msgs/msg/Quaternion"](*OPTICAL_ROTATION_XYZW)))
                put("tf_static", T["tf2_msgs/msg/TFMessage"](transforms=[tf]), "tf2_msgs/msg/TFMessage", recv_ns)
            prev_ns = stamp_ns

            intr = frame.intrinsics
            h, w = frame.rgb.shape[:2]
            if (w, h) != (intr.width, intr.height):
                raise ValueError(f"frame {frame.stamp}: image {w}x{h} but intrinsics {intr.width}x{intr.height}")
            header = _header(T, sec, nanosec, frame_ids.optical)
            if compressed:
                fmt, data = compress_rgb(frame.rgb, "jpeg", jpeg_quality)
                put("color", T[_COMPRESSED](header=header, format=fmt, data=np.frombuffer(data, np.uint8)),
                    _COMPRESSED, recv_ns)
            else:
                put("color", numpy_to_image_msg(frame.rgb, "rgb8", header, T[_IMAGE]), _IMAGE, recv_ns)
            put("color_info", _camera_info(T, header, intr), _INFO, recv_ns)
            if frame.depth is not None:
                if frame.depth.shape != (h, w):
                    raise ValueError(f"frame {frame.stamp}: depth {frame.depth.shape} not aligned to colour {(h, w)}")
                if compressed:
                    fmt, data = compress_depth_mm(_depth_millimetres(frame.depth))
                    put("depth", T[_COMPRESSED](header=header, format=fmt, data=np.frombuffer(data, np.uint8)),
                        _COMPRESSED, recv_ns)
                else:
                    depth_msg = numpy_to_image_msg(_depth_millimetres(frame.depth), "16UC1", header, T[_IMAGE])
                    put("depth", depth_msg, _IMAGE, recv_ns)
                put("depth_info", _camera_info(T, header, intr), _INFO, recv_ns)
            if frame.pose is not None:
                if not is_rigid(frame.pose):
                    raise ValueError(f"frame {frame.stamp}: pose is not a rigid 4x4 transform")
                t, q = tq_from_T(np.asarray(frame.pose, dtype=float))
                pose = T["geometry_msgs/msg/Pose"](
                    position=T["geometry_msgs/msg/Point"](*(float(v) for v in t)),
                    orientation=T["geometry_msgs/msg/Quaternion"](*(float(v) for v in q)))
                put("ground_truth", T[_POSE](header=_header(T, sec, nanosec, frame_ids.map), pose=pose),
                    _POSE, recv_ns)
        if first_ns is None:
            raise ValueError("no frames to write")
        writer.close()
    except BaseException:
        try:
            writer.close()
        except Exception:
            pass
        shutil.rmtree(out_path, ignore_errors=True)
        raise
    return out_path


def bag_from_dataset(source, out_path, storage: str = "mcap", rate_hz: float | None = None,
                     topics: BagTopics = DEFAULT_TOPICS, compressed: bool = False) -> Path:
    """`relocal bag-from-dataset`: every frame of a FrameSource into a bag, with a progress bar; compressed=True:
    JPEG colour and compressedDepth PNG depth only (write_bag)."""
    from tqdm import tqdm
    return write_bag(tqdm(source, total=len(source), desc=f"bag {Path(out_path).name}", unit="frame"),
                     out_path, storage=storage, rate_hz=rate_hz, topics=topics, compressed=compressed)


# ---------------------------------------------------------------------------------------------------- reading

def _nearest(sorted_ns: list[int], t_ns: int, tol_ns: int) -> int | None:
    j = bisect.bisect_left(sorted_ns, t_ns)
    best = None
    for k in (j - 1, j):
        if 0 <= k < len(sorted_ns) and abs(sorted_ns[k] - t_ns) <= tol_ns:
            if best is None or abs(sorted_ns[k] - t_ns) < abs(sorted_ns[best] - t_ns):
                best = k
    return best


@dataclass(frozen=True)
class _Ref:
    """Where one image message lies in the bag: receive time (to seek) and header stamp (to identify)."""
    recv_ns: int
    stamp_ns: int


class BagSource:
    """A FrameSource over a ROS 2 bag: one frame per colour image, with the aligned depth image nearest in time
    (within sync_tolerance_s, else depth None), the latest camera_info and the ground-truth pose nearest in time
    (within the tolerance, else None). Messages are indexed when opened and images decoded on access."""

    def __init__(self, path, topics: BagTopics | None = None, sync_tolerance_s: float = SYNC_TOLERANCE_S):
        from rosbags.rosbag2 import Reader

        self.path = Path(path)
        if not self.path.exists():
            raise BagReadError(f"{self.path}: no such bag file or folder")
        self._tol_ns = int(round(sync_tolerance_s * _NS))
        self._ts = _typestore()
        self._reader = None
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as exc:  # rosbags raises many kinds (ReaderError, KeyError, sqlite3, struct) on bad input
            self._reader = None
            raise BagReadError(f"{self.path}: cannot open as a ROS 2 bag (.mcap, .db3 or a folder with "
                               f"metadata.yaml); not a bag, truncated or corrupt: {type(exc).__name__}: {exc}") from exc
        try:
            self.topics = self._pick_topics(topics)
            self._index()
        except BagReadError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise BagReadError(f"{self.path}: bag is corrupt or truncated: {type(exc).__name__}: {exc}") from exc

    # -- indexing

    def _connections(self, topic: str, msgtype: str | tuple) -> list:
        allowed = (msgtype,) if isinstance(msgtype, str) else msgtype
        conns = [c for c in self._reader.connections if c.topic == topic]
        wrong = [c.msgtype for c in conns if c.msgtype not in allowed]
        if wrong:
            raise BagReadError(f"{self.path}: topic {topic} carries {wrong[0]}, expected {' or '.join(allowed)}")
        return conns

    def _pick_topics(self, topics: BagTopics | None) -> BagTopics:
        """The given (or a RealSense) topic set; where its raw image topics are absent, image_transport's
        `/compressed` colour and `/compressedDepth` (else `/compressed`) depth topics of the same base names."""
        present = {c.topic for c in self._reader.connections}
        candidates = [topics] if topics is not None else [REALSENSE_TOPICS, REALSENSE_LEGACY_TOPICS]
        for cand in candidates:
            color = next((t for t in (cand.color, cand.color + COMPRESSED_SUFFIX) if t in present), None)
            if color is None:
                continue
            depth = next((t for t in (cand.depth, cand.depth + COMPRESSED_DEPTH_SUFFIX, cand.depth + COMPRESSED_SUFFIX)
                          if t in present), cand.depth)
            return dataclasses.replace(cand, color=color, depth=depth)
        images = sorted({c.topic for c in self._reader.connections if c.msgtype in (_IMAGE, _COMPRESSED)})
        raise BagReadError(f"{self.path}: no colour image topic {' or '.join(c.color for c in candidates)}; "
                           f"image topics in this bag: {', '.join(images) or 'none'} (image_transport "
                           f"'{COMPRESSED_SUFFIX}' variants were looked for too)")

    def _index(self) -> None:
        t = self.topics
        self._color_conns = self._connections(t.color, (_IMAGE, _COMPRESSED))
        self._depth_conns = self._connections(t.depth, (_IMAGE, _COMPRESSED))
        info_conns = self._connections(t.color_info, _INFO)
        gt_conns = self._connections(t.ground_truth, _POSE)
        if not info_conns:
            raise BagReadError(f"{self.path}: no camera_info on {t.color_info} (sensor_msgs/CameraInfo); the "
                               f"intrinsics of {t.color} are needed to use the images")
        colors, depths, infos, gts = [], [], [], []
        kinds = {c.id: k for k, cs in (("c", self._color_conns), ("d", self._depth_conns), ("i", info_conns),
                                       ("g", gt_conns)) for c in cs}
        deser = self._ts.deserialize_cdr
        for conn, recv_ns, raw in self._reader.messages(connections=[c for c in self._reader.connections
                                                                     if c.id in kinds]):
            kind = kinds[conn.id]
            msg = deser(raw, conn.msgtype)  # images deserialize as views of raw: cheap, nothing kept
            stamp_ns = msg.header.stamp.sec * _NS + msg.header.stamp.nanosec
            if kind == "c":
                colors.append(_Ref(recv_ns, stamp_ns))
            elif kind == "d":
                depths.append(_Ref(recv_ns, stamp_ns))
            elif kind == "i":
                try:
                    infos.append((stamp_ns, Intrinsics.from_camera_info(msg)))
                except ValueError as exc:
                    raise BagReadError(f"{self.path}: unusable camera_info on {t.color_info} at "
                                       f"{stamp_from_sec_nanosec(*divmod(stamp_ns, _NS))}: {exc}") from exc
            else:
                p, q = msg.pose.position, msg.pose.orientation
                gts.append((stamp_ns, T_from_tq((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))))
        if not infos:
            raise BagReadError(f"{self.path}: no camera_info messages on {t.color_info}")
        colors.sort(key=lambda r: (r.stamp_ns, r.recv_ns))
        depths.sort(key=lambda r: (r.stamp_ns, r.recv_ns))
        infos.sort(key=lambda x: x[0])
        gts.sort(key=lambda x: x[0])
        depth_ns = [r.stamp_ns for r in depths]
        info_ns = [s for s, _ in infos]
        gt_ns = [s for s, _ in gts]
        self._frames = []  # (colour ref, depth ref | None, intrinsics, pose | None)
        for ref in colors:
            j = _nearest(depth_ns, ref.stamp_ns, self._tol_ns)
            k = bisect.bisect_right(info_ns, ref.stamp_ns + self._tol_ns) - 1  # latest camera_info so far
            g = _nearest(gt_ns, ref.stamp_ns, self._tol_ns)
            self._frames.append((ref, depths[j] if j is not None else None, infos[max(k, 0)][1],
                                 gts[g][1] if g is not None else None))
        self.intrinsics = infos[0][1]

    # -- FrameSource

    def __len__(self) -> int:
        return len(self._frames)

    def __iter__(self) -> Iterator[RGBDFrame]:
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, i: int) -> RGBDFrame:
        if not -len(self) <= i < len(self):
            raise IndexError(f"frame {i} out of range (bag has {len(self)} colour images)")
        ref, depth_ref, intr, pose = self._frames[i]
        stamp = stamp_from_sec_nanosec(*divmod(ref.stamp_ns, _NS))
        color_msg = self._fetch(self._color_conns, ref, self.topics.color)
        depth_msg = self._fetch(self._depth_conns, depth_ref, self.topics.depth) if depth_ref else None
        try:
            rgb = rgb_from_msg(color_msg)
            depth = depth_from_msg(depth_msg) if depth_msg is not None else None
        except ValueError as exc:
            raise BagFrameError(f"{self.path}: image at {stamp}: {exc}") from exc
        if rgb.shape[:2] != (intr.height, intr.width):
            raise BagFrameError(f"{self.path}: {self.topics.color} image at {stamp} is {rgb.shape[1]}x{rgb.shape[0]} "
                                f"but {self.topics.color_info} says {intr.width}x{intr.height}")
        if depth is not None and depth.shape != rgb.shape[:2]:
            raise BagFrameError(f"{self.path}: {self.topics.depth} at {stamp} is {depth.shape[1]}x{depth.shape[0]}, "
                                f"not aligned to the {rgb.shape[1]}x{rgb.shape[0]} colour image")
        return RGBDFrame(stamp=stamp, rgb=rgb, depth=depth, intrinsics=intr,
                         pose=None if pose is None else pose.copy(), name=f"{self.topics.color}@{stamp}")

    def _fetch(self, conns: list, ref: _Ref, topic: str):
        try:
            for conn, _, raw in self._reader.messages(connections=conns, start=ref.recv_ns, stop=ref.recv_ns + 1):
                msg = self._ts.deserialize_cdr(raw, conn.msgtype)
                if msg.header.stamp.sec * _NS + msg.header.stamp.nanosec == ref.stamp_ns:
                    return msg
        except Exception as exc:
            raise BagFrameError(f"{self.path}: reading {topic}: {type(exc).__name__}: {exc}") from exc
        raise BagFrameError(f"{self.path}: {topic} message at receive time {ref.recv_ns} ns vanished from the bag")

    # -- resources

    def close(self) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            finally:
                self._reader = None

    def __enter__(self) -> "BagSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
