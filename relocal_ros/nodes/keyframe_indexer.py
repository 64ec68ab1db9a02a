"""Keyframe indexer node (lifecycle). Localization mode (mapping: false) loads the map and announces it; mapping
mode (mapping: true) also subscribes colour + aligned depth + camera_info (raw, or image_transport `compressed` /
`compressedDepth` with `image_transport: compressed`) and takes each image's camera pose in the map from

* `pose_source: tf` — TF map_frame -> camera at the image stamp: the Nav2 path (AMCL or a SLAM system
  publishes map->odom, the base publishes odom->base_link, the robot description base_link->camera);
* `pose_source: topic` — `mapping_pose_topic` of `mapping_pose_type` PoseStamped, PoseWithCovarianceStamped
  (e.g. amcl_pose) or Odometry, in any frame: the pose of `mapping_pose_frame` (Odometry: its child_frame_id;
  '' = the camera itself), interpolated to the image stamp and composed with TF (map -> the pose's header frame,
  the pose's frame -> camera) — see pose_history.py;

selects keyframes by distance/angle, encodes and indexes them online, and saves the map atomically (service
~/save_map, and every `autosave_keyframes`). Each save or load is announced on relocalization/map_updated
(latched) so the inference node reloads."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import String
from std_srvs.srv import Trigger

from relocal_ros.frame_sync import FrameSynchronizer
from relocal_ros.mapping.keyframe_map import KeyframeMap, KeyframeSelector, MapFormatError
from relocal_ros.nodes.conversions import frame_from_msgs, stamp_ns
from relocal_ros.nodes.inference_node import transport_topics
from relocal_ros.nodes.node_utils import (LATCHED_QOS, Diagnostics, LatestFrameWorker, ManagedNode, Throttle, run_node)
from relocal_ros.nodes.pose_history import PoseHistory, StampedPose, pose_from_msg
from relocal_ros.nodes.tf_io import TfIO


def pose_msg_class(name: str):
    from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
    from nav_msgs.msg import Odometry
    return {"PoseStamped": PoseStamped, "PoseWithCovarianceStamped": PoseWithCovarianceStamped,
            "Odometry": Odometry}[name]


class KeyframeIndexerNode(ManagedNode):
    def __init__(self, **kwargs):
        super().__init__("keyframe_indexer", **kwargs)
        if self.mapping and not self.map_path:
            raise ValueError("mapping needs map_path (where the map is saved)")
        self.map: KeyframeMap | None = None
        self.diag = self.tf = None
        self._map_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------------------
    def configure(self) -> None:
        self.diag = Diagnostics(self, "keyframe indexer")
        self.throttle = Throttle()
        self.selector = KeyframeSelector(self.min_translation, self.min_rotation_deg)
        self._pending_bootstrap = []
        self._since_save = 0
        self.poses = PoseHistory(self.mapping_pose_max_interval)
        self.updated_pub = self.create_publisher(String, "relocalization/map_updated", LATCHED_QOS)
        if self.map_path and (Path(self.map_path) / "CURRENT").exists():
            self._load()
        elif not self.mapping:
            self.get_logger().error(f"no map at '{self.map_path}' and mapping is off: nothing to serve")
            self.diag.problem = "no map"

    def activate(self) -> None:
        self.open_service(Trigger, "~/save_map", self._on_save)
        self.open_service(Trigger, "~/load_map", self._on_load)
        if self.map is not None:
            self._announce()
        if not self.mapping:
            return
        msg_type, color, depth = transport_topics(self.image_transport, self.color_topic, self.depth_topic)
        self.sync = FrameSynchronizer(use_depth=True)
        # TF: map -> camera (pose_source tf), or what composes a pose topic's frame with the camera
        self.tf = TfIO(self)
        self.worker = LatestFrameWorker(self, self.sync, self._process, self.diag, "mapping frame")
        self.open_subscription(msg_type, color, self._on_color, self.qos)
        self.open_subscription(msg_type, depth, self._on_depth, self.qos)
        self.open_subscription(CameraInfo, self.camera_info_topic, self.sync.set_camera_info, self.qos)
        if self.pose_source == "topic":
            self.open_subscription(pose_msg_class(self.mapping_pose_type), self.mapping_pose_topic, self._on_pose, 50)

    def deactivate(self) -> None:
        if self.mapping:
            self.worker.stop()
            self.tf.close()
            self.tf = None

    def cleanup(self) -> None:
        with self._map_lock:
            self.map = None
        self.destroy_publisher(self.updated_pub)
        self.diag.close()

    # -- map lifecycle ---------------------------------------------------------------------------------------
    def _announce(self) -> None:
        if self.map is None:
            return
        self.updated_pub.publish(String(data=f"{self.map_path}\n{self.map.version}"))

    def _load(self) -> str:
        try:
            kmap = KeyframeMap.load(self.map_path)
        except (MapFormatError, OSError) as e:
            self.get_logger().error(f"map not loaded (the previous one stays): {e}")
            self.diag.count("map_load_failures")
            return str(e)
        with self._map_lock:
            self.map = kmap
            for kf in kmap.keyframes:
                self.selector.should_add(kf.T_map_cam)
        self.diag.values["keyframes"] = str(len(kmap))
        self.get_logger().info(f"map {self.map_path}: {len(kmap)} keyframes")
        self._announce()
        return ""

    def _save(self) -> str:
        with self._map_lock:
            if self.map is None or len(self.map) == 0:
                return "no keyframes to save"
            try:
                version = self.map.save(self.map_path)
            except OSError as e:
                self.get_logger().error(f"map save failed, the previous version is intact: {e}")
                return str(e)
            self._since_save = 0
        self.get_logger().info(f"saved {len(self.map)} keyframes -> {version}")
        self.diag.count("saves")
        self._announce()
        return ""

    def _on_save(self, request, response):
        err = self._save()
        response.success, response.message = not err, err or f"saved {self.map_path}"
        return response

    def _on_load(self, request, response):
        err = self._load()
        response.success, response.message = not err, err or f"loaded {self.map_path}"
        return response

    # -- online keyframe insertion ---------------------------------------------------------------------------
    def _on_color(self, msg) -> None:
        self.sync.add_color(stamp_ns(msg.header.stamp), msg)
        self.worker.wake()

    def _on_depth(self, msg) -> None:
        self.sync.add_depth(stamp_ns(msg.header.stamp), msg)
        self.worker.wake()  # a colour image may be waiting for this depth image

    def _on_pose(self, msg) -> None:
        t, T, header_frame, child = pose_from_msg(msg, self.mapping_pose_type)
        self.poses.add(StampedPose(t, T, header_frame or self.map_frame, self.mapping_pose_frame or child))
        self.worker.wake()  # a frame may have been waiting for this pose

    def _camera_pose(self, t_ns: int, camera_frame: str) -> tuple[np.ndarray | None, str]:
        """T_map_cam at the image stamp, or (None, why)."""
        tf = self.tf
        if self.pose_source == "tf":
            T = tf.lookup(self.map_frame, camera_frame, t_ns, self.tf_timeout)
            return T, "" if T is not None else f"no TF {self.map_frame} -> {camera_frame} at the image time"
        deadline = time.monotonic() + self.mapping_pose_wait
        while True:
            p = self.poses.at(t_ns)
            newest = self.poses.newest_ns()
            if p is not None or time.monotonic() >= deadline or (newest is not None and newest > t_ns):
                break
            time.sleep(0.005)
        if p is None:
            newest = self.poses.newest_ns()
            return None, (f"no {self.mapping_pose_type} on {self.mapping_pose_topic} around the image time {t_ns * 1e-9:.6f} "
                          f"(newest pose: {'none' if newest is None else f'{newest * 1e-9:.6f}'}, "
                          f"{self.poses.count} received)")
        frame = p.pose_frame or camera_frame
        T_map_header = np.eye(4) if p.header_frame == self.map_frame else \
            tf.lookup(self.map_frame, p.header_frame, t_ns, self.tf_timeout)
        if T_map_header is None:
            return None, f"no TF {self.map_frame} -> {p.header_frame} (the mapping pose's frame) at the image time"
        T_frame_cam = np.eye(4) if frame == camera_frame else tf.lookup(frame, camera_frame, t_ns, self.tf_timeout)
        if T_frame_cam is None:
            return None, f"no TF {frame} -> {camera_frame} at the image time"
        return T_map_header @ p.T @ T_frame_cam, ""

    def _process(self, fm) -> None:
        try:
            frame = frame_from_msgs(fm.color, fm.depth, fm.camera_info)
        except ValueError as e:
            self.throttle(self.get_logger(), "error", "bad_input", f"mapping frame refused: {e}")
            self.diag.count("bad_input")
            return
        frame.pose, why = self._camera_pose(fm.stamp_ns, fm.color.header.frame_id)
        if frame.pose is None or not np.all(np.isfinite(frame.pose)):
            self.diag.count("no_pose")
            self.diag.values["last_no_pose"] = why or "non-finite pose"
            self.throttle(self.get_logger(), "warning", "no_pose", f"mapping frame skipped: {why}")
            return
        if not self.selector.should_add(frame.pose):
            return
        with self._map_lock:
            if self.map is None:
                self._bootstrap(frame)
            else:
                self.map.add_keyframe(frame)
                self._since_save += 1
            n = len(self.map) if self.map is not None else len(self._pending_bootstrap)
        self.diag.values["keyframes"] = str(n)
        if self.map is not None and self.autosave_keyframes and self._since_save >= self.autosave_keyframes:
            self._save()

    def _bootstrap(self, frame) -> None:
        """A new map without a vocabulary: hold the first keyframes, learn the vocabulary from them, index them."""
        from relocal_ros.mapping.builder import build_map
        self._pending_bootstrap.append(frame)
        if len(self._pending_bootstrap) < self.bootstrap_keyframes:
            return
        self.map = build_map(self._pending_bootstrap, {"min_translation": 0.0, "min_rotation_deg": 0.0,
                                                       "vocabulary_words": self.vocabulary_words,
                                                       "global_descriptor": self.global_descriptor}, progress=False)
        self._since_save = len(self.map)
        self._pending_bootstrap = []
        self.get_logger().info(f"vocabulary learned from the first {len(self.map)} keyframes")


def main(args=None):
    run_node(KeyframeIndexerNode, args)


if __name__ == "__main__":
    main()
