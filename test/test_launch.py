import importlib.util
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def test_params_file_declares_every_node():
    conf = yaml.safe_load((REPO / "config" / "relocal.yaml").read_text())
    assert {"/**", "/**/keyframe_indexer", "/**/inference_node", "/**/pose_solver"} <= set(conf)


def test_launch_file_describes_three_nodes():
    pytest.importorskip("launch_ros", reason="launch_ros is not on PyPI: checked on ROS installs only")
    spec = importlib.util.spec_from_file_location("relocal_launch", REPO / "launch" / "relocal.launch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ld = mod.generate_launch_description()
    nodes = [e for e in ld.entities if type(e).__name__ == "Node"]
    assert len(nodes) == 4  # the three relocal nodes + the optional nav2_lifecycle_manager (use_lifecycle_manager)
    args = {e.name for e in ld.entities if type(e).__name__ == "DeclareLaunchArgument"}
    assert {"params_file", "map_path", "namespace", "use_sim_time", "autostart", "use_lifecycle_manager"} <= args


def test_launch_file_compiles():
    """launch_ros is not on PyPI: at least the file is valid Python everywhere."""
    compile((REPO / "launch" / "relocal.launch.py").read_text(), "relocal.launch.py", "exec")
