"""Pose solver node: relocal_msgs/QueryEvidence in; geometry_msgs/PoseWithCovarianceStamped of the robot base in
the map frame out (relocalization/pose, optionally /initialpose for Nav2/AMCL), and TF per REP-105: map→odom from
the estimate and odom→base_link at the image time. Without an odom frame it publishes map→base_link; without the
base_link→camera extrinsic it publishes the camera optical frame's pose (and map→camera) and says so once.
Refusals publish nothing: they are logged and counted on /diagnostics."""
from __future__ import annotations

import time

import numpy as np
from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.node import Node

from relocal_ros.geometry.poses import invert
from relocal_ros.nodes.conversions import (evidence_from_msg, pose_with_covariance_msg, stamp_ns,
                                           transform_covariance)
from relocal_ros.nodes.node_utils import RELIABLE_QOS, Diagnostics, Throttle, declare, run_node
from relocal_ros.nodes.tf_io import TfIO


class PoseSolverNode(Node):
    def __init__(self):
        super().__init__("pose_solver")
        self.map_frame = declare(self, "map_frame", "map", "fixed frame of the map")
        self.odom_frame = declare(self, "odom_frame", "odom", "odometry frame (REP-105); '' to never use one")
        self.base_frame = declare(self, "base_frame", "base_link", "robot base frame whose pose is published")
        self.publish_tf = declare(self, "publish_tf", True, "publish map->odom (or map->base_link) on /tf")
        self.tf_timeout = declare(self, "tf_timeout", 0.1, "wait this long for TF at an image's time (s)", 0.0, 2.0)
        self.publish_initialpose = declare(self, "publish_initialpose", False, "also publish on /initialpose")
        self.base_tf_grace = declare(self, "base_tf_grace", 5.0, "after start, refuse (not guess) while the base->"
                                     "camera TF is unknown for this long; afterwards assume there is none and "
                                     "publish the camera's pose (s)", 0.0, 120.0)
        self._started = time.monotonic()
        conf = {
            "min_inliers": declare(self, "min_inliers", 30, "refuse with fewer PnP inliers", 6, 10000),
            "min_inlier_ratio": declare(self, "min_inlier_ratio", 0.2, "refuse below this inlier ratio", 0.0, 1.0),
            "max_reproj_error": declare(self, "max_reproj_error", 4.0, "RANSAC inlier threshold (px)", 0.5, 50.0),
            "max_position_std": declare(self, "max_position_std", 0.25, "refuse above this position std (m)", 0.001, 10.0),
            "pnp_scoring": declare(self, "pnp_scoring", "ransac", "PnP hypothesis scoring: ransac (poselib) or "
                                   "soft_inlier (DSAC++)"),
            "fusion": declare(self, "fusion", "exrenet", "relative-pose methods: exrenet, irls or rrpr"),
            "min_relative_inliers": declare(self, "min_relative_inliers", 2, "relative-pose methods: refuse when "
                                            "fewer keyframes agree", 1, 20),
        }
        from relocal_ros.pipeline import PoseSolver
        self.solver = PoseSolver(conf)
        self.diag = Diagnostics(self, "pose solver")
        self.throttle = Throttle()
        self.tf = TfIO(self)
        self._said = set()
        self.pub = self.create_publisher(PoseWithCovarianceStamped, "relocalization/pose", RELIABLE_QOS)
        self.initialpose_pub = (self.create_publisher(PoseWithCovarianceStamped, "/initialpose", RELIABLE_QOS)
                                if self.publish_initialpose else None)
        from relocal_msgs.msg import QueryEvidence
        self.create_subscription(QueryEvidence, "relocalization/evidence", self._on_evidence, RELIABLE_QOS)

    def _once(self, key, msg):
        if key not in self._said:
            self._said.add(key)
            self.get_logger().warning(msg)

    def _on_evidence(self, msg) -> None:
        ev = evidence_from_msg(msg)
        self.tf.note_stamp(stamp_ns(msg.header.stamp))
        self.diag.counts["tf_clock_resets"] = self.tf.tf_clock_resets
        est = self.solver.solve(ev)
        self.diag.count("evidence_received")
        if not est.accepted:
            self.diag.count("refused")
            self.diag.values["last_refusal"] = est.reason
            self.throttle(self.get_logger(), "info", "refused", f"{ev.stamp}: no pose published: {est.reason}")
            return
        camera_frame = msg.header.frame_id
        t_ns = stamp_ns(msg.header.stamp)
        # the extrinsic is static: wait only when its frames exist at all
        T_cam_base = (self.tf.lookup(camera_frame, self.base_frame, t_ns,
                                     self.tf_timeout if self.tf.frame_known(self.base_frame) else 0.0)
                      if camera_frame else None)
        if T_cam_base is None and camera_frame != self.base_frame and \
                time.monotonic() - self._started < self.base_tf_grace:
            # a (re)started solver hears /tf_static only after discovery: the camera's pose published as the
            # base's before then would be a wrong pose
            self.diag.count("refused_waiting_for_base_tf")
            self.throttle(self.get_logger(), "info", "no_base_tf_yet", f"{ev.stamp}: no pose published: no TF "
                          f"{self.base_frame}->{camera_frame} yet (waiting up to {self.base_tf_grace} s after start)")
            return
        header = msg.header.__class__()
        header.stamp = msg.header.stamp
        header.frame_id = self.map_frame
        if T_cam_base is not None:
            T_map_x, x_frame = est.T_map_cam @ T_cam_base, self.base_frame
            cov = transform_covariance(est.covariance, est.T_map_cam, T_cam_base)
        else:
            self._once("no_base", f"no TF {self.base_frame}->{camera_frame or '<empty frame_id>'}: publishing the "
                                  f"camera's pose instead of the base's")
            T_map_x, x_frame, cov = est.T_map_cam, camera_frame or "camera", est.covariance
        out = pose_with_covariance_msg(T_map_x, cov, header)
        self.pub.publish(out)
        if self.initialpose_pub is not None:
            self.initialpose_pub.publish(out)
        self.diag.count("poses_published")
        self.diag.values["last_pose"] = f"{ev.stamp}: {est.reason}"
        if self.publish_tf:
            self._publish_tf(T_map_x, x_frame, t_ns, ev.stamp)

    def _publish_tf(self, T_map_x: np.ndarray, x_frame: str, t_ns: int, stamp: str) -> None:
        if self.odom_frame:
            T_odom_x = self.tf.lookup(self.odom_frame, x_frame, t_ns, self.tf_timeout)
            if T_odom_x is not None:
                self.tf.send(T_map_x @ invert(T_odom_x), self.map_frame, self.odom_frame, stamp)
                return
            if self.tf.frame_known(self.odom_frame):
                # odom exists but not at this image's time: a map->base_link would give base_link two parents
                self.diag.count("tf_skipped_no_odom_at_stamp")
                return
        self._once("no_odom", f"no '{self.odom_frame}' frame: publishing {self.map_frame}->{x_frame}")
        self.tf.send(T_map_x, self.map_frame, x_frame, stamp)



    def destroy_node(self):
        self.tf.close()
        return super().destroy_node()


def main(args=None):
    run_node(PoseSolverNode, args)


if __name__ == "__main__":
    main()
