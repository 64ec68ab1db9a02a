"""ros2 launch relocal_ros relocal.launch.py map_path:=/path/to/map [namespace:=robot1] [use_sim_time:=true]
    [params_file:=...] [autostart:=true] [use_lifecycle_manager:=false]

The three nodes are lifecycle nodes. autostart:=true (default): each configures and activates itself.
use_lifecycle_manager:=true: a nav2_lifecycle_manager (bond_timeout 0: the nodes offer no bond) brings them up
(autostart:=true) or waits for its ~/manage_nodes service; the nodes then do not start themselves. To put them
under Nav2's own localization lifecycle manager instead, launch with autostart:=false and add keyframe_indexer,
inference_node, pose_solver to its node_names (with bond_timeout: 0.0)."""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node

NODES = (("keyframe_indexer", "keyframe_indexer"), ("inference_node", "inference_node"),
         ("pose_solver", "pose_solver"))


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("relocal_ros"), "config", "relocal.yaml")
    params = LaunchConfiguration("params_file")
    namespace = LaunchConfiguration("namespace")
    use_sim_time = LaunchConfiguration("use_sim_time")
    autostart = LaunchConfiguration("autostart")
    use_manager = LaunchConfiguration("use_lifecycle_manager")
    self_start = PythonExpression(["'", autostart, "'.lower() == 'true' and '", use_manager, "'.lower() != 'true'"])
    common = [params, {"map_path": LaunchConfiguration("map_path"), "use_sim_time": use_sim_time,
                       "autostart": self_start}]
    actions = [
        DeclareLaunchArgument("params_file", default_value=default_params, description="node parameters"),
        DeclareLaunchArgument("map_path", default_value="", description="keyframe map directory"),
        DeclareLaunchArgument("namespace", default_value="", description="robot namespace (topics are relative: "
                              "relocalization/pose, initialpose, ...)"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay, simulation)"),
        DeclareLaunchArgument("autostart", default_value="true", description="configure and activate at start"),
        DeclareLaunchArgument("use_lifecycle_manager", default_value="false",
                              description="bring the nodes up with nav2_lifecycle_manager (bond off)"),
    ]
    for executable, name in NODES:
        actions.append(Node(package="relocal_ros", executable=executable, name=name, namespace=namespace,
                            parameters=common, output="screen"))
    actions.append(Node(
        package="nav2_lifecycle_manager", executable="lifecycle_manager", name="lifecycle_manager_relocalization",
        namespace=namespace, output="screen", condition=IfCondition(use_manager),
        parameters=[{"use_sim_time": use_sim_time, "autostart": autostart, "bond_timeout": 0.0,
                     "node_names": [name for _, name in NODES]}]))
    return LaunchDescription(actions)
