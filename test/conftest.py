import contextlib
import os
import random
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
pytest.register_assert_rewrite("mapping_harness")  # its asserts explain themselves like the tests' own

# as every relocal process does before its first DDS participant (nodes/dds_profile.py): the tests publish 640x480
# images to the nodes too, and Fast DDS reads its profile once per process (a replay after another test's rclpy
# context kept the default 512 KB shared-memory segment, and its images took lossy fragmented UDP)
from relocal_ros.nodes.dds_profile import use_large_data_profile  # noqa: E402

use_large_data_profile()


@contextlib.contextmanager
def own_ros_domain():
    """A DDS domain of our own (localhost only), so that parallel runs on one machine never hear each other; the
    previous ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE come back afterwards. rclpy.init() and the node
    processes started inside read it from the environment. The one place the tests set up a domain: use it as
    `with own_ros_domain():`, or through the fixtures `own_domain` (one test) and `module_domain` (a module's
    live graph)."""
    saved = {k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")}
    os.environ["ROS_DOMAIN_ID"] = str(random.randint(20, 200))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    try:
        yield os.environ["ROS_DOMAIN_ID"]
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture()
def own_domain():
    """A private DDS domain for one test (own_ros_domain); yields its ROS_DOMAIN_ID."""
    with own_ros_domain() as d:
        yield d


@pytest.fixture(scope="module")
def module_domain():
    """A private DDS domain for a whole module, e.g. for a module-scoped live graph (own_ros_domain)."""
    with own_ros_domain() as d:
        yield d


def shared_data_dir() -> Path:
    return Path(os.environ.get("RELOCAL_DATA_DIR", REPO.parent / "shared" / "data"))


def shared_data(relative: str, what: str, needs: str = "") -> Path:
    """A folder of ../shared/data (needs: a file it must hold), or skip the test with where it was looked for."""
    p = shared_data_dir() / relative
    if not (p / needs).exists():
        pytest.skip(f"{what} not found at {p} (set RELOCAL_DATA_DIR to the shared data folder)")
    return p


@pytest.fixture(scope="session")
def tum_rpy() -> Path:
    return shared_data("tum_rgbd/rgbd_dataset_freiburg1_rpy", "real TUM fr1_rpy data", "rgb.txt")


@pytest.fixture(scope="session")
def tum_desk() -> Path:
    return shared_data("tum_rgbd/rgbd_dataset_freiburg1_desk", "real TUM fr1_desk data", "rgb.txt")


@pytest.fixture(scope="session")
def sun3d_studyroom() -> Path:
    return shared_data("sun3d_3dmatch_sample/studyroom", "SUN3D study room sample", "rgb.txt")


@pytest.fixture(scope="session")
def sevenscenes_stairs() -> Path:
    return shared_data("7scenes_kapture_sample/stairs", "7-Scenes sample")
