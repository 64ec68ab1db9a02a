import contextlib
import os
import random
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


@contextlib.contextmanager
def own_ros_domain():
    """A DDS domain of our own (localhost only), so that parallel runs on one machine never hear each other; the
    previous ROS_DOMAIN_ID comes back afterwards."""
    old = os.environ.get("ROS_DOMAIN_ID")
    os.environ["ROS_DOMAIN_ID"] = str(random.randint(20, 200))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    try:
        yield os.environ["ROS_DOMAIN_ID"]
    finally:
        if old is None:
            os.environ.pop("ROS_DOMAIN_ID", None)
        else:
            os.environ["ROS_DOMAIN_ID"] = old


def shared_data_dir() -> Path:
    return Path(os.environ.get("RELOCAL_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def tum_rpy() -> Path:
    p = shared_data_dir() / "tum_rgbd" / "rgbd_dataset_freiburg1_rpy"
    if not (p / "rgb.txt").is_file():
        pytest.skip(f"real TUM fr1_rpy data not found at {p} (set RELOCAL_DATA_DIR to the shared data folder)")
    return p


@pytest.fixture(scope="session")
def tum_desk() -> Path:
    p = shared_data_dir() / "tum_rgbd" / "rgbd_dataset_freiburg1_desk"
    if not (p / "rgb.txt").is_file():
        pytest.skip(f"real TUM fr1_desk data not found at {p} (set RELOCAL_DATA_DIR to the shared data folder)")
    return p


@pytest.fixture(scope="session")
def sevenscenes_stairs() -> Path:
    p = shared_data_dir() / "7scenes_kapture_sample" / "stairs"
    if not p.is_dir():
        pytest.skip(f"7-Scenes sample not found at {p} (set RELOCAL_DATA_DIR to the shared data folder)")
    return p
