"""Pose solver node (lifecycle): relocal_msgs/QueryEvidence in; the robot base's pose in the map out, for Nav2 and
robot_localization:

* relocalization/pose — geometry_msgs/PoseWithCovarianceStamped of `base_frame` in `map_frame`, stamped at the
  image time, reliable + transient-local like amcl_pose; every accepted pose (`continuous`, default) or only the
  one answering a `~/relocalize` request (`continuous: false`).
* initialpose (relative name: namespaced with the robot) — exactly one pose per `~/relocalize` call
  (std_srvs/Trigger): the next accepted one. For AMCL beside it (its particle filter is reset by each message).
* TF map→odom (REP-105; map→base_frame when there is no odom frame), with `tf_broadcast` (AMCL's name): the
  latest accepted one re-sent at `tf_publish_rate` stamped now + `transform_tolerance` (AMCL's meaning), also
  while refusing, until a newer accepted pose replaces it (map_odom.MapOdomKeeper).

Without the base_frame→camera transform it refuses: a camera pose published as the base's gives every consumer
a wrong pose. The ERROR diagnostic names the missing transform (a WARN for `base_tf_grace` after start, while
/tf_static may still be on its way). `allow_camera_pose: true` publishes the camera's pose on its own topic,
relocalization/camera_pose, never on the base pose topic or TF. Refusals are logged and counted on /diagnostics.
"""
from __future__ import annotations

import time

from geometry_msgs.msg import PoseWithCovarianceStamped
from std_srvs.srv import Trigger

from relocal_ros.nodes.conversions import (evidence_from_msg, pose_with_covariance_msg, stamp_ns,
                                           transform_covariance)
from relocal_ros.nodes.map_odom import MapOdomKeeper, OneShotRequests, base_tf_problem, map_odom_from
from relocal_ros.nodes.node_utils import POSE_QOS, RELIABLE_QOS, Diagnostics, ManagedNode, Throttle, run_node
from relocal_ros.nodes.tf_io import TfIO


