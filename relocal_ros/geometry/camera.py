"""Pinhole camera intrinsics, projection and depth lifting (OpenCV convention: x right, y down, z forward)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml


@dataclass(frozen=True)
class Intrinsics:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    # OpenCV radial-tangential (k1, k2, p1, p2, k3); all zeros for an undistorted/synthetic camera.
    dist: tuple = field(default=(0.0, 0.0, 0.0, 0.0, 0.0))

    def __post_init__(self):
        vals = (self.fx, self.fy, self.cx, self.cy)
        if not all(np.isfinite(v) for v in vals) or self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"invalid intrinsics: fx={self.fx} fy={self.fy} cx={self.cx} cy={self.cy}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"invalid image size {self.width}x{self.height}")

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def has_distortion(self) -> bool:
        return any(abs(d) > 0 for d in self.dist)

    def scaled(self, width: int, height: int) -> "Intrinsics":
        """Intrinsics of the same camera after resizing the image to width x height (pixel-centre aware)."""
        sx, sy = width / self.width, height / self.height
        return replace(self, fx=self.fx * sx, fy=self.fy * sy,
                       cx=(self.cx + 0.5) * sx - 0.5, cy=(self.cy + 0.5) * sy - 0.5,
                       width=int(width), height=int(height))

    def to_dict(self) -> dict:
        k1, k2, p1, p2, k3 = self.dist
        return dict(width=int(self.width), height=int(self.height), fx=float(self.fx), fy=float(self.fy),
                    cx=float(self.cx), cy=float(self.cy), k1=float(k1), k2=float(k2), p1=float(p1),
                    p2=float(p2), k3=float(k3))

    @classmethod
    def from_dict(cls, d: dict) -> "Intrinsics":
        dist = tuple(float(d.get(k, 0.0)) for k in ("k1", "k2", "p1", "p2", "k3"))
        return cls(float(d["fx"]), float(d["fy"]), float(d["cx"]), float(d["cy"]),
                   int(d["width"]), int(d["height"]), dist)

    @classmethod
    def from_camera_info(cls, msg) -> "Intrinsics":
        """From sensor_msgs/CameraInfo (k is row-major 3x3); raises ValueError on an uncalibrated (zero) K."""
        k = list(msg.k)
        d = list(msg.d)[:5] + [0.0] * max(0, 5 - len(msg.d))
        if msg.distortion_model not in ("", "plumb_bob", "rational_polynomial") and any(d):
            raise ValueError(f"unsupported distortion model {msg.distortion_model!r}")
        return cls(k[0], k[4], k[2], k[5], int(msg.width), int(msg.height), tuple(float(x) for x in d))


def load_calibration_yaml(path: Path) -> tuple[Intrinsics, float | None]:
    """Read a calibration.yaml (width, height, fx, fy, cx, cy, k1..k3, depth_scale) -> (intrinsics, depth scale)."""
    with open(path) as f:
        d = yaml.safe_load(f)
    if not isinstance(d, dict):
        raise ValueError(f"{path}: not a calibration mapping")
    scale = d.get("depth_scale")
    return Intrinsics.from_dict(d), (float(scale) if scale is not None else None)


def load_intrinsics_matrix(path: Path, width: int, height: int) -> Intrinsics:
    """Read a 3x3 camera matrix written as plain text, as 3DMatch and SUN3D ship it (camera-intrinsics.txt): no
    distortion, no image size (the caller gives the images' size)."""
    try:
        K = np.loadtxt(path, dtype=float)
    except ValueError as e:
        raise ValueError(f"{path}: not a 3x3 camera matrix ({e})") from None
    if K.shape != (3, 3) or not np.allclose(K[2], (0.0, 0.0, 1.0)) \
            or not np.allclose((K[1, 0], K[0, 1]), 0.0, atol=1e-6):
        raise ValueError(f"{path}: not a 3x3 pinhole camera matrix [[fx 0 cx] [0 fy cy] [0 0 1]]")
    return Intrinsics(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), int(width), int(height))


def save_calibration_yaml(path: Path, intr: Intrinsics, depth_scale: float | None = None, comment: str = "",
                          extra: dict | None = None) -> None:
    d = intr.to_dict()
    if depth_scale is not None:
        d["depth_scale"] = float(depth_scale)
    d.update(extra or {})
    text = "".join(f"# {line}\n" for line in comment.splitlines()) + yaml.safe_dump(d, sort_keys=False)
    Path(path).write_text(text)


def backproject(depth: np.ndarray, intr: Intrinsics, uv: np.ndarray | None = None) -> np.ndarray:
    """Camera-frame 3D points. With uv (N,2 pixel coords) returns (N,3) using nearest depth; else (H,W,3).
    Invalid depth (0, NaN, inf) gives NaN points."""
    depth = np.asarray(depth, dtype=np.float32)
    if uv is None:
        h, w = depth.shape
        u, v = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        z = depth
    else:
        u, v = uv[:, 0], uv[:, 1]
        ui = np.clip(np.round(u).astype(int), 0, depth.shape[1] - 1)
        vi = np.clip(np.round(v).astype(int), 0, depth.shape[0] - 1)
        z = depth[vi, ui]
    z = np.where(np.isfinite(z) & (z > 0), z, np.nan).astype(np.float32)
    x = (u - intr.cx) / intr.fx * z
    y = (v - intr.cy) / intr.fy * z
    return np.stack([x, y, z], axis=-1)


