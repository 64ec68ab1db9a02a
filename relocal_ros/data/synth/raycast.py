"""Exact reference renderer in numpy: casts one ray per pixel centre against the scene's yawed boxes (slab test in
each box's frame). It is the depth oracle for the rasteriser's tests, and cheap at thumbnail size, which is how the
camera samplers use it to reject views that stare at a nearby surface before anything is rendered for real.
Colour uses the rasteriser's texture mapping and lighting with nearest-texel lookup (no mipmaps), so colours are
close to but not identical with the GL frames; depth is exact to float precision."""
from __future__ import annotations

import numpy as np

from relocal_ros.geometry.camera import Intrinsics


def pixel_rays(intr: Intrinsics) -> np.ndarray:
    """(H*W, 3) camera-frame directions through pixel centres, scaled so that z = 1 (the ray parameter is depth)."""
    u, v = np.meshgrid(np.arange(intr.width, dtype=np.float64), np.arange(intr.height, dtype=np.float64))
    return np.stack([((u - intr.cx) / intr.fx).ravel(), ((v - intr.cy) / intr.fy).ravel(),
                     np.ones(u.size)], axis=1)


def _box_frames(boxes):
    yaw = np.array([b.yaw for b in boxes], np.float64)
    return (np.array([b.centre for b in boxes], np.float64), np.array([b.size for b in boxes], np.float64) / 2,
            np.cos(yaw), np.sin(yaw))


