"""Every bad input a camera driver, a network or a user can deliver, fed to the real nodes over DDS: each must
give a clear logged refusal counted on /diagnostics, no crash and no pose (or, where the input is usable, only a
correct pose). Parameter and file faults are checked where they enter: at declaration and at load."""
import array
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 PyPI wheels) not installed")
pytest.importorskip("relocal_msgs.msg", reason="relocal_msgs not built: run scripts/build_interfaces.sh .venv")

import planar_scene as ps  # noqa: E402
from relocal_ros.data.images import numpy_to_image_msg  # noqa: E402
from relocal_ros.geometry.camera import Intrinsics  # noqa: E402
from relocal_ros.geometry.poses import pose_error  # noqa: E402
from relocal_ros.mapping.builder import build_map  # noqa: E402
from relocal_ros.nodes.conversions import T_from_pose_msg, camera_info_msg  # noqa: E402
from relocal_ros.nodes.runner import GraphProcesses  # noqa: E402
from graph_probe import Probe, query_frames  # noqa: E402

pytestmark = pytest.mark.ros  # make test-fast leaves these out (pytest.ini)

DEPTH_TOPIC = "/camera/camera/aligned_depth_to_color/image_raw"


@pytest.fixture(scope="module")
def depth_graph(module_domain, tmp_path_factory):
    """The graph with the inference node pairing colour and aligned depth, so the depth paths are exercised."""
    d = tmp_path_factory.mktemp("bad_inputs")
    build_map(ps.map_frames(), {"vocabulary": "map", "vocabulary_words": 16}, progress=False).save(d / "map")
    g = GraphProcesses(str(d / "map"), log_dir=d,
                       # the probe publishes no camera mount (no TF): the camera is the base here, so the solver
                       # publishes the optical frame's pose (without base->camera TF it would refuse, rightly)
                       extra=["-p", "pose_solver:base_frame:=camera_color_optical_frame",
                              "-p", "inference_node:use_depth:=true",
                              "-p", "inference_node:reliable_images:=true"]).start()
    yield g
    g.stop()
    for f in d.glob("*.log"):
        print(f"---- {f.name}\n{f.read_text()[-3000:]}")


class DepthProbe(Probe):
    def __init__(self):
        super().__init__()
        from sensor_msgs.msg import Image
        self.depth = self.node.create_publisher(Image, DEPTH_TOPIC, 10)
        self.stamp = 1000

    def next_stamp(self):
        self.stamp += 1
        return self.stamp

    def send(self, rgb_msg, depth_msg=None, info=None, frame=None, expect="pose", timeout=20.0):
        """Publish one frame (colour + aligned depth + camera_info, same stamp) and wait until it was handled:
        expect="pose" waits for its pose, expect=<diagnostics key> for that counter to rise (the counters are
        read after one /diagnostics period, so earlier frames are already in them); then one more second for
        anything else it caused. Returns the new poses."""
        frame = frame or query_frames(1)[0]
        sec = self.next_stamp()
        info = info if info is not None else camera_info_msg(frame.intrinsics)
        if depth_msg is None:
            depth_msg = numpy_to_image_msg((frame.depth * 1000).astype(np.uint16), "16UC1")
        n = len(self.poses)
        self.spin(1.2)
        before = self.counter(expect) if expect != "pose" else 0
        for m in (info, depth_msg, rgb_msg):
            m.header.stamp.sec, m.header.stamp.nanosec = sec, 0
            m.header.frame_id = "camera_color_optical_frame"
        self.info.publish(info)
        self.spin(0.3)  # camera_info is latched per topic, not paired by stamp: let it land before its image
        self.depth.publish(depth_msg)
        self.spin(0.05)
        self.img.publish(rgb_msg)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.spin(0.1)
            if (len(self.poses) > n) if expect == "pose" else (self.counter(expect) > before):
                break
        self.spin(1.0)
        return self.poses[n:]

    def counter(self, key):
        return int(self.inference_diag()[0].get(key, 0))


@pytest.fixture(scope="module")
def probe(depth_graph):
    p = DepthProbe()
    p.wait_for_graph()
    yield p
    p.close()


def rgb_msg(frame=None):
    return numpy_to_image_msg((frame or query_frames(1)[0]).rgb, "rgb8")


def assert_refused(probe, graph, poses, key="bad_input", before=0, text=""):
    assert poses == [], "a pose was published for a bad input"
    assert probe.counter(key) > before, probe.inference_diag()
    if text:
        assert text in probe.inference_diag()[0].get("last_refusal", ""), probe.inference_diag()
    assert all(graph.alive().values())


def test_good_frame_is_localized(probe):
    """The control: the same publisher with a well-formed frame gives a correct pose."""
    f = query_frames(1)[0]
    poses = probe.send(rgb_msg(f), frame=f)
    assert len(poses) == 1
    dt, dr = pose_error(T_from_pose_msg(poses[0].pose.pose), f.pose)
    assert dt < 0.03 and dr < 1.0


def test_wrong_step_is_refused(probe, depth_graph):
    before = probe.counter("bad_input")
    m = rgb_msg()
    m.step = m.width * 3 + 64  # claims padding the data does not have
    assert_refused(probe, depth_graph, probe.send(m, expect="bad_input"), before=before, text="step")


