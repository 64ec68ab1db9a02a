"""Headless rasteriser on the CPU: moderngl over EGL on Mesa llvmpipe (measured ≈10x faster than the alternatives
here, see ../shared/notes/rendering-on-cpu.md). Metric depth is the view-space z written to a float target by the
fragment shader, exact to float precision (no z-buffer linearisation)."""
from __future__ import annotations

import logging

import numpy as np

from relocal_ros.geometry.camera import Intrinsics
from relocal_ros.geometry.poses import invert

VERTEX = """
#version 330
uniform mat4 view;      // world -> GL camera
uniform mat4 proj;
in vec3 in_pos; in vec3 in_normal; in vec2 in_uv; in float in_layer;
out vec3 v_world; out vec3 v_normal; out vec2 v_uv; out float v_layer; out float v_depth;
void main() {
    vec4 cam = view * vec4(in_pos, 1.0);
    v_world = in_pos; v_normal = in_normal; v_uv = in_uv; v_layer = in_layer;
    v_depth = -cam.z;   // OpenCV camera z (forward), metres
    gl_Position = proj * cam;
}
"""
FRAGMENT = """
#version 330
uniform sampler2DArray textures;
uniform vec3 light; uniform float ambient; uniform float intensity;
in vec3 v_world; in vec3 v_normal; in vec2 v_uv; in float v_layer; in float v_depth;
layout(location = 0) out vec4 colour;
layout(location = 1) out float depth;
void main() {
    vec3 to_light = light - v_world;
    float d2 = dot(to_light, to_light);
    float diffuse = max(dot(normalize(v_normal), to_light * inversesqrt(d2)), 0.0);
    vec3 albedo = texture(textures, vec3(v_uv, v_layer)).rgb;
    colour = vec4(albedo * (ambient + intensity * diffuse / (1.0 + 0.04 * d2)), 1.0);
    depth = v_depth;
}
"""


def box_mesh(boxes) -> np.ndarray:
    """Interleaved vertices (x y z nx ny nz u v layer) of the outward faces of every box, two triangles each."""
    out = []
    for b in boxes:
        c, s = np.cos(b.yaw), np.sin(b.yaw)
        R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        half = np.asarray(b.size) / 2
        for axis in range(3):
            for sign in (-1, 1):
                u_ax, v_ax = [a for a in range(3) if a != axis]
                corners = []
                for du, dv in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                    p = np.zeros(3)
                    p[axis] = sign * half[axis]
                    p[u_ax], p[v_ax] = du * half[u_ax], dv * half[v_ax]
                    if b.uv_scale > 0:  # tiled material, repeats per metre
                        uv = ((p[u_ax] + half[u_ax]) * b.uv_scale, (p[v_ax] + half[v_ax]) * b.uv_scale)
                    else:               # one picture over the face, upright
                        uv = ((du + 1) / 2 if sign > 0 else (1 - du) / 2, (1 - dv) / 2)
                    corners.append((R @ p + np.asarray(b.centre), uv))
                n = np.zeros(3)
                n[axis] = sign
                n = R @ n
                for i in (0, 1, 2, 0, 2, 3):
                    pos, uv = corners[i]
                    out.append([*pos, *n, *uv, float(b.texture)])
    return np.asarray(out, np.float32)


def gl_projection(intr: Intrinsics, near: float = 0.05, far: float = 50.0) -> np.ndarray:
    W, H = intr.width, intr.height
    P = np.zeros((4, 4))
    P[0, 0], P[0, 2] = 2 * intr.fx / W, 1 - (2 * intr.cx + 1) / W
    P[1, 1], P[1, 2] = 2 * intr.fy / H, (2 * intr.cy + 1) / H - 1
    P[2, 2], P[2, 3] = -(far + near) / (far - near), -2 * far * near / (far - near)
    P[3, 2] = -1
    return P


CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])