def cast(boxes, T_world_cam: np.ndarray, intr: Intrinsics, near: float = 0.05):
    """Nearest hit per pixel: (depth HxW float32 metres, 0 = nothing; box index HxW int, -1 = nothing;
    hit point in the hit box's frame (H*W, 3); face axis (H*W,) int)."""
    d_cam = pixel_rays(intr)
    d_world = d_cam @ T_world_cam[:3, :3].T
    origin = T_world_cam[:3, 3]
    centres, halves, cos, sin = _box_frames(boxes)
    n = len(d_cam)
    best = np.full(n, np.inf)
    index = np.full(n, -1, np.int64)
    axis = np.zeros(n, np.int64)
    # boxes in chunks so that the (boxes x rays) temporaries stay small
    chunk = max(1, 200_000 // n)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for s in range(0, len(boxes), chunk):
            c, h, co, si = (a[s:s + chunk, None] if a.ndim == 1 else a[s:s + chunk] for a in (centres, halves, cos, sin))
            # ray origin and directions in each box's frame (rotate by -yaw about z): (k, 1) and (k, n) per axis
            q = origin - c
            o = (co * q[:, :1] + si * q[:, 1:2], -si * q[:, :1] + co * q[:, 1:2], q[:, 2:3])
            d = (co * d_world[:, 0] + si * d_world[:, 1], -si * d_world[:, 0] + co * d_world[:, 1],
                 np.broadcast_to(d_world[:, 2], (len(c), n)))
            t_in = np.full((len(c), n), -np.inf)
            t_out = np.full((len(c), n), np.inf)
            ax_in = np.zeros((len(c), n), np.int8)
            ax_out = np.zeros((len(c), n), np.int8)
            for a in range(3):
                # a ray parallel to a slab gives +-inf (inside the slab) or an empty interval (outside): as wanted
                inv = 1.0 / d[a]
                t0 = (-h[:, a:a + 1] - o[a]) * inv
                t1 = (h[:, a:a + 1] - o[a]) * inv
                lo, hi = np.fmin(t0, t1), np.fmax(t0, t1)
                up = lo > t_in
                t_in = np.where(up, lo, t_in)
                ax_in[up] = a
                down = hi < t_out
                t_out = np.where(down, hi, t_out)
                ax_out[down] = a
            # no back-face culling in the rasteriser: from inside a box its far faces are what is seen
            front = t_in > near
            t = np.where(front, t_in, t_out)
            t = np.where((t_in <= t_out) & (t > near), t, np.inf)
            k = t.argmin(axis=0)
            cols = np.arange(n)
            tk = t[k, cols]
            hit = tk < best
            best[hit] = tk[hit]
            index[hit] = s + k[hit]
            axis[hit] = np.where(front, ax_in, ax_out)[k[hit], cols[hit]]
    depth = np.where(index >= 0, best, 0.0).astype(np.float32).reshape(intr.height, intr.width)
    return depth, index.reshape(intr.height, intr.width), axis, best, d_world, origin


def raycast_depth(boxes, T_world_cam: np.ndarray, intr: Intrinsics) -> np.ndarray:
    """Metric depth (z in the OpenCV camera frame) per pixel, float32, 0 where the ray hits nothing."""
    return cast(boxes, T_world_cam, intr)[0]


def raycast_render(boxes, textures: np.ndarray, T_world_cam: np.ndarray, intr: Intrinsics, light=(0, 0, 2.5),
                   ambient: float = 0.55, intensity: float = 1.2) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8, depth float32 metres) with the rasteriser's texture mapping and lighting (nearest texel)."""
    depth, index, axis, t, d_world, origin = cast(boxes, T_world_cam, intr)
    flat = index.ravel()
    hit = flat >= 0
    rgb = np.zeros((flat.size, 3), np.float64)
    if hit.any():
        centres, halves, cos, sin = _box_frames(boxes)
        b = flat[hit]
        p_world = origin + d_world[hit] * t[hit, None]
        q = p_world - centres[b]
        p = np.column_stack([cos[b] * q[:, 0] + sin[b] * q[:, 1], -sin[b] * q[:, 0] + cos[b] * q[:, 1], q[:, 2]])
        ax = axis[hit]
        rows = np.arange(len(b))
        sign = np.sign(p[rows, ax])
        u_ax = np.where(ax == 0, 1, 0)
        v_ax = np.where(ax == 2, 1, 2)
        h = halves[b]
        pu, pv = p[rows, u_ax], p[rows, v_ax]
        hu, hv = h[rows, u_ax], h[rows, v_ax]
        scale = np.array([bx.uv_scale for bx in boxes])[b]
        tex_id = np.array([bx.texture for bx in boxes])[b]
        tiled = scale > 0
        du, dv = pu / hu, pv / hv
        u = np.where(tiled, (pu + hu) * scale, np.where(sign > 0, (du + 1) / 2, (1 - du) / 2))
        v = np.where(tiled, (pv + hv) * scale, (1 - dv) / 2)
        _, th, tw, _ = textures.shape
        ti = np.clip(np.floor((v % 1.0) * th).astype(int), 0, th - 1)
        tj = np.clip(np.floor((u % 1.0) * tw).astype(int), 0, tw - 1)
        albedo = textures[tex_id, ti, tj].astype(np.float64) / 255.0
        n_box = np.zeros((len(b), 3))
        n_box[rows, ax] = sign
        normal = np.column_stack([cos[b] * n_box[:, 0] - sin[b] * n_box[:, 1],
                                  sin[b] * n_box[:, 0] + cos[b] * n_box[:, 1], n_box[:, 2]])
        to_light = np.asarray(light, np.float64) - p_world
        d2 = (to_light ** 2).sum(1)
        diffuse = np.maximum((normal * to_light).sum(1) / np.sqrt(d2), 0.0)
        rgb[hit] = albedo * (ambient + intensity * diffuse / (1.0 + 0.04 * d2))[:, None]
    rgb = np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8).reshape(intr.height, intr.width, 3)
    return rgb, depth


class RaycastRenderer:
    """The rasteriser's interface (render, release) over the ray caster: the fallback where no EGL context can be
    made (a container without libEGL, a lent machine whose driver refuses it). Same depth; nearest-texel colours."""

    def __init__(self, boxes, textures: np.ndarray, intr: Intrinsics, light=(0, 0, 2.5), ambient: float = 0.55,
                 intensity: float = 1.2):
        self.boxes, self.textures, self.intr = boxes, textures, intr
        self.light, self.ambient, self.intensity = light, ambient, intensity

    def render(self, T_world_cam: np.ndarray, intr: Intrinsics | None = None) -> tuple[np.ndarray, np.ndarray]:
        T_world_cam = np.asarray(T_world_cam, dtype=np.float64)
        if T_world_cam.shape != (4, 4) or not np.all(np.isfinite(T_world_cam)):
            raise ValueError("T_world_cam must be a finite 4x4 camera-to-world transform")
        return raycast_render(self.boxes, self.textures, T_world_cam, intr or self.intr, self.light, self.ambient,
                              self.intensity)

    def release(self) -> None:
        pass
