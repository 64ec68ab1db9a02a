"""The synthetic generator checked by geometry: exact depth against analytic planes and the numpy ray caster,
consistent poses across views, the overlap measures, the camera rules, and the on-disk output."""
import filecmp

import numpy as np
import pytest

pytest.importorskip("moderngl", reason="moderngl not installed")

from relocal_ros.data.sources import open_source  # noqa: E402
from relocal_ros.data.synth import build_scene, generate_pairs, generate_scene, scene_intrinsics  # noqa: E402
from relocal_ros.data.synth.cameras import MIN_CLEARANCE, acceptable_view, camera_pose  # noqa: E402
from relocal_ros.data.synth.overlap import (coordinate_overlap, frustum_overlap,  # noqa: E402
                                            frustum_overlap_distance, mutual_overlap)
from relocal_ros.data.synth.raycast import raycast_depth, raycast_render  # noqa: E402
from relocal_ros.data.synth.renderer import Renderer  # noqa: E402
from relocal_ros.data.synth.scene import Box  # noqa: E402
from relocal_ros.geometry.camera import backproject, project  # noqa: E402
from relocal_ros.geometry.poses import invert, pose_error  # noqa: E402

INTR = scene_intrinsics(160, 120)


@pytest.fixture(scope="module")
def scene_renderer():
    scene, textures = build_scene(3)
    r = Renderer(scene.boxes, textures, INTR, scene.light, scene.ambient, scene.intensity)
    yield scene, textures, r
    r.release()


def _centre(room):
    return (room.x0 + room.x1) / 2, (room.y0 + room.y1) / 2


def test_depth_of_a_plane_at_a_known_distance():
    textures = np.full((1, 16, 16, 3), 200, np.uint8)
    wall = Box((2.5, 0.0, 1.0), (0.1, 20.0, 20.0), 0.0, 0, 1.0)   # face at x = 2.45
    r = Renderer([wall], textures, INTR, light=(0, 0, 1))
    T = camera_pose(0.0, 0.0, 1.0, 0.0)                               # looking along +x
    _, depth = r.render(T)
    assert np.abs(depth - 2.45).max() < 1e-5                          # fronto-parallel: z is 2.45 everywhere
    assert np.abs(raycast_depth([wall], T, INTR) - 2.45).max() < 1e-6
    T_tilted = camera_pose(0.0, 0.0, 1.0, np.radians(20), np.radians(-10), np.radians(5))
    _, depth = r.render(T_tilted)
    pts = backproject(depth, INTR).reshape(-1, 3) @ T_tilted[:3, :3].T + T_tilted[:3, 3]
    assert np.abs(pts[:, 0] - 2.45).max() < 1e-4                      # every pixel back-projects onto the wall
    # the analytic depth of the plane x = 2.45 along each pixel ray
    u, v = np.meshgrid(np.arange(INTR.width), np.arange(INTR.height))
    rays = np.stack([(u - INTR.cx) / INTR.fx, (v - INTR.cy) / INTR.fy, np.ones_like(u, float)], -1) @ T_tilted[:3, :3].T
    assert np.abs(depth - (2.45 - T_tilted[0, 3]) / rays[..., 0]).max() < 1e-5
    # another size through the same renderer: same plane, same depth
    _, depth_small = r.render(T, scene_intrinsics(64, 48))
    assert depth_small.shape == (48, 64) and np.abs(depth_small - 2.45).max() < 1e-5
    r.release()


def test_rasteriser_depth_matches_the_ray_caster(scene_renderer):
    scene, textures, r = scene_renderer
    rng = np.random.default_rng(1)
    from relocal_ros.data.synth.cameras import random_pose
    for _ in range(3):
        T = random_pose(scene, rng, INTR, dense=True)
        rgb, depth = r.render(T)
        rgb_rc, depth_rc = raycast_render(scene.boxes, textures, T, INTR, scene.light, scene.ambient, scene.intensity)
        err = np.abs(depth - depth_rc)
        assert (depth > 0).all() and (depth_rc > 0).all()             # a closed house: every ray hits something
        assert np.mean(err < 1e-4) > 0.999                             # exact but for silhouette tie-breaks
        assert np.median(err) < 1e-5
        # same textures, mapping and light; GL filters (mipmaps) where the caster takes the nearest texel
        assert np.abs(rgb.astype(int) - rgb_rc).mean() < 25


