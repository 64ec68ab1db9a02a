"""Conversions between the pipeline's dataclasses / numpy poses and ROS 2 messages (rclpy classes)."""
from __future__ import annotations

import numpy as np

from relocal_ros.data.frames import RGBDFrame
from relocal_ros.data.images import depth_from_msg, rgb_from_msg
from relocal_ros.data.stamps import stamp_from_sec_nanosec, stamp_to_sec_nanosec
from relocal_ros.estimates import QueryEvidence, RelativePoseHypothesis
from relocal_ros.geometry.camera import Intrinsics
from relocal_ros.geometry.poses import T_from_tq, tq_from_T

# Published when an accepted estimate carries no covariance (never zeros, which mean "perfectly known" to EKFs):
# 10 cm and 5 degrees standard deviation.
FALLBACK_COVARIANCE = np.diag([0.1 ** 2] * 3 + [np.radians(5.0) ** 2] * 3)


def stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def msg_stamp_str(stamp) -> str:
    return stamp_from_sec_nanosec(stamp.sec, stamp.nanosec)


def time_msg(stamp: str):
    from builtin_interfaces.msg import Time
    sec, nsec = stamp_to_sec_nanosec(stamp)
    return Time(sec=sec, nanosec=nsec)


def pose_msg_from_T(T: np.ndarray):
    from geometry_msgs.msg import Pose
    t, q = tq_from_T(T)
    p = Pose()
    p.position.x, p.position.y, p.position.z = (float(v) for v in t)
    p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = (float(v) for v in q)
    return p


def T_from_pose_msg(p) -> np.ndarray:
    return T_from_tq([p.position.x, p.position.y, p.position.z],
                     [p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w])


def transform_msg_from_T(T: np.ndarray):
    from geometry_msgs.msg import Transform
    t, q = tq_from_T(T)
    tr = Transform()
    tr.translation.x, tr.translation.y, tr.translation.z = (float(v) for v in t)
    tr.rotation.x, tr.rotation.y, tr.rotation.z, tr.rotation.w = (float(v) for v in q)
    return tr


def T_from_transform_msg(tr) -> np.ndarray:
    return T_from_tq([tr.translation.x, tr.translation.y, tr.translation.z],
                     [tr.rotation.x, tr.rotation.y, tr.rotation.z, tr.rotation.w])


def camera_info_msg(intr: Intrinsics, header=None):
    from sensor_msgs.msg import CameraInfo
    m = CameraInfo()
    if header is not None:
        m.header = header
    m.width, m.height = int(intr.width), int(intr.height)
    m.distortion_model = "plumb_bob"
    m.d = [float(v) for v in intr.dist]
    m.k = [float(v) for v in intr.K.reshape(-1)]
    m.r = [float(v) for v in np.eye(3).reshape(-1)]
    m.p = [float(v) for v in np.hstack([intr.K, np.zeros((3, 1))]).reshape(-1)]
    return m


def frame_from_msgs(color, depth, camera_info) -> RGBDFrame:
    """Raises ValueError (UnsupportedEncodingError, ImageFormatError, bad intrinsics) with a clear message."""
    intr = Intrinsics.from_camera_info(camera_info)
    rgb = rgb_from_msg(color)
    d = depth_from_msg(depth) if depth is not None else None
    if d is not None and d.shape != rgb.shape[:2]:
        raise ValueError(f"depth {d.shape[1]}x{d.shape[0]} is not aligned to colour {rgb.shape[1]}x{rgb.shape[0]} "
                         f"(subscribe to the aligned depth topic)")
    return RGBDFrame(msg_stamp_str(color.header.stamp), rgb, d, intr, None, color.header.frame_id)


def evidence_to_msg(ev: QueryEvidence, header):
    from relocal_msgs.msg import QueryEvidence as Msg
    from relocal_msgs.msg import RelativePoseHypothesis as HypMsg
    m = Msg()
    m.header = header
    if ev.intrinsics is not None:
        m.camera_info = camera_info_msg(ev.intrinsics, header)
    m.method = ev.method
    m.image_points = np.asarray(ev.image_points, np.float32).reshape(-1).tolist()
    m.map_points = np.asarray(ev.map_points, np.float32).reshape(-1).tolist()
    m.weights = np.asarray(ev.weights, np.float32).reshape(-1).tolist()
    m.keyframe_ids = [int(k) for k in ev.keyframe_ids]
    for h in ev.hypotheses:
        hm = HypMsg()
        hm.keyframe_id = int(h.keyframe_id)
        hm.keyframe_pose = pose_msg_from_T(h.T_map_kf)
        hm.relative_pose = pose_msg_from_T(h.T_kf_query)
        hm.scale, hm.uncertainty = float(h.scale), float(h.uncertainty)
        hm.translation_samples = np.asarray(h.translation_samples, float).reshape(-1).tolist()
        if hasattr(hm, "dense_consistency"):  # relocal_msgs before this field: the check's result stays behind
            hm.dense_consistency = float(h.dense_consistency) if np.isfinite(h.dense_consistency) else -1.0
        if hasattr(hm, "photometric_agreement"):
            hm.photometric_agreement = _share_to_msg(h.photometric_agreement)
        m.hypotheses.append(hm)
    m.inference_seconds = float(ev.inference_seconds)
    m.refusal = ev.refusal
    m.map_pose_sigma_m, m.map_pose_sigma_deg = float(ev.map_sigma_m), float(ev.map_sigma_deg)
    _optional_to_msg(ev, m)
    return m


