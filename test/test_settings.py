"""One source of truth for settings (relocal_ros/settings.py) and one contract for methods (relocal_ros/methods/):
these tests fail as soon as the pipeline defaults, the nodes' parameters, the parameter file, the command line or
a method drift from them."""
import re
from pathlib import Path

import pytest
import yaml

from relocal_ros import settings
from relocal_ros.cli import build_parser
from relocal_ros.mapping.builder import default_build_conf
from relocal_ros.methods import method_class, method_names, registry
from relocal_ros.methods.base import CORRESPONDENCES, RELATIVE_POSES, SolverTraits
from relocal_ros.pipeline import PoseSolver, default_conf, merge_conf

REPO = Path(__file__).resolve().parents[1]


def test_parameter_file_is_the_schema_rendered():
    text = (REPO / "config" / "relocal.yaml").read_text()
    assert text == settings.render_params_yaml(), \
        "config/relocal.yaml drifted: python -m relocal_ros.settings --write-yaml config/relocal.yaml"
    conf = yaml.safe_load(text)
    for node in settings.NODES:
        expected = {s.name: s.ros_default for s in settings.node_settings(node)}
        shared = {k: v for k, v in conf["/**"]["ros__parameters"].items() if k in expected}
        assert set(shared).isdisjoint(conf[f"/**/{node}"]["ros__parameters"]), node  # each parameter once
        assert {**shared, **conf[f"/**/{node}"]["ros__parameters"]} == expected, node
    for name in conf["/**"]["ros__parameters"]:  # the wildcard section holds parameters of several nodes only
        assert len(settings.setting(name).nodes) > 1, name


def test_pipeline_and_builder_defaults_come_from_the_schema():
    conf = default_conf()
    for stage in ("inference", "solver"):
        assert conf[stage] == {s.name: s.default for s in settings.all_settings() if s.stage == stage}
    assert default_build_conf() == {s.name: s.default for s in settings.all_settings() if s.stage == "mapping"}
    for s in settings.all_settings():  # every default satisfies its own range / choices
        s.check(s.default)
        assert s.description and s.stage in ("inference", "solver", "mapping", None), s.name
        assert s.stage is not None or s.nodes, f"{s.name}: a node-only setting that no node declares"
        assert set(s.nodes) <= set(settings.NODES), s.name


def test_no_default_is_written_outside_the_schema():
    """Nodes declare parameters only through declare_settings; the pipeline keeps no defaults table of its own."""
    for path in (REPO / "relocal_ros" / "nodes").glob("*.py"):
        calls = re.findall(r"(?<!def )\bdeclare\((?:self|node),", path.read_text())
        if path.name == "node_utils.py":
            assert len(calls) == 1, "declare_settings is the only caller of declare()"
        else:
            assert not calls, f"{path.name} declares a parameter outside relocal_ros/settings.py"
    pipeline = (REPO / "relocal_ros" / "pipeline.py").read_text()
    assert "_DEFAULT_CONF" not in pipeline and "METHODS" not in pipeline


def test_values_outside_range_or_choices_are_refused():
    with pytest.raises(ValueError, match=r"min_inliers must be in \[6,"):
        PoseSolver({"min_inliers": 3})
    with pytest.raises(ValueError, match="fusion must be one of"):
        PoseSolver({"fusion": "average"})
    with pytest.raises(KeyError, match="unknown configuration key"):
        merge_conf(default_conf(), {"solver": {"min_inlers": 3}})
    assert settings.parse_assignment("min_inliers=40") == ("solver", "min_inliers", 40)
    assert settings.parse_assignment("use_depth=false") == ("inference", "use_depth", False)
    assert settings.parse_assignment("guided_radius = 8") == ("inference", "guided_radius", 8.0)
    with pytest.raises(ValueError, match="must be in"):
        settings.parse_assignment("min_inlier_ratio=1.5")
    with pytest.raises(ValueError, match="must be true or false"):
        settings.parse_assignment("use_depth=maybe")
    with pytest.raises(ValueError, match="not a localization setting"):
        settings.parse_assignment("base_frame=base")  # a node parameter, not the pipeline's
    with pytest.raises(KeyError, match="unknown setting"):
        settings.parse_assignment("no_such_setting=1")