class Renderer:
    """One EGL context per process; render(T_world_cam) -> (RGB uint8, depth float32 metres, 0 = nothing)."""

    def __init__(self, boxes, textures: np.ndarray, intr: Intrinsics, light=(0, 0, 2.5), ambient: float = 0.55,
                 intensity: float = 1.2):
        import moderngl
        self.ctx = moderngl.create_standalone_context(backend="egl")
        self.intr = intr
        n, h, w, _ = textures.shape
        self.tex = self.ctx.texture_array((w, h, n), 3, np.ascontiguousarray(textures).tobytes())
        self.tex.build_mipmaps()
        self.tex.filter = (moderngl.LINEAR_MIPMAP_LINEAR, moderngl.LINEAR)
        self.tex.repeat_x = self.tex.repeat_y = True
        self.prog = self.ctx.program(vertex_shader=VERTEX, fragment_shader=FRAGMENT)
        self.vbo = self.ctx.buffer(box_mesh(boxes).tobytes())
        self.vao = self.ctx.vertex_array(self.prog, [(self.vbo, "3f 3f 2f 1f", "in_pos", "in_normal", "in_uv",
                                                      "in_layer")])
        self.intr = None
        self._targets = {}  # (width, height) -> framebuffer: one per image size, made on first use
        self._use(intr)
        self.prog["light"].value = tuple(float(v) for v in light)
        self.prog["ambient"].value = float(ambient)
        self.prog["intensity"].value = float(intensity)
        self.tex.use(0)
        self.prog["textures"].value = 0

    def _use(self, intr: Intrinsics) -> None:
        size = (intr.width, intr.height)
        if size not in self._targets:
            colour = self.ctx.renderbuffer(size, 4)
            depth = self.ctx.renderbuffer(size, 1, dtype="f4")  # view-space z, exact (no z-buffer linearisation)
            self._targets[size] = self.ctx.framebuffer([colour, depth], self.ctx.depth_renderbuffer(size))
        if intr != self.intr:
            self.prog["proj"].write(gl_projection(intr).T.astype("f4").tobytes())
            self.intr = intr
        self.fbo = self._targets[size]

    def render(self, T_world_cam: np.ndarray, intr: Intrinsics | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(H x W x 3 uint8 RGB, H x W float32 depth in metres, 0 where nothing is hit) seen from T_world_cam
        (camera-to-world, OpenCV axes), with the constructor's intrinsics unless others are given."""
        T_world_cam = np.asarray(T_world_cam, dtype=np.float64)
        if T_world_cam.shape != (4, 4) or not np.all(np.isfinite(T_world_cam)):
            raise ValueError("T_world_cam must be a finite 4x4 camera-to-world transform")
        if intr is not None:
            self._use(intr)
        view = CV_TO_GL @ invert(T_world_cam)
        self.prog["view"].write(view.T.astype("f4").tobytes())
        self.fbo.use()
        self.fbo.clear(0.0, 0.0, 0.0, 1.0, depth=1.0)
        self.ctx.enable(self.ctx.DEPTH_TEST)  # no face culling: walls are seen from inside their room
        self.vao.render()
        W, H = self.intr.width, self.intr.height
        # glReadPixels rows run bottom-up
        rgb = np.frombuffer(self.fbo.read(components=3, attachment=0), np.uint8).reshape(H, W, 3)[::-1]
        depth = np.frombuffer(self.fbo.read(components=1, attachment=1, dtype="f4"), np.float32).reshape(H, W)[::-1]
        return np.ascontiguousarray(rgb), np.ascontiguousarray(depth)

    def release(self) -> None:
        self.ctx.release()


_egl_failed: str | None = None  # why this process could not make an EGL context (asked once per process)


def open_renderer(boxes, textures: np.ndarray, intr: Intrinsics, light=(0, 0, 2.5), ambient: float = 0.55,
                  intensity: float = 1.2):
    """The GL rasteriser, or the ray caster (raycast.RaycastRenderer, ~20x slower, nearest-texel colours) when this
    process cannot make an EGL context; the fallback is logged once. For the data generators, which must run on
    whatever machine renders them."""
    global _egl_failed
    if _egl_failed is None:
        try:
            return Renderer(boxes, textures, intr, light, ambient, intensity)
        except Exception as exc:  # moderngl/glcontext raise plain Exceptions when libEGL or a driver is missing
            _egl_failed = f"{type(exc).__name__}: {exc}"
            logging.getLogger(__name__).warning("no EGL context (%s): rendering with the numpy ray caster",
                                                _egl_failed)
    from relocal_ros.data.synth.raycast import RaycastRenderer
    return RaycastRenderer(boxes, textures, intr, light, ambient, intensity)
