"""The three nodes as separate processes exchanging real messages over Fast DDS, fed by a replayed bag; plus the
bad inputs a camera driver can deliver. Each test asserts what is published (and what is not)."""
import subprocess
import sys

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 PyPI wheels) not installed")
pytest.importorskip("relocal_msgs.msg", reason="relocal_msgs not built: run scripts/build_interfaces.sh .venv")
pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs not built: run scripts/build_interfaces.sh .venv")

import planar_scene as ps  # noqa: E402
from relocal_ros.data.bags import BagReadError, write_bag  # noqa: E402
from relocal_ros.evaluation.replay import replay_bag  # noqa: E402
from relocal_ros.geometry.poses import pose_error  # noqa: E402
from relocal_ros.mapping.builder import build_map  # noqa: E402
from relocal_ros.nodes.runner import GraphProcesses  # noqa: E402
from graph_probe import Probe, image_msg, query_frames  # noqa: E402

pytestmark = pytest.mark.ros  # make test-fast leaves these out (pytest.ini)

# the bag's camera_link sits at the optical centre: the solver publishes camera_link's pose; the test publishers
# are reliable, so the inference node may subscribe reliably (no lost fragments of large images under load)
SOLVER_ARGS = ["-p", "pose_solver:base_frame:=camera_link", "-p", "inference_node:reliable_images:=true"]


@pytest.fixture(scope="module")
def plane_map_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("graph") / "map"
    build_map(ps.map_frames(), {"vocabulary": "map", "vocabulary_words": 16}, progress=False).save(d)
    return d


@pytest.fixture(scope="module")
def graph(module_domain, plane_map_dir, tmp_path_factory):
    """One live graph for the module. Each test asks for what it needs (a running graph, or one whose inference
    node has seen nothing yet) and never relies on what another test sent it, so any test passes alone or in
    any order."""
    logs = tmp_path_factory.mktemp("logs")
    g = GraphProcesses(str(plane_map_dir), extra=SOLVER_ARGS, log_dir=logs).start()
    yield g
    g.stop()
    for f in logs.iterdir():  # shown by pytest only when a test failed
        print(f"---- {f.name}\n{f.read_text()[-3000:]}")


@pytest.fixture()
def probe(graph):
    p = Probe()
    p.wait_for_graph()
    yield p
    p.close()


@pytest.fixture()
def fresh_probe(graph):
    """A probe on the graph whose inference node was restarted for this test: it has never received a
    camera_info (the node keeps the last one it got, so another test's would hide a missing one)."""
    graph.restart("inference_node")
    p = Probe()  # created after the restart: its discovery sees the new inference node only
    p.wait_for_graph()
    yield p
    p.close()


def test_missing_camera_info_is_reported_and_nothing_is_published(fresh_probe, graph):
    f = query_frames(1)[0]
    # until the node's diagnostics count our images (its side of discovery may miss the first few), at most 30 s
    for i in range(60):
        fresh_probe.img.publish(image_msg(f, stamp=(300 + i, 0)))
        fresh_probe.spin(0.5)
        if fresh_probe.inference_count("images_received") >= 3:
            break
    fresh_probe.spin(2.0)
    values, message = fresh_probe.inference_diag()
    assert "no camera_info" in message
    assert fresh_probe.poses == [] and all(graph.alive().values())


def test_replayed_bag_is_localized_by_the_live_graph(graph, tmp_path):
    frames = query_frames()
    bag = write_bag(frames, tmp_path / "queries", storage="mcap")
    report = replay_bag(bag, tmp_path / "est.txt", rate=2.0, base_frame="camera_link")
    assert all(graph.alive().values())
    assert report.images_sent == len(frames)
    truth = {f.stamp: f.pose for f in frames}
    assert report.poses_received >= 0.6 * len(frames), report  # a busy inference node may drop stale frames
    for stamp, T in report.estimates.items():
        dt, dr = pose_error(T, truth[stamp])
        assert dt < 0.03 and dr < 1.0, (stamp, dt, dr)
    assert len(report.latencies_s) == report.poses_received and max(report.latencies_s) < 5.0
    lines = (tmp_path / "est.txt").read_text().split("\n")
    assert lines[0].split()[0] in truth  # TUM trajectory, stamps as in the bag


def test_unsupported_encoding_is_refused_without_crash(graph, probe):
    f = query_frames(1)[0]
    from relocal_ros.nodes.conversions import camera_info_msg
    info = camera_info_msg(f.intrinsics)
    info.header.stamp.sec = 400
    # until the node reports a refusal, at most 20 s: it handles an image only once our camera_info has reached
    # it (a fresh publisher: discovery takes its time on a loaded machine), not one another test sent before
    for i in range(50):
        probe.info.publish(info)
        probe.img.publish(image_msg(f, encoding="yuv422", stamp=(400 + i, 0)))
        probe.spin(0.4)
        if probe.inference_count("bad_input") >= 1:
            break
    probe.spin(2.5)
    values, _ = probe.inference_diag()
    assert int(values.get("bad_input", 0)) >= 1
    assert "yuv422" in values.get("last_refusal", "")
    assert probe.poses == [] and all(graph.alive().values())


def test_corrupt_bag_is_a_clear_error(tmp_path):
    bag = write_bag(query_frames(2), tmp_path / "b", storage="mcap")
    data = next(bag.glob("*.mcap"))
    data.write_bytes(data.read_bytes()[:4000])
    with pytest.raises(BagReadError):
        replay_bag(bag, tmp_path / "e.txt")


def test_out_of_range_parameter_is_rejected_at_start(own_domain):
    p = subprocess.run([sys.executable, "-m", "relocal_ros.nodes.pose_solver_node", "--ros-args", "-p",
                        "min_inliers:=-5"], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "min_inliers" in p.stderr + p.stdout and "Traceback" not in p.stderr.splitlines()[-1]
