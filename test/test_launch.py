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
    assert len([e for e in ld.entities if type(e).__name__ == "Node"]) == 3
