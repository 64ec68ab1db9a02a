"""relocal_ros: visual relocalization of a camera in a known place, as plain Python modules and thin ROS 2 nodes."""

__version__ = "0.1.0"