class PoseSolverNode(ManagedNode):
    executor_threads = 1  # every callback is short (a solve: ~10 ms); see ManagedNode.executor_threads

    def __init__(self, **kwargs):
        super().__init__("pose_solver", **kwargs)
        self.conf = self.stage_params("solver")  # every solver setting is a parameter of this node
        from relocal_ros.pipeline import PoseSolver
        PoseSolver(self.conf)  # an unknown pnp_scoring / fusion stops the node at start, with its name
        self.solver = self.diag = self.tf = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    def configure(self) -> None:
        from relocal_ros.pipeline import PoseSolver
        self.solver = PoseSolver(self.conf)
        self.diag = Diagnostics(self, "pose solver")
        self.throttle = Throttle()
        self.keeper = MapOdomKeeper(self.transform_tolerance)
        self.requests = OneShotRequests()
        self._said = set()

    def activate(self) -> None:
        from relocal_msgs.msg import QueryEvidence
        self._started = time.monotonic()
        self.tf = TfIO(self)
        self.pub = self.open_publisher(PoseWithCovarianceStamped, "relocalization/pose", POSE_QOS)
        self.camera_pub = (self.open_publisher(PoseWithCovarianceStamped, "relocalization/camera_pose", POSE_QOS)
                           if self.allow_camera_pose else None)
        self.initialpose_pub = self.open_publisher(PoseWithCovarianceStamped, "initialpose", RELIABLE_QOS)
        self.open_service(Trigger, "~/relocalize", self._on_relocalize)
        self.open_subscription(QueryEvidence, "relocalization/evidence", self._on_evidence, RELIABLE_QOS)
        if self.tf_broadcast:
            self.open_timer(1.0 / self.tf_publish_rate, self._resend_tf)

    def deactivate(self) -> None:
        self.tf.close()
        self.tf = None

    def cleanup(self) -> None:
        self.diag.close()
        self.solver = self.diag = self.keeper = None

    # -- callbacks -------------------------------------------------------------------------------------------
    def _on_relocalize(self, request, response):
        self.requests.request()
        self.diag.count("relocalize_requests")
        response.success = True
        response.message = "the next accepted pose will be published once on initialpose"
        return response

    def _resend_tf(self) -> None:
        tf = self.tf
        if tf is None:
            return
        now_ns = self.get_clock().now().nanoseconds
        if now_ns == 0:   # use_sim_time before the first /clock: no time to stamp with
            return
        st = self.keeper.due(now_ns)
        if st is not None:
            tf.send_ns(st.T, st.parent, st.child, st.stamp_ns)

    def _on_evidence(self, msg) -> None:
        tf = self.tf
        if tf is None:  # deactivated meanwhile
            return
        ev = evidence_from_msg(msg)
        t_ns = stamp_ns(msg.header.stamp)
        tf.note_stamp(t_ns)
        self.diag.counts["tf_clock_resets"] = tf.tf_clock_resets
        est = self.solver.solve(ev)
        self.diag.count("evidence_received")
        if not est.accepted:
            self.diag.count("refused")
            self.diag.values["last_refusal"] = est.reason
            self.throttle(self.get_logger(), "info", "refused", f"{ev.stamp}: no pose published: {est.reason}")
            return
        camera_frame = msg.header.frame_id
        # the extrinsic is static: wait only when its frames exist at all
        T_cam_base = (tf.lookup(camera_frame, self.base_frame, t_ns,
                                self.tf_timeout if tf.frame_known(self.base_frame) else 0.0)
                      if camera_frame else None)
        header = msg.header.__class__()
        header.stamp = msg.header.stamp
        header.frame_id = self.map_frame
        if T_cam_base is None:
            self._no_base_tf(est, camera_frame, header)
            return
        self.diag.error = ""
        one_shot = self.requests.take()
        if not (self.continuous or one_shot):
            self.diag.count("accepted_not_requested")
            return
        T_map_base = est.T_map_cam @ T_cam_base
        out = pose_with_covariance_msg(T_map_base, transform_covariance(est.covariance, est.T_map_cam, T_cam_base),
                                       header)
        self.pub.publish(out)
        if one_shot:
            self.initialpose_pub.publish(out)
            self.diag.count("initialposes_published")
            self.get_logger().info(f"{ev.stamp}: relocalized, published on initialpose")
        self.diag.count("poses_published")
        self.diag.values["last_pose"] = f"{ev.stamp}: {est.reason}"
        if self.tf_broadcast:
            self._update_tf(tf, T_map_base, t_ns)

    def _no_base_tf(self, est, camera_frame: str, header) -> None:
        level, problem = base_tf_problem(self.base_frame, camera_frame, time.monotonic() - self._started,
                                         self.base_tf_grace)
        self.diag.count("refused_no_base_tf")
        self.diag.values["last_refusal"] = problem
        if level == "error":
            self.diag.error = problem
        self.throttle(self.get_logger(), "error" if level == "error" else "info", "no_base_tf",
                      f"{header.stamp.sec}.{header.stamp.nanosec:09d}: no pose published: {problem}")
        if self.camera_pub is not None:
            self.camera_pub.publish(pose_with_covariance_msg(est.T_map_cam, est.covariance, header))
            self.diag.count("camera_poses_published")

    def _update_tf(self, tf: TfIO, T_map_base, t_ns: int) -> None:
        parent, child, T_odom_base = self.map_frame, self.base_frame, None
        if self.odom_frame:
            # wait for odometry at the image's time only when there is odometry at all: without an odom frame every
            # pose blocked this callback for tf_timeout, and the next evidence waited behind it (100 ms at 7.5 Hz)
            wait = self.tf_timeout if tf.frame_known(self.odom_frame) else 0.0
            T_odom_base = tf.lookup(self.odom_frame, self.base_frame, t_ns, wait)
            if T_odom_base is not None:
                child = self.odom_frame
            elif tf.frame_known(self.odom_frame):
                # odom exists but not at this image's time: a map->base_link would give base_link two parents
                self.diag.count("tf_skipped_no_odom_at_stamp")
                return
            else:
                self._once("no_odom", f"no '{self.odom_frame}' frame: publishing {self.map_frame}->{child}")
        for st in self.keeper.update(map_odom_from(T_map_base, T_odom_base), parent, child, t_ns,
                                     self.get_clock().now().nanoseconds):
            tf.send_ns(st.T, st.parent, st.child, st.stamp_ns)
        self.diag.counts["map_odom_updates"] = self.keeper.updates

    def _once(self, key, msg):
        if key not in self._said:
            self._said.add(key)
            self.get_logger().warning(msg)


def main(args=None):
    run_node(PoseSolverNode, args)


if __name__ == "__main__":
    main()
