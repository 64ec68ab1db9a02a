import json
import os
import shutil

import numpy as np
import pytest

import planar_scene as ps
from relocal_ros.mapping.builder import build_map
from relocal_ros.geometry.poses import pose_error
from relocal_ros.mapping.keyframe_map import KeyframeMap, KeyframeSelector, MapFormatError


@pytest.fixture(scope="module")
def plane_map():
    return build_map(ps.map_frames(), {"vocabulary": "map", "vocabulary_words": 16}, progress=False)


def test_keypoints_are_lifted_to_the_true_plane(plane_map):
    pts = np.concatenate([kf.points3d for kf in plane_map.keyframes])
    ok = np.isfinite(pts).all(1)
    assert ok.mean() > 0.9
    assert np.abs(pts[ok, 2] - ps.PLANE_Z).max() < 0.02  # nearest-pixel depth on a tilted plane: ~mm


def test_save_load_round_trip(plane_map, tmp_path):
    plane_map.save(tmp_path / "map")
    loaded = KeyframeMap.load(tmp_path / "map")
    assert len(loaded) == len(plane_map)
    a, b = plane_map.keyframes[3], loaded.keyframes[3]
    assert a.stamp == b.stamp and np.allclose(a.T_map_cam, b.T_map_cam)
    assert np.array_equal(a.features.keypoints, b.features.keypoints)
    assert np.allclose(a.features.descriptors, b.features.descriptors, atol=1e-3)  # stored as float16
    assert np.array_equal(a.points3d, b.points3d, equal_nan=True)
    _, ids = loaded.index.search(a.global_descriptors[0], 1)
    assert ids[0] == 3


def test_second_save_replaces_atomically_and_cleans_up(plane_map, tmp_path):
    root = tmp_path / "map"
    v1 = plane_map.save(root)
    v2 = plane_map.save(root)
    assert (root / "CURRENT").read_text().strip() == v2.name
    assert not v1.exists() and sorted(p.name for p in root.iterdir()) == ["CURRENT", v2.name]


def test_tampered_map_is_refused_and_previous_in_memory_map_stays_usable(plane_map, tmp_path):
    root = tmp_path / "map"
    version = plane_map.save(root)
    good = KeyframeMap.load(root)
    blob = bytearray((version / "arrays.npz").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (version / "arrays.npz").write_bytes(bytes(blob))
    with pytest.raises(MapFormatError, match="checksum mismatch"):
        KeyframeMap.load(root)
    assert len(good) == len(plane_map) and good.index.search(good.keyframes[0].global_descriptors[0], 1)[1][0] == 0


def test_truncated_and_crafted_maps_are_refused(plane_map, tmp_path):
    root = tmp_path / "map"
    version = plane_map.save(root)
    data = (version / "index.faiss").read_bytes()
    (version / "index.faiss").write_bytes(data[: len(data) // 3])
    with pytest.raises(MapFormatError, match="checksum mismatch"):
        KeyframeMap.load(root)
    # a manifest rewritten with matching checksums but an unsupported version is refused too
    manifest = json.loads((version / "manifest.json").read_text())
    manifest["format_version"] = 99
    (version / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MapFormatError, match="format version 99"):
        KeyframeMap.load(root)
    (version / "manifest.json").write_text("{not json")
    with pytest.raises(MapFormatError, match="unreadable"):
        KeyframeMap.load(root)
    with pytest.raises(MapFormatError, match="no CURRENT"):
        KeyframeMap.load(tmp_path)


def test_interrupted_save_leaves_the_previous_map(plane_map, tmp_path):
    root = tmp_path / "map"
    v1 = plane_map.save(root)
    # what a crash after writing part of a new version leaves behind: a temp dir and an unreferenced version
    shutil.copytree(v1, root / ".v000002.crash")
    (root / "v000002").mkdir()
    (root / "v000002" / "arrays.npz").write_bytes(b"partial")
    loaded = KeyframeMap.load(root)
    assert len(loaded) == len(plane_map)
    v3 = plane_map.save(root)  # the next save skips the half-written name and removes the debris
    assert v3.name == "v000003" and sorted(os.listdir(root)) == ["CURRENT", "v000003"]


def test_keyframe_selector_thresholds():
    sel = KeyframeSelector(min_translation=0.1, min_rotation_deg=10)
    assert sel.should_add(ps.pose(0, 0))
    assert not sel.should_add(ps.pose(0.05, 0, 3))
    assert sel.should_add(ps.pose(0.2, 0))
    assert sel.should_add(ps.pose(0.05, 0, 15))


@pytest.mark.parametrize("name", ["netvlad", "densevlad"])
def test_map_with_a_learned_global_descriptor_round_trips_and_retrieves(tmp_path, name):
    from relocal_ros.pipeline import Relocalizer
    kmap = build_map(ps.map_frames(), {"vocabulary": "map", "vocabulary_words": 16, "global_descriptor": name},
                     progress=False)
    assert kmap.index.dim == kmap._global.dim and len(kmap.index) == len(kmap) * len(kmap.rotations)
    kmap.save(tmp_path / "m")
    back = KeyframeMap.load(tmp_path / "m")
    assert back.global_descriptor == name
    np.testing.assert_allclose(back.keyframes[3].global_descriptors, kmap.keyframes[3].global_descriptors)
    q = ps.query_frames()[0]
    est = Relocalizer(back).localize(q)
    assert est.accepted and pose_error(est.T_map_cam, q.pose)[0] < 0.03