def test_command_line_options_come_from_the_schema():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    build = {a.dest: a for a in sub["build-map"]._actions}
    for s in settings.all_settings():
        if s.stage == "mapping" and s.cli:
            assert build[s.name].default == s.default and s.cli in build[s.name].option_strings, s.name
            assert (build[s.name].choices is None) == (s.choices is None)
    loc = {a.dest: a for a in sub["localize"]._actions}
    assert list(loc["method"].choices) == list(method_names())
    assert loc["fusion"].choices == list(settings.setting("fusion").choices)
    a = parser.parse_args(["localize", "M", "Q", "--out", "E", "--set", "min_inliers=50", "--mc-samples", "7"])
    assert a.set == ["min_inliers=50"] and a.mc_samples == 7 and a.method is None  # None: not given


def test_every_method_honours_the_contract():
    assert method_names()[0] == "xfeat_pnp"  # the default first
    assert {"xfeat_pnp", "xfeat_relative", "exrenet", "sanet", "dsacpp"} <= set(registry())
    seen = {}
    for name, cls in registry().items():
        assert cls.name == name
        assert cls.evidence in (CORRESPONDENCES, RELATIVE_POSES)
        assert isinstance(cls.needs_retrieval, bool) and isinstance(cls.uses_depth, bool)
        assert isinstance(cls.solver, SolverTraits)
        for m in ("__init__", "add_keyframe", "infer"):
            assert callable(getattr(cls, m)), (name, m)
        for s in cls.settings:
            assert s.stage == "inference", (name, s.name)
            assert seen.setdefault(s.name, s) is s, f"{s.name} defined twice (second time by {name})"
    with pytest.raises(ValueError, match="unknown method 'nope'; available"):
        method_class("nope")
    # the method files stay light: listing them must not import torch or the networks
    import subprocess
    import sys
    code = ("import sys; from relocal_ros.methods import registry; registry(); "
            "print('torch' in sys.modules, any(m.startswith('relocal_ros.networks') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


@pytest.mark.ros
def test_nodes_declare_exactly_the_schema(own_domain):
    """Real nodes (not started): every declared parameter, its default, its range and its description are the
    schema's; an out-of-range value or an unknown choice stops the node at construction."""
    rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 PyPI wheels) not installed")
    pytest.importorskip("relocal_msgs.msg", reason="relocal_msgs not built: run scripts/build_interfaces.sh .venv")
    from rclpy.parameter import Parameter

    from relocal_ros.nodes.inference_node import InferenceNode
    from relocal_ros.nodes.keyframe_indexer import KeyframeIndexerNode
    from relocal_ros.nodes.pose_solver_node import PoseSolverNode
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        for cls, name in ((KeyframeIndexerNode, settings.INDEXER), (InferenceNode, settings.INFERENCE),
                          (PoseSolverNode, settings.SOLVER)):
            node = cls(context=ctx)
            try:
                declared = set(node._parameters) - {"use_sim_time", "start_type_description_service"}  # rclpy's own
                schema = {s.name: s for s in settings.node_settings(name)}
                assert declared == set(schema), (name, declared ^ set(schema))
                for n, s in schema.items():
                    assert node.get_parameter(n).value == s.ros_default, (name, n)
                    desc = node.describe_parameter(n)
                    assert desc.description.startswith(s.description), (name, n)
                    if s.range and isinstance(s.default, float):
                        r = desc.floating_point_range[0]
                        assert (r.from_value, r.to_value) == s.range, (name, n)
                    elif s.range:
                        r = desc.integer_range[0]
                        assert (r.from_value, r.to_value) == s.range, (name, n)
            finally:
                node.destroy_node()
        with pytest.raises(Exception, match="min_inliers"):
            PoseSolverNode(context=ctx, parameter_overrides=[Parameter("min_inliers", value=2)])
        with pytest.raises(ValueError, match="pnp_scoring must be one of"):
            PoseSolverNode(context=ctx, parameter_overrides=[Parameter("pnp_scoring", value="best")])
        with pytest.raises(ValueError, match="unknown method"):
            InferenceNode(context=ctx, parameter_overrides=[Parameter("method", value="magic")])
    finally:
        rclpy.shutdown(context=ctx)
