"""Keyframe indexer node. Localization mode (mapping: false) loads the map and announces it; mapping mode
(mapping: true) also subscribes colour + aligned depth + camera_info + the mapping pose (a PoseStamped
camera-to-map topic, e.g. a SLAM system's or the ground truth of a bag, or TF map->camera), selects keyframes by
distance/angle, encodes and indexes them online, and saves the map atomically (service ~/save_map, and every
`autosave_keyframes`). Each save or load is announced on relocalization/map_updated (latched) so the inference
node reloads."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from relocal_ros.frame_sync import FrameSynchronizer
from relocal_ros.mapping.keyframe_map import KeyframeMap, KeyframeSelector, MapFormatError
from relocal_ros.nodes.conversions import T_from_pose_msg, frame_from_msgs, stamp_ns
from relocal_ros.nodes.node_utils import (LATCHED_QOS, Diagnostics, LatestFrameWorker, Throttle, declare, image_qos,
                                          run_node)
from relocal_ros.nodes.tf_io import TfIO


class KeyframeIndexerNode(Node):
    def __init__(self):
        super().__init__("keyframe_indexer")
        self.map_path = declare(self, "map_path", "", "keyframe map directory")
        self.mapping = declare(self, "mapping", False, "add keyframes online from the mapping pose")
        self.pose_source = declare(self, "pose_source", "topic", "'topic' (mapping/pose) or 'tf' (map->camera)")
        self.map_frame = declare(self, "map_frame", "map", "frame of the mapping poses")
        min_t = declare(self, "min_translation", 0.05, "keyframe spacing (m)", 0.0, 10.0)
        min_r = declare(self, "min_rotation_deg", 5.0, "keyframe spacing (deg)", 0.0, 180.0)
        self.autosave = declare(self, "autosave_keyframes", 50, "save after this many new keyframes (0: never)", 0, 100000)
        self.bootstrap = declare(self, "bootstrap_keyframes", 20, "keyframes to learn a vocabulary from when a "
                                 "new map has none", 2, 10000)
        self.global_descriptor = declare(self, "global_descriptor", "xfeat_vlad", "retrieval descriptor of a new "
                                         "map: xfeat_vlad, netvlad or densevlad")
        color = declare(self, "color_topic", "/camera/camera/color/image_raw", "colour image topic")
        depth = declare(self, "depth_topic", "/camera/camera/aligned_depth_to_color/image_raw", "aligned depth topic")
        info = declare(self, "camera_info_topic", "/camera/camera/color/camera_info", "camera_info topic")
        qos = image_qos(declare(self, "reliable_images", False, "subscribe to images reliably (only matches "
                                "reliable publishers, e.g. bag replay); default best effort (sensor data)"))
        if self.pose_source not in ("topic", "tf"):
            raise ValueError(f"pose_source must be 'topic' or 'tf', got {self.pose_source!r}")

        self.diag = Diagnostics(self, "keyframe indexer")
        self.throttle = Throttle()
        self.map: KeyframeMap | None = None
        self._map_lock = threading.Lock()
        self.selector = KeyframeSelector(min_t, min_r)
        self._pending_bootstrap = []
        self._since_save = 0
        self.updated_pub = self.create_publisher(String, "relocalization/map_updated", LATCHED_QOS)
        self.create_service(Trigger, "~/save_map", self._on_save)
        self.create_service(Trigger, "~/load_map", self._on_load)
        if self.map_path and (Path(self.map_path) / "CURRENT").exists():
            self._load()
        elif not self.mapping:
            self.get_logger().error(f"no map at '{self.map_path}' and mapping is off: nothing to serve")
            self.diag.problem = "no map"
        if self.mapping:
            if not self.map_path:
                raise ValueError("mapping needs map_path (where the map is saved)")
            self.sync = FrameSynchronizer(use_depth=True, need_extra=(self.pose_source == "topic"))
            self.tf = TfIO(self) if self.pose_source == "tf" else None
            self.create_subscription(Image, color, self._on_color, qos)
            self.create_subscription(Image, depth, lambda m: self.sync.add_depth(stamp_ns(m.header.stamp), m), qos)
            self.create_subscription(CameraInfo, info, self.sync.set_camera_info, qos)
            self.create_subscription(PoseStamped, "mapping/pose",
                                     lambda m: self.sync.add_extra(stamp_ns(m.header.stamp), m), 50)
            self.worker = LatestFrameWorker(self, self.sync, self._process, self.diag, "mapping frame")

    # -- map lifecycle ---------------------------------------------------------------------------------------
    def _announce(self) -> None:
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
    def _on_color(self, msg: Image) -> None:
        self.sync.add_color(stamp_ns(msg.header.stamp), msg)
        self.worker.wake()

    def _process(self, fm) -> None:
        try:
            frame = frame_from_msgs(fm.color, fm.depth, fm.camera_info)
        except ValueError as e:
            self.throttle(self.get_logger(), "error", "bad_input", f"mapping frame refused: {e}")
            self.diag.count("bad_input")
            return
        if fm.extra is not None:
            if fm.extra.header.frame_id and fm.extra.header.frame_id != self.map_frame:
                self.throttle(self.get_logger(), "error", "frame", f"mapping pose in '{fm.extra.header.frame_id}', "
                              f"expected '{self.map_frame}'")
                return
            frame.pose = T_from_pose_msg(fm.extra.pose)
        else:
            frame.pose = self.tf.lookup(self.map_frame, fm.color.header.frame_id, fm.stamp_ns, 0.1)
        if frame.pose is None or not np.all(np.isfinite(frame.pose)):
            self.diag.count("no_pose")
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
        if self.map is not None and self.autosave and self._since_save >= self.autosave:
            self._save()

    def _bootstrap(self, frame) -> None:
        """A new map without a vocabulary: hold the first keyframes, learn the vocabulary from them, index them."""
        from relocal_ros.mapping.builder import build_map
        self._pending_bootstrap.append(frame)
        if len(self._pending_bootstrap) < self.bootstrap:
            return
        self.map = build_map(self._pending_bootstrap, {"min_translation": 0.0, "min_rotation_deg": 0.0,
                                                       "vocabulary_words": 32,
                                                       "global_descriptor": self.global_descriptor}, progress=False)
        self._since_save = len(self.map)
        self._pending_bootstrap = []
        self.get_logger().info(f"vocabulary learned from the first {len(self.map)} keyframes")

    def destroy_node(self):
        if self.mapping:
            self.worker.stop()
            if self.tf is not None:
                self.tf.close()
        return super().destroy_node()


def main(args=None):
    run_node(KeyframeIndexerNode, args)


if __name__ == "__main__":
    main()
