"""ros2 launch relocal_ros relocal.launch.py map_path:=/path/to/map [params_file:=...]"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("relocal_ros"), "config", "relocal.yaml")
    params = LaunchConfiguration("params_file")
    map_path = LaunchConfiguration("map_path")
    common = [params, {"map_path": map_path}]
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params, description="node parameters"),
        DeclareLaunchArgument("map_path", default_value="", description="keyframe map directory"),
        Node(package="relocal_ros", executable="keyframe_indexer", name="keyframe_indexer", parameters=common,
             output="screen"),
        Node(package="relocal_ros", executable="inference_node", name="inference_node", parameters=common,
             output="screen"),
        Node(package="relocal_ros", executable="pose_solver", name="pose_solver", parameters=common, output="screen"),
    ])