def test_without_egl_the_generators_render_with_the_ray_caster(scene_renderer, monkeypatch, caplog):
    """open_renderer (the training-data generators' renderer) gives the GL rasteriser where EGL works, and where no
    EGL context can be made the ray caster behind the same interface, saying so once per process."""
    from relocal_ros.data.synth import renderer as renderer_mod
    from relocal_ros.data.synth.raycast import RaycastRenderer
    from relocal_ros.data.synth.cameras import random_pose
    scene, textures, _ = scene_renderer
    monkeypatch.setattr(renderer_mod, "_egl_failed", None)
    gl = renderer_mod.open_renderer(scene.boxes, textures, INTR, scene.light, scene.ambient, scene.intensity)
    assert isinstance(gl, Renderer)
    gl.release()

    def no_egl(*_a, **_k):
        raise Exception("eglGetDisplay failed")  # what glcontext raises without libEGL or a driver
    monkeypatch.setattr(renderer_mod, "Renderer", no_egl)
    with caplog.at_level("WARNING", logger=renderer_mod.__name__):
        first = renderer_mod.open_renderer(scene.boxes, textures, INTR, scene.light, scene.ambient, scene.intensity)
        second = renderer_mod.open_renderer(scene.boxes, textures, INTR, scene.light, scene.ambient, scene.intensity)
    assert isinstance(first, RaycastRenderer) and isinstance(second, RaycastRenderer)
    assert caplog.text.count("no EGL context") == 1 and "eglGetDisplay failed" in caplog.text
    T = random_pose(scene, np.random.default_rng(4), INTR, dense=True)
    rgb, depth = first.render(T)
    assert rgb.shape == (120, 160, 3) and rgb.dtype == np.uint8 and depth.dtype == np.float32
    np.testing.assert_array_equal(depth, raycast_depth(scene.boxes, T, INTR))
    assert rgb.std() > 5  # textured and lit, not a blank frame
    with pytest.raises(ValueError, match="4x4"):
        first.render(np.eye(3))
    first.release()


def test_scene_coordinates_reproject_between_views(scene_renderer):
    scene, _, r = scene_renderer
    cx, cy = _centre(scene.rooms[0])
    Ta = camera_pose(cx, cy, 1.4, 0.3, -0.1, 0.05)
    Tb = camera_pose(cx + 0.3, cy - 0.2, 1.5, 0.5, -0.05, -0.03)
    _, da = r.render(Ta)
    _, db = r.render(Tb)
    pa = backproject(da, INTR).reshape(-1, 3)
    valid = np.isfinite(pa).all(1)
    world = pa[valid] @ Ta[:3, :3].T + Ta[:3, 3]
    Tbw = invert(Tb)
    pb = world @ Tbw[:3, :3].T + Tbw[:3, 3]
    uv, front = project(pb, INTR)
    u, v = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
    inside = front & (u >= 0) & (v >= 0) & (u < INTR.width) & (v < INTR.height)
    # unoccluded: B's depth at the projection agrees with the point's depth in B
    unocc = inside.copy()
    unocc[inside] = np.abs(db[v[inside], u[inside]] - pb[inside, 2]) < 0.02
    assert unocc.sum() > 0.3 * valid.sum()
    # B's own scene coordinate at that pixel projects back to the same place as A's point: < 1 px apart
    pbb = backproject(db, INTR)[v[unocc], u[unocc]]
    err = np.linalg.norm(project(pbb, INTR)[0] - uv[unocc], axis=1)
    assert np.percentile(err, 99) < 1.0 and np.median(err) < 0.5


def test_overlap_measures(scene_renderer):
    scene, _, r = scene_renderer
    cx, cy = _centre(scene.rooms[0])
    Ta = camera_pose(cx, cy, 1.4, 0.0)
    _, da = r.render(Ta)
    assert coordinate_overlap(da, Ta, da, Ta, INTR) == 1.0
    assert mutual_overlap(da, Ta, da, Ta, INTR) == 1.0
    assert frustum_overlap(Ta, Ta, INTR) == 1.0 and frustum_overlap_distance(Ta, Ta, INTR) == 0.0
    Tnear = camera_pose(cx + 0.1, cy, 1.4, 0.1)
    Tback = camera_pose(cx, cy, 1.4, np.pi)
    _, dn = r.render(Tnear)
    _, dbk = r.render(Tback)
    near, back = coordinate_overlap(da, Ta, dn, Tnear, INTR), coordinate_overlap(da, Ta, dbk, Tback, INTR)
    assert 0.5 < near < 1.0 and back < 0.05
    assert frustum_overlap(Ta, Tback, INTR) == 0.0                     # opposite headings share no frustum
    # a pure sideways shift by s of a camera with half-width w at depth z leaves (w z - s)/(w z) of each slice
    Tshift = camera_pose(cx, cy - 1.0, 1.4, 0.0)                       # world -y is camera +x
    half = (INTR.width / 2) / INTR.fx
    zs = np.arange(0.05, 4.0, 0.1)
    expected = np.sum(zs ** 2 * np.clip(1 - 1.0 / (2 * half * zs), 0, None)) / np.sum(zs ** 2)
    assert frustum_overlap(Ta, Tshift, INTR, step=0.05) == pytest.approx(expected, abs=0.03)