# QueryEvidence fields that relocal_msgs carries only from some version on: transported when the message has them
# (bool[] independent, float32[] query_points (3N), float64 dense_consistency / dense_photometric,
# uint32 dense_judged / dense_samples); otherwise the dataclass defaults apply on the solver side.
_OPTIONAL_ARRAYS = {"independent": (bool, None), "query_points": (np.float32, 3)}
_OPTIONAL_SCALARS = {"dense_consistency": float, "dense_photometric": float, "dense_judged": int, "dense_samples": int,
                     "fallback": bool}


def _share_to_msg(value: float) -> float:
    """A check's score as the message holds it: negative means not checked, so a (wrong pose's) negative
    correlation is sent as 0."""
    return max(float(value), 0.0) if np.isfinite(value) else -1.0


def _optional_to_msg(ev, m) -> None:
    if hasattr(m, "photometric_agreement"):
        m.photometric_agreement = _share_to_msg(ev.photometric_agreement)
    if hasattr(m, "photometric_band"):
        m.photometric_band = _share_to_msg(ev.photometric_band)
    if hasattr(m, "checked_pose"):
        m.checked_pose = [] if ev.checked_pose is None else \
            [float(v) for v in np.asarray(ev.checked_pose, np.float64).reshape(-1)]
    for name, (dtype, _) in _OPTIONAL_ARRAYS.items():
        if hasattr(m, name) and hasattr(ev, name):
            setattr(m, name, [dtype(v) for v in np.asarray(getattr(ev, name), dtype).reshape(-1)])
    for name, kind in _OPTIONAL_SCALARS.items():
        if hasattr(m, name) and hasattr(ev, name):
            setattr(m, name, kind(getattr(ev, name)))


def _optional_from_msg(m, ev) -> None:
    ev.photometric_agreement = _checked_share(getattr(m, "photometric_agreement", -1.0))
    ev.photometric_band = _checked_share(getattr(m, "photometric_band", -1.0))
    pose = np.asarray(getattr(m, "checked_pose", []), np.float64)
    ev.checked_pose = pose.reshape(4, 4) if pose.size == 16 and np.isfinite(pose).all() else None
    for name, (dtype, width) in _OPTIONAL_ARRAYS.items():
        if hasattr(m, name) and hasattr(ev, name):
            arr = np.asarray(getattr(m, name), dtype)
            setattr(ev, name, arr.reshape(-1, width) if width else arr)
    for name, kind in _OPTIONAL_SCALARS.items():
        if hasattr(m, name) and hasattr(ev, name):
            setattr(ev, name, kind(getattr(m, name)))


def _checked_share(value: float) -> float:
    """A message's share (negative: not checked, the message's default) as the dataclass holds it (NaN)."""
    return float(value) if value >= 0 else float("nan")


def evidence_from_msg(m) -> QueryEvidence:
    intr = None
    if m.camera_info.width > 0 and m.camera_info.k[0] > 0:
        intr = Intrinsics.from_camera_info(m.camera_info)
    hyps = [RelativePoseHypothesis(int(h.keyframe_id), T_from_pose_msg(h.keyframe_pose), T_from_pose_msg(h.relative_pose),
                                   float(h.scale), float(h.uncertainty),
                                   np.asarray(h.translation_samples, float).reshape(-1, 3),
                                   _checked_share(getattr(h, "dense_consistency", -1.0)),
                                   _checked_share(getattr(h, "photometric_agreement", -1.0)))
            for h in m.hypotheses]
    ev = QueryEvidence(msg_stamp_str(m.header.stamp), intr, m.method,
                       np.asarray(m.image_points, np.float32).reshape(-1, 2),
                       np.asarray(m.map_points, np.float32).reshape(-1, 3),
                       np.asarray(m.weights, np.float32), [int(k) for k in m.keyframe_ids], hyps,
                       float(m.inference_seconds), m.refusal, float(m.map_pose_sigma_m), float(m.map_pose_sigma_deg))
    _optional_from_msg(m, ev)
    if not ev.refusal and intr is None:
        ev.refusal = "evidence without camera intrinsics"
    if len(ev.image_points) != len(ev.map_points) or len(ev.weights) != len(ev.image_points):
        ev.refusal = ev.refusal or (f"inconsistent evidence: {len(ev.image_points)} image points, "
                                    f"{len(ev.map_points)} map points, {len(ev.weights)} weights")
    return ev


def pose_with_covariance_msg(T_map_x: np.ndarray, covariance: np.ndarray | None, header):
    from geometry_msgs.msg import PoseWithCovarianceStamped
    m = PoseWithCovarianceStamped()
    m.header = header
    m.pose.pose = pose_msg_from_T(T_map_x)
    cov = FALLBACK_COVARIANCE if covariance is None else np.asarray(covariance, float)
    m.pose.covariance = [float(v) for v in cov.reshape(-1)]
    return m


def transform_covariance(cov: np.ndarray, T_map_cam: np.ndarray, T_cam_x: np.ndarray) -> np.ndarray:
    """Covariance of the pose of frame x rigidly attached to the camera (x = base_link), same map-frame
    parametrisation (position, small rotation about map axes): the position of x moves with the rotation by the
    lever arm r = R_map_cam t_cam_x: δp_x = δp_cam − [r]× δθ."""
    r = T_map_cam[:3, :3] @ T_cam_x[:3, 3]
    skew = np.array([[0, -r[2], r[1]], [r[2], 0, -r[0]], [-r[1], r[0], 0]])
    J = np.eye(6)
    J[:3, 3:] = -skew
    return J @ cov @ J.T
