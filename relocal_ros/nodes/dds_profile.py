"""The Fast DDS profile for camera images between processes (config/fastdds_large_data.xml: why, and what it
measured). Fast DDS reads a profile file named by FASTDDS_DEFAULT_PROFILES_FILE when a process creates its first
participant, so the variable must be in the environment before rclpy.init: every node's run_node, relocal-graph's
single process, the replay tool and the test suite set it for themselves. A profile the user chose (the variable, or Fast DDS's older
FASTRTPS_DEFAULT_PROFILES_FILE) and another RMW than Fast DDS are left alone."""
from __future__ import annotations

import os

from relocal_ros.resources import resource_dir

PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


def large_data_env(environ=None) -> dict[str, str]:
    """{variable: profile path} to add to a process's environment, or {} when it is not ours to set."""
    environ = os.environ if environ is None else environ
    if any(environ.get(v) for v in PROFILE_VARIABLES):
        return {}
    if environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") not in ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp"):
        return {}
    profile = resource_dir("config") / "fastdds_large_data.xml"
    return {"FASTDDS_DEFAULT_PROFILES_FILE": str(profile)} if profile.is_file() else {}


def use_large_data_profile() -> None:
    """For this process (before rclpy.init)."""
    os.environ.update(large_data_env())