def test_data_shorter_than_the_size_is_refused(probe, depth_graph):
    before = probe.counter("bad_input")
    m = rgb_msg()
    m.data = array.array("B", bytes(m.data)[: len(m.data) // 2])
    assert_refused(probe, depth_graph, probe.send(m, expect="bad_input"), before=before)


def test_empty_image_is_refused(probe, depth_graph):
    from sensor_msgs.msg import Image
    before = probe.counter("bad_input")
    m = Image(height=0, width=0, encoding="rgb8", step=0)
    assert_refused(probe, depth_graph, probe.send(m, expect="bad_input"), before=before)


def test_depth_not_aligned_to_colour_is_refused(probe, depth_graph):
    before = probe.counter("bad_input")
    small = numpy_to_image_msg(np.full((240, 320), 2000, np.uint16), "16UC1")
    assert_refused(probe, depth_graph, probe.send(rgb_msg(), small, expect="bad_input"), before=before,
                   text="not aligned")


@pytest.mark.parametrize("value", [np.nan, np.inf, 0.0])
def test_nan_inf_zero_depth_never_gives_a_wrong_pose(probe, depth_graph, value):
    f = query_frames(1)[0]
    depth = numpy_to_image_msg(np.full(f.depth.shape, value, np.float32), "32FC1")
    errors = probe.counter("internal_errors")
    poses = probe.send(rgb_msg(f), depth, frame=f, timeout=8.0)
    for p in poses:  # the query's depth is not needed to localize: a pose may come, and then it must be right
        dt, dr = pose_error(T_from_pose_msg(p.pose.pose), f.pose)
        assert dt < 0.03 and dr < 1.0
    assert probe.counter("internal_errors") == errors and all(depth_graph.alive().values())


def test_zero_camera_info_is_refused(probe, depth_graph):
    before = probe.counter("bad_input")
    info = camera_info_msg(ps.INTR)
    info.k = [0.0] * 9
    assert_refused(probe, depth_graph, probe.send(rgb_msg(), info=info, expect="bad_input"), before=before,
                   text="intrinsics")


def test_camera_info_of_another_size_is_refused(probe, depth_graph):
    before = probe.counter("refused")
    info = camera_info_msg(Intrinsics(400, 400, 159.5, 119.5, 320, 240))
    assert_refused(probe, depth_graph, probe.send(rgb_msg(), info=info, expect="refused"), key="refused", before=before,
                   text="camera_info is for 320x240")


def test_duplicated_and_out_of_order_stamps_give_no_second_pose(probe, depth_graph):
    f = query_frames(1)[0]
    assert len(probe.send(rgb_msg(f), frame=f)) == 1
    before = probe.counter("stale_or_duplicate_stamps")
    probe.stamp -= 1                                   # the same stamp again
    assert probe.send(rgb_msg(f), frame=f, expect="stale_or_duplicate_stamps") == []
    probe.stamp -= 1                                   # wait: one second older than the last one handed out
    # (a jump of more than one second back is a clock reset, handled as a bag loop, see test_faults)
    assert probe.send(rgb_msg(f), frame=f, expect="stale_or_duplicate_stamps") == []
    assert probe.counter("stale_or_duplicate_stamps") >= before + 2
    assert all(depth_graph.alive().values())


def test_place_not_in_the_map_is_refused(probe, depth_graph):
    before = probe.counter("refused")
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    poses = probe.send(numpy_to_image_msg(noise, "rgb8"), timeout=8.0)
    assert poses == [] and all(depth_graph.alive().values())
    solver = next((v for k, v in probe.diag.items() if k.startswith("pose_solver")), ({}, ""))[0]
    assert probe.counter("refused") > before or int(solver.get("refused", 0)) >= 1


@pytest.mark.parametrize("node,param", [
    ("inference_node", "num_references:=0"),
    ("inference_node", "min_similarity:=1.5"),
    ("inference_node", "max_pair_dt:=-1.0"),
    ("pose_solver_node", "max_position_std:=0.0"),
    ("pose_solver_node", "tf_timeout:=100.0"),
    ("keyframe_indexer", "min_rotation_deg:=720.0"),
    ("keyframe_indexer", "pose_source:=gps"),
])
def test_absurd_parameter_is_rejected_at_start_with_its_name(node, param):
    p = subprocess.run([sys.executable, "-m", f"relocal_ros.nodes.{node}", "--ros-args", "-p", param,
                        "-p", "mapping:=true" if node == "keyframe_indexer" else "use_sim_time:=false",
                        "-p", "map_path:=/nonexistent"], capture_output=True, text=True, timeout=90)
    out = p.stdout + p.stderr
    assert p.returncode != 0, out[-2000:]
    assert param.split(":=")[0] in out


def test_crafted_weights_file_is_refused_without_running_its_code(tmp_path):
    """torch.load(weights_only=True), as every loader here uses, refuses pickled objects: nothing is executed."""
    import torch
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "weights.pt"
    with open(bad, "wb") as f:
        pickle.dump({"state": Exploit()}, f)
    with pytest.raises(Exception):
        torch.load(bad, map_location="cpu", weights_only=True)
    assert not marker.exists()
