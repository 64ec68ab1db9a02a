"""Mapping from what a Nav2 robot publishes: nav_msgs/Odometry of base_link in odom (not at the image stamps),
map->odom on /tf, base_link->camera on /tf_static, images through image_transport (JPEG `compressed`, PNG
`compressedDepth`). The keyframe indexer (a real process, lifecycle-autostarted) interpolates the odometry to each
image stamp and composes it with TF; its keyframes are the cameras' true poses, with the depth of the PNG."""
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 PyPI wheels) not installed")
pytest.importorskip("relocal_msgs.msg", reason="relocal_msgs not built: run scripts/build_interfaces.sh .venv")
pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs not built: run scripts/build_interfaces.sh .venv")

import planar_scene as ps  # noqa: E402
from mapping_harness import mapping_indexer  # noqa: E402
from relocal_ros.geometry.poses import T_from_tq, invert, make_T, pose_error  # noqa: E402
from relocal_ros.mapping.keyframe_map import KeyframeMap  # noqa: E402

pytestmark = pytest.mark.ros  # make test-fast leaves these out (pytest.ini)

OPTICAL = "camera_color_optical_frame"
T_BASE_CAM = T_from_tq([0.15, -0.02, 0.35], [-0.5, 0.5, -0.5, 0.5])
T_MAP_ODOM = make_T(np.eye(3), [1.0, -0.5, 0.0]) @ T_from_tq([0, 0, 0], [0, 0, np.sin(0.2), np.cos(0.2)])
V, W = np.array([0.5, 0.1, 0.0]), np.radians(30.0)   # the robot's velocity in odom (m/s) and yaw rate (rad/s)


def odom_sample(T_odom_base_at_image, s):
    """base_link in odom s seconds after the image: moving at V and turning at W (rotation about odom z)."""
    a = W * s
    Rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    return make_T(Rz @ T_odom_base_at_image[:3, :3], T_odom_base_at_image[:3, 3] + V * s)


def test_keyframes_from_odometry_interpolated_and_composed_with_tf(tmp_path):
    from geometry_msgs.msg import TransformStamped
    from nav_msgs.msg import Odometry
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, CompressedImage
    from tf2_msgs.msg import TFMessage

    import array

    from relocal_ros.data.images import compress_depth_mm, compress_rgb
    from relocal_ros.nodes.conversions import camera_info_msg, pose_msg_from_T, transform_msg_from_T

    extra = ["-p", "mapping_pose_type:=Odometry", "-p", "mapping_pose_topic:=odom", "-p", "image_transport:=compressed"]
    with mapping_indexer(tmp_path, "nav2_mapping_probe", extra, tick=0.02) as probe:
        node, map_dir = probe.node, probe.map_dir
        static_qos = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                                reliability=ReliabilityPolicy.RELIABLE)
        pubs = {"color": node.create_publisher(CompressedImage, "/camera/camera/color/image_raw/compressed", 10),
                "depth": node.create_publisher(CompressedImage,
                                               "/camera/camera/aligned_depth_to_color/image_raw/compressedDepth", 10),
                "info": node.create_publisher(CameraInfo, "/camera/camera/color/camera_info", 10),
                "odom": node.create_publisher(Odometry, "odom", 50),
                "tf": node.create_publisher(TFMessage, "/tf", 100),
                "static": node.create_publisher(TFMessage, "/tf_static", static_qos)}

        def tf(T, parent, child, t_ns):
            m = TransformStamped()
            m.header.stamp.sec, m.header.stamp.nanosec = divmod(t_ns, 1_000_000_000)
            m.header.frame_id, m.child_frame_id = parent, child
            m.transform = transform_msg_from_T(T)
            return m

        probe.wait_for_indexer("odom")
        pubs["static"].publish(TFMessage(transforms=[tf(T_BASE_CAM, "base_link", OPTICAL, 0)]))
        probe.spin(1.0)
        frames = ps.map_frames()
        for i, f in enumerate(frames):
            t_ns = (500 + i) * 1_000_000_000
            T_odom_base = invert(T_MAP_ODOM) @ f.pose @ invert(T_BASE_CAM)
            pubs["tf"].publish(TFMessage(transforms=[tf(T_MAP_ODOM, "map", "odom", t_ns - 10_000_000),
                                                     tf(T_MAP_ODOM, "map", "odom", t_ns + 10_000_000)]))
            for s in (-0.02, 0.03):   # odometry 20 ms before and 30 ms after the image, never at its stamp
                od = Odometry()
                od.header.stamp.sec, od.header.stamp.nanosec = divmod(t_ns + int(s * 1e9), 1_000_000_000)
                od.header.frame_id, od.child_frame_id = "odom", "base_link"
                od.pose.pose = pose_msg_from_T(odom_sample(T_odom_base, s))
                pubs["odom"].publish(od)
            fmt, data = compress_rgb(f.rgb, "jpeg", 95)
            rgb = CompressedImage(format=fmt, data=array.array("B", data))
            fmt, data = compress_depth_mm(np.rint(f.depth * 1000).astype(np.uint16))
            depth = CompressedImage(format=fmt, data=array.array("B", data))
            info = camera_info_msg(f.intrinsics)
            for m in (rgb, depth, info):
                m.header.stamp.sec, m.header.stamp.nanosec = divmod(t_ns, 1_000_000_000)
                m.header.frame_id = OPTICAL
            probe.spin(0.1)
            pubs["info"].publish(info)
            pubs["depth"].publish(depth)
            pubs["color"].publish(rgb)
            probe.wait_for_keyframes(i + 1)
        probe.save_map()
        kmap = KeyframeMap.load(map_dir)
        assert len(kmap) == len(frames)
        truth = {f"{500 + i}.000000": f.pose for i, f in enumerate(frames)}
        errs = np.array([pose_error(kf.T_map_cam, truth[kf.stamp]) for kf in kmap.keyframes])
        # the nearest odometry sample alone would be 1 cm / 0.6 deg off: interpolation and composition are exact
        print(f"keyframe pose error max {errs[:, 0].max() * 1000:.3f} mm / {errs[:, 1].max():.4f} deg")
        assert errs[:, 0].max() < 1e-3 and errs[:, 1].max() < 0.05, errs.max(axis=0)
        for kf, f in zip(sorted(kmap.keyframes, key=lambda k: float(k.stamp)), frames):   # depth from the PNG
            X = kf.points3d[np.isfinite(kf.points3d).all(1)]
            assert len(X) > 100
            z_plane = (invert(f.pose) @ np.c_[X, np.ones(len(X))].T)[2]   # camera-frame depth of map points
            assert np.all(z_plane > 0)
            np.testing.assert_allclose(X[:, 2], ps.PLANE_Z, atol=0.01)   # on the plane z = 2 m, to 1 cm
        assert probe.proc.poll() is None