def test_camera_rules(scene_renderer):
    scene, _, _ = scene_renderer
    room = scene.rooms[0]
    wall_hugger = camera_pose(room.x0 + 0.2, (room.y0 + room.y1) / 2, 1.4, 0.0)
    assert not acceptable_view(scene, wall_hugger, INTR)               # closer than 0.4 m to a wall
    furniture = next(b for b in scene.boxes if b.kind in ("cabinet", "shelf", "table"))
    assert not acceptable_view(scene, camera_pose(furniture.centre[0], furniture.centre[1], 1.4, 0.0), INTR)
    staring = camera_pose(*_centre(room), 1.4, 0.0)
    staring[:3, 3] = [room.x1 - MIN_CLEARANCE - 0.05, (room.y0 + room.y1) / 2 + 0.3, 1.4]
    if scene.clearance(*staring[:2, 3]) >= MIN_CLEARANCE:              # facing the end wall from 0.45 m
        assert not acceptable_view(scene, staring, INTR)


def test_generate_scene_layout_determinism_and_coverage(tmp_path):
    kw = dict(width=160, height=120, n_map=40, n_query=10, progress=False)
    a = generate_scene(tmp_path / "a", 5, workers=1, **kw)
    b = generate_scene(tmp_path / "b", 5, workers=2, **kw)
    for seq in ("seq-01", "seq-02", "seq-03"):
        names = sorted(p.name for p in (a / seq).iterdir())
        assert names and filecmp.cmpfiles(a / seq, b / seq, names, shallow=False)[0] == names  # byte-identical
    assert (a / "scene.json").read_bytes() == (b / "scene.json").read_bytes()
    scene, textures = build_scene(5)
    mapping, queries, sparse = (open_source(a / s) for s in ("seq-01", "seq-02", "seq-03"))
    assert len(mapping) == 40 and len(queries) == 10 and len(sparse) == 16
    f = mapping[0]
    assert f.intrinsics == INTR and f.rgb.shape == (120, 160, 3) and f.pose is not None
    # the written depth (mm PNG) is the ray caster's depth at the written pose
    err = np.abs(f.depth - raycast_depth(scene.boxes, f.pose, INTR))
    assert np.mean(err <= 0.5e-3 + 1e-6) > 0.999                       # millimetre rounding only
    for frame in list(mapping) + list(queries) + list(sparse):
        x, y = frame.pose[:2, 3]
        assert scene.room_at(x, y) is not None and scene.clearance(x, y) >= MIN_CLEARANCE
    assert all(abs(fr.pose[2, 3] - 1.0) < 1e-9 for fr in sparse)       # sparse: a ground robot at 1 m
    # four corner references look towards the room's centre
    room = scene.rooms[0]
    for fr in list(sparse)[:4]:
        to_centre = np.array(_centre(room)) - fr.pose[:2, 3]
        assert np.dot(fr.pose[:2, 2], to_centre / np.linalg.norm(to_centre)) > 0.99
    # every query is seen by one of the mapping frames nearest to it (overlap of scene coordinates > 30 %)
    map_centres = np.array([m.pose[:3, 3] for m in mapping])
    for q in queries:
        nearest = np.argsort(np.linalg.norm(map_centres - q.pose[:3, 3], axis=1))[:8]
        assert max(mutual_overlap(q.depth, q.pose, mapping[i].depth, mapping[i].pose, INTR) for i in nearest) > 0.3


def test_sampled_pairs_respect_the_paper_bounds(scene_renderer, tmp_path):
    from relocal_ros.data.synth.pairs import MODES, sample_pair
    scene, _, r = scene_renderer
    rng = np.random.default_rng(0)
    for mode in ("dense", "sparse"):
        for _ in range(3):
            p = sample_pair(scene, r, rng, mode)
            assert p is not None
            dt, dr = pose_error(p.T_a, p.T_b)
            assert p.overlap > MODES[mode]["o_max"] and dt < MODES[mode]["d_max"] and dr < MODES[mode]["gamma_max"]
            assert coordinate_overlap(p.depth_a, p.T_a, p.depth_b, p.T_b, INTR) >= p.overlap
    with pytest.raises(ValueError):
        sample_pair(scene, r, rng, "medium")
    pairs_txt = generate_pairs(tmp_path / "pairs", 0, n_scenes=1, pairs_per_scene=2, size=64, workers=1,
                               progress=False)
    lines = [ln.split() for ln in pairs_txt.read_text().splitlines() if not ln.startswith("#")]
    assert len(lines) == 2
    src = open_source(tmp_path / "pairs" / "scene-0000")
    assert len(src) == 4 and src[0].rgb.shape == (64, 64, 3)
    for a, b, overlap, dist, angle in lines:
        fa, fb = (src[int(x.split("-")[-1])] for x in (a, b))
        assert float(overlap) > 0.3
        assert pose_error(fa.pose, fb.pose)[0] == pytest.approx(float(dist), abs=1e-3)
