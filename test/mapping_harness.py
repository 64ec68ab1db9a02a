"""The set-up test_mapping_node and test_nav2_mapping share: the keyframe indexer in mapping mode as a real
process, in a DDS domain of its own (conftest.own_ros_domain), and a test-side node that publishes to it, follows
its keyframe count on /diagnostics and calls its ~/save_map service. Each test adds its own publishers and
asserts what the saved map holds."""
from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

from conftest import own_ros_domain

# a small new map (vocabulary from the first 4 keyframes), reliable image subscriptions (the test publishes
# reliably and must not lose a frame) and saved only on request
MAPPING_PARAMS = ["-p", "mapping:=true", "-p", "bootstrap_keyframes:=4", "-p", "reliable_images:=true",
                  "-p", "autosave_keyframes:=0"]


class MappingProbe:
    def __init__(self, node, executor, proc: subprocess.Popen, map_dir: Path, tick: float):
        from diagnostic_msgs.msg import DiagnosticArray
        self.node, self.ex, self.proc, self.map_dir, self.tick = node, executor, proc, map_dir, tick
        self.keyframes = 0
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)

    def _on_diag(self, msg) -> None:
        for st in msg.status:
            for kv in st.values:
                if st.name.startswith("keyframe_indexer") and kv.key == "keyframes":
                    self.keyframes = int(kv.value)

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.ex.spin_once(timeout_sec=self.tick)

    def wait_for_indexer(self, topic: str, timeout: float = 60.0) -> None:
        """Until the indexer subscribes to `topic` (it has configured and activated itself)."""
        deadline = time.monotonic() + timeout
        while self.node.count_subscribers(topic) == 0 and time.monotonic() < deadline:
            self.spin(0.2)
        assert self.node.count_subscribers(topic) > 0, "indexer did not come up"

    def wait_for_keyframes(self, n: int, timeout: float = 30.0) -> None:
        """A busy indexer keeps only the newest frame: feed the next one once this one is in the map."""
        end = time.monotonic() + timeout
        while self.keyframes < n and time.monotonic() < end:
            self.spin(0.1)

    def save_map(self, timeout: float = 60.0):
        """Call ~/save_map and wait for its answer; asserts it succeeded."""
        from std_srvs.srv import Trigger
        save = self.node.create_client(Trigger, "/keyframe_indexer/save_map")
        assert save.wait_for_service(timeout_sec=10)
        fut = save.call_async(Trigger.Request())
        end = time.monotonic() + timeout
        while not fut.done() and time.monotonic() < end:
            self.spin(0.1)
        assert fut.done() and fut.result().success, fut.result()
        return fut.result()


@contextlib.contextmanager
def mapping_indexer(tmp_path: Path, node_name: str, extra_params=(), tick: float = 0.05):
    """The indexer (mapping into tmp_path/map, with MAPPING_PARAMS and extra_params) and a MappingProbe named
    node_name; stops both afterwards and prints the indexer's log (shown by pytest when the test failed)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    map_dir = tmp_path / "map"
    log_path = tmp_path / "indexer.log"
    with own_ros_domain(), open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "relocal_ros.nodes.keyframe_indexer", "--ros-args",
                                 "-p", f"map_path:={map_dir}", *MAPPING_PARAMS, *extra_params],
                                stdout=log, stderr=subprocess.STDOUT)
        rclpy.init()
        node = None
        try:
            node = rclpy.create_node(node_name)
            ex = SingleThreadedExecutor()
            ex.add_node(node)
            yield MappingProbe(node, ex, proc, map_dir, tick)
        finally:
            if node is not None:
                node.destroy_node()
            rclpy.shutdown()
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            print(log_path.read_text()[-3000:])