def project(points_cam: np.ndarray, intr: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Project (N,3) camera-frame points -> (N,2) pixels and a mask of points in front of the camera."""
    z = points_cam[:, 2]
    front = z > 1e-6
    zs = np.where(front, z, 1.0)
    uv = np.stack([intr.fx * points_cam[:, 0] / zs + intr.cx, intr.fy * points_cam[:, 1] / zs + intr.cy], axis=1)
    return uv, front


def undistort_points(uv: np.ndarray, intr: Intrinsics) -> np.ndarray:
    """Pixel coordinates of the same rays in the ideal (undistorted) pinhole camera with the same K."""
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    if not intr.has_distortion or len(uv) == 0:
        return uv.astype(np.float32)
    import cv2
    out = cv2.undistortPoints(uv[:, None, :], intr.K, np.array(intr.dist, dtype=np.float64), P=intr.K)
    return out[:, 0, :].astype(np.float32)


def stable_depth(depth: np.ndarray, max_relative_jump: float = 0.05) -> np.ndarray:
    """Depth with pixels at depth discontinuities (and non-finite or non-positive values) set to 0: a keypoint
    on an object's silhouette would otherwise take the background's depth, or a blend of both."""
    import cv2
    d = np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)
    kernel = np.ones((3, 3), np.uint8)
    hi = cv2.dilate(d, kernel)
    lo = cv2.erode(np.where(d > 0, d, np.float32(1e9)), kernel)
    ok = (d > 0) & (lo < 1e8) & (hi - lo <= max_relative_jump * d)
    return np.where(ok, d, 0).astype(np.float32)


def sample_depth(depth: np.ndarray, pix: np.ndarray) -> np.ndarray:
    """Bilinear depth at sub-pixel positions (N x 2, pixels of depth) where all four neighbours are valid (> 0),
    else 0: no blending with holes. float64 (N,). Pass stable_depth(depth) to leave out silhouettes as well."""
    import cv2
    d = np.asarray(depth, np.float32)
    pix = np.asarray(pix).reshape(-1, 2)
    mx = pix[:, 0].astype(np.float32)[None]
    my = pix[:, 1].astype(np.float32)[None]
    z = cv2.remap(d, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)[0]
    support = cv2.remap((d > 0).astype(np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                        borderValue=0)[0]
    return np.where(support > 0.999, z, 0.0).astype(np.float64)


def lift_pixels(depth: np.ndarray | None, intr: Intrinsics, pixels: np.ndarray,
                T_map_cam: np.ndarray | None = None) -> np.ndarray:
    """3D points of image pixels (N x 2, the colour image's distorted pixel coordinates) from the aligned depth
    image, in the camera frame or, with T_map_cam, the map frame; NaN where the depth is missing or at a
    silhouette. Bilinear depth only where all four neighbours are valid (no blending with holes)."""
    pixels = np.asarray(pixels, np.float64).reshape(-1, 2)
    n = len(pixels)
    if depth is None or n == 0:
        return np.full((n, 3), np.nan, np.float32)
    d = stable_depth(depth)
    h, w = d.shape
    sx, sy = w / intr.width, h / intr.height  # depth may be stored at another resolution than the colour
    z = sample_depth(d, np.stack([(pixels[:, 0] + 0.5) * sx - 0.5, (pixels[:, 1] + 0.5) * sy - 0.5], 1))
    uv = undistort_points(pixels, intr)
    pc = np.stack([(uv[:, 0] - intr.cx) / intr.fx * z, (uv[:, 1] - intr.cy) / intr.fy * z, z], 1)
    if T_map_cam is not None:
        pc = pc @ T_map_cam[:3, :3].T + T_map_cam[:3, 3]
    pc[z <= 0] = np.nan
    return pc.astype(np.float32)


def register_depth(depth: np.ndarray, depth_intrinsics: Intrinsics, colour_intrinsics: Intrinsics,
                   t_colour_depth=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Depth from a separate depth camera re-projected into the colour camera's pixels (rotation between the two
    taken as identity, translation t_colour_depth in metres): every valid depth pixel is lifted, moved and projected,
    the nearest surface kept where several land on one pixel. Pixels that no depth pixel reaches stay 0."""
    h, w = colour_intrinsics.height, colour_intrinsics.width
    v, u = np.nonzero(np.isfinite(depth) & (depth > 0))
    z = depth[v, u].astype(np.float64)
    di, ci = depth_intrinsics, colour_intrinsics
    x = (u - di.cx) / di.fx * z + t_colour_depth[0]
    y = (v - di.cy) / di.fy * z + t_colour_depth[1]
    z = z + t_colour_depth[2]
    front = z > 1e-3
    uc = np.round(ci.fx * x[front] / z[front] + ci.cx).astype(int)
    vc = np.round(ci.fy * y[front] / z[front] + ci.cy).astype(int)
    zc = z[front]
    ok = (uc >= 0) & (uc < w) & (vc >= 0) & (vc < h)
    out = np.full((h, w), np.inf, np.float32)
    np.minimum.at(out, (vc[ok], uc[ok]), zc[ok].astype(np.float32))
    out[~np.isfinite(out)] = 0.0
    return out
