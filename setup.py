from glob import glob

from setuptools import find_packages, setup

package_name = "relocal_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["relocal_ros", "relocal_ros.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.xml")),
        ("share/" + package_name + "/models", glob("models/*")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="relocal_ros developers",
    maintainer_email="relocal-ros@users.noreply.github.com",
    description="Real-time visual relocalization from one RGB(-D) image in a known place, for ROS 2.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "relocal = relocal_ros.cli:main",
            "relocal-graph = relocal_ros.nodes.runner:main",
            "keyframe_indexer = relocal_ros.nodes.keyframe_indexer:main",
            "inference_node = relocal_ros.nodes.inference_node:main",
            "pose_solver = relocal_ros.nodes.pose_solver_node:main",
        ],
    },
)
