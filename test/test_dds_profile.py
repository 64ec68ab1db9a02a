"""Camera images between processes (config/fastdds_large_data.xml, nodes/dds_profile.py): with Fast DDS's default
512 KB shared-memory segment a 640x480 colour image took the fragmented-UDP path, and half of a 3 Hz stream never
reached a reliable depth-2 reader (the inference node's QoS); with the profile every image arrives."""
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import pytest

from relocal_ros.nodes.dds_profile import large_data_env

PUB = textwrap.dedent("""
    import sys, time, numpy as np, rclpy
    from sensor_msgs.msg import Image
    n, rate = int(sys.argv[1]), float(sys.argv[2])
    rclpy.init()
    node = rclpy.create_node("dds_profile_camera")
    pubs = [node.create_publisher(Image, t, 100) for t in ("/dds_test/color", "/dds_test/depth")]
    t0 = time.time()
    while any(p.get_subscription_count() == 0 for p in pubs) and time.time() - t0 < 20:
        rclpy.spin_once(node, timeout_sec=0.1)
    time.sleep(1.0)
    rng = np.random.default_rng(0)
    color = Image(height=480, width=640, encoding="rgb8", step=1920, data=rng.integers(0, 255, 921600, np.uint8).tobytes())
    depth = Image(height=480, width=640, encoding="16UC1", step=1280, data=rng.integers(0, 255, 614400, np.uint8).tobytes())
    for i in range(n):
        color.header.frame_id = depth.header.frame_id = str(i)
        pubs[0].publish(color)
        pubs[1].publish(depth)
        time.sleep(1.0 / rate)
    time.sleep(3.0)
""")
SUB = textwrap.dedent("""
    import sys, time, rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    n, wait = int(sys.argv[1]), float(sys.argv[2])
    rclpy.init()
    node = rclpy.create_node("dds_profile_reader")
    got = set()
    qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)  # the inference node's reliable_images QoS
    node.create_subscription(Image, "/dds_test/color", lambda m: got.add(m.header.frame_id), qos)
    node.create_subscription(Image, "/dds_test/depth", lambda m: None, qos)
    t_end = time.time() + wait
    while time.time() < t_end and len(got) < n:
        rclpy.spin_once(node, timeout_sec=0.1)
    print(len(got))
""")


def test_profile_is_found_and_left_alone_when_the_user_chose_one():
    env = large_data_env({})
    profile = env["FASTDDS_DEFAULT_PROFILES_FILE"]
    seg = ET.parse(profile).getroot().find(".//{http://www.eprosima.com}segment_size")
    assert int(seg.text) >= 4 * 640 * 480 * 3  # several colour images fit
    assert large_data_env({"FASTDDS_DEFAULT_PROFILES_FILE": "/mine.xml"}) == {}
    assert large_data_env({"FASTRTPS_DEFAULT_PROFILES_FILE": "/mine.xml"}) == {}
    assert large_data_env({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}) == {}


@pytest.mark.ros
def test_every_640x480_image_reaches_a_reliable_depth_2_reader_in_another_process(own_domain):
    pytest.importorskip("rclpy", reason="rclpy (ROS 2 PyPI wheels) not installed")
    n, rate = 30, 7.5
    env = {**os.environ, **large_data_env({k: v for k, v in os.environ.items() if "PROFILES_FILE" not in k})}
    reader = subprocess.Popen([sys.executable, "-c", SUB, str(n), "40"], env=env, stdout=subprocess.PIPE, text=True)
    camera = subprocess.run([sys.executable, "-c", PUB, str(n), str(rate)], env=env, timeout=60)
    out, _ = reader.communicate(timeout=60)
    assert camera.returncode == 0
    assert int(out.strip().splitlines()[-1]) == n, f"only {out.strip()} of {n} images arrived"
