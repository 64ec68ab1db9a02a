"""Inference node (lifecycle): colour (+ optional aligned depth) + camera_info in, relocal_msgs/QueryEvidence out.
Retrieval and matching run in a worker thread on the newest complete frame only; frames that arrive while it is
busy are dropped and counted, so latency stays bounded whatever the camera rate. `image_transport: compressed`
subscribes to image_transport's `<color_topic>/compressed` (JPEG/PNG) and `<depth_topic>/compressedDepth`
instead of the raw topics, as a robot streaming over Wi-Fi publishes them; they are decoded in the worker.
configure loads the map and the networks, activate subscribes, deactivate unsubscribes, cleanup frees the map."""
from __future__ import annotations

import threading
import time

from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String

from relocal_ros.frame_sync import FrameSynchronizer
from relocal_ros.nodes.conversions import evidence_to_msg, frame_from_msgs, msg_stamp_str, stamp_ns
from relocal_ros.nodes.node_utils import (LATCHED_QOS, RELIABLE_QOS, Diagnostics, LatestFrameWorker, ManagedNode,
                                          Throttle, run_node)

IMAGE_TRANSPORTS = ("raw", "compressed")


def transport_topics(transport: str, color: str, depth: str) -> tuple[type, str, str]:
    """(message type, colour topic, depth topic) for an image_transport name, as image_transport names them."""
    if transport == "raw":
        return Image, color, depth
    if transport == "compressed":
        return CompressedImage, color + "/compressed", depth + "/compressedDepth"
    raise ValueError(f"image_transport must be one of {IMAGE_TRANSPORTS}, got {transport!r}")


class InferenceNode(ManagedNode):
    executor_threads = 1  # callbacks only queue frames; LatestFrameWorker computes (ManagedNode.executor_threads)

    def __init__(self, **kwargs):
        super().__init__("inference_node", **kwargs)
        from relocal_ros.methods import method_class
        method_class(self.method)  # an unknown method stops the node at start, naming the available ones
        self._initial_map_path = self.map_path
        self.engine = self.diag = None
        self._engine_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------------------
    def configure(self) -> None:
        self.diag = Diagnostics(self, "inference")
        self.throttle = Throttle()
        # with use_depth, colour images wait for their aligned depth while depth arrives; a camera without aligned
        # depth (or whose depth stopped for 1 s) still gets colour-only answers
        self.sync = FrameSynchronizer(use_depth=self.use_depth, max_dt_s=self.max_pair_dt, depth_optional_after_s=1.0)
        self.map_path = self.map_path or self._initial_map_path
        if self.map_path:  # before subscribing: early images must not be refused for want of a map
            self._load_map(self.map_path)
        else:
            self.diag.problem = "no map: set map_path or wait for relocalization/map_updated"

    def activate(self) -> None:
        msg_type, color, depth = transport_topics(self.image_transport, self.color_topic, self.depth_topic)
        self.pub = self.open_publisher(self._evidence_type(), "relocalization/evidence", RELIABLE_QOS)
        self.worker = LatestFrameWorker(self, self.sync, self._process, self.diag, "image")
        self.open_subscription(msg_type, color, self._on_color, self.qos)
        if self.use_depth:
            self.open_subscription(msg_type, depth, self._on_depth, self.qos)
        self.open_subscription(CameraInfo, self.camera_info_topic, self._on_camera_info, self.qos)
        self.open_subscription(String, "relocalization/map_updated", self._on_map_updated, LATCHED_QOS)
        self.diag.values["image_topic"] = color

    def deactivate(self) -> None:
        self.worker.stop()

    def cleanup(self) -> None:
        with self._engine_lock:
            self.engine = None
        self.diag.close()
        self.sync = None

    @staticmethod
    def _evidence_type():
        from relocal_msgs.msg import QueryEvidence
        return QueryEvidence

    def _load_map(self, path: str) -> None:
        from relocal_ros.mapping.keyframe_map import KeyframeMap
        from relocal_ros.pipeline import InferenceEngine
        try:
            t0 = time.perf_counter()
            kmap = KeyframeMap.load(path)
            engine = InferenceEngine(kmap, self.stage_params("inference"))
            if kmap.intrinsics is not None:  # build the feature network now, not on the first query
                engine.map.encoder.warm_up(kmap.intrinsics.width, kmap.intrinsics.height)
        except (ValueError, OSError, RuntimeError) as e:  # MapFormatError is a ValueError: keep the previous map
            self.get_logger().error(f"map {path} not loaded, keeping the previous one: {e}")
            self.diag.count("map_load_failures")
            return
        with self._engine_lock:
            self.engine = engine
        self.diag.problem = ""
        self.diag.values["map"] = f"{path} ({len(kmap)} keyframes)"
        self.get_logger().info(f"map {path}: {len(kmap)} keyframes loaded in {time.perf_counter() - t0:.1f} s")

    def _on_map_updated(self, msg: String) -> None:
        path, _, version = msg.data.partition("\n")
        current = self.engine.map if self.engine is not None else None
        if path.strip() and (current is None or current.version != version.strip() or path.strip() != self.map_path):
            self.map_path = path.strip()
            threading.Thread(target=self._load_map, args=(path,), daemon=True).start()

    def _on_depth(self, msg) -> None:
        self.sync.add_depth(stamp_ns(msg.header.stamp), msg)
        # a colour image may be waiting for this depth image: without the wake it waited for the next colour
        # image (+133 ms at 7.5 Hz, +333 ms at 3 Hz through the live graph)
        self.worker.wake()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.sync.set_camera_info(msg)
        if self.diag.problem.startswith("no camera_info"):
            self.diag.problem = "" if self.engine is not None else "no map loaded"

    def _on_color(self, msg) -> None:
        self.sync.add_color(stamp_ns(msg.header.stamp), msg)
        self.diag.count("images_received")
        if not self.sync.has_camera_info:
            self.diag.problem = "no camera_info received: images cannot be localized"
            self.throttle(self.get_logger(), "warning", "info", "colour images arrive but no camera_info yet: waiting")
        self.worker.wake()

    def _process(self, fm) -> None:
        from relocal_ros.estimates import QueryEvidence
        header = fm.color.header
        try:
            frame = frame_from_msgs(fm.color, fm.depth, fm.camera_info)
        except ValueError as e:
            stamp = msg_stamp_str(header.stamp)
            self.throttle(self.get_logger(), "error", "bad_input", f"image {stamp} refused: {e}")
            self.diag.count("bad_input")
            self.diag.values["last_refusal"] = str(e)
            ev = QueryEvidence(stamp, None, self.method, refusal=str(e))
            self.pub.publish(evidence_to_msg(ev, header))
            return
        with self._engine_lock:
            engine = self.engine
        if engine is None:
            ev = QueryEvidence(frame.stamp, None, self.method, refusal="no map loaded")
        else:
            ev = engine.infer(frame)
        if ev.refusal:
            self.diag.count("refused")
            self.diag.values["last_refusal"] = ev.refusal
        self.diag.count("evidence_published")
        self.pub.publish(evidence_to_msg(ev, header))


def main(args=None):
    run_node(InferenceNode, args)


if __name__ == "__main__":
    main()
