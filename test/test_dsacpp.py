"""DSAC++ scene-coordinate head: PnP on true scene coordinates, per-map training that beats the mean-scene-point
baseline on held-out views and resumes, refusal of untrained / other-version / corrupt heads."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from relocal_ros.data.sources import open_source
from relocal_ros.estimates import QueryEvidence
from relocal_ros.geometry.camera import backproject, stable_depth
from relocal_ros.geometry.poses import pose_error
from relocal_ros.mapping.builder import build_map
from relocal_ros.mapping.keyframe_map import KeyframeMap
from relocal_ros.networks.dsacpp import train as scene_training
from relocal_ros.methods.base import Query
from relocal_ros.methods.dsacpp import Dsacpp
from relocal_ros.networks.dsacpp.model import SC_DIR, CheckpointError, cell_pixels, ground_truth_scene_coordinates
from relocal_ros.networks.dsacpp.runtime import DsacppRunner
from relocal_ros.pipeline import PoseSolver

torch.set_num_threads(1)
CONF = {"threads": 1, "max_copies": 2, "batch": 512, "width": 128,  # small map: small, cheap steps
        "lr": {"depth": 3e-3, "reprojection": 1e-3, "end_to_end": 3e-4}}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A one-room synthetic scene at 160x120: 60 mapping views, 12 held-out query views (other poses)."""
    from relocal_ros.data.synth import generate_scene
    root = tmp_path_factory.mktemp("dsacpp")
    out = generate_scene(root / "scene", 6, width=160, height=120, n_map=60, n_query=12, workers=1, progress=False)
    kmap = build_map(open_source(out / "seq-01"), {"rotations": [0.0]}, progress=False)
    kmap.save(root / "map")
    return root, out


@pytest.fixture(scope="module")
def trained(scene):
    root, _ = scene
    # fewer augmented copies than the default: the encoder pass must leave most of 40 s to training on a busy CPU
    first = scene_training.train_scene(root / "map", budget_s=40, resume=False, progress=False, conf=CONF)
    return root / "map", first


def _solver():
    return PoseSolver({"pnp_scoring": "soft_inlier", "max_reproj_error": 4.0})


def test_soft_inlier_pnp_on_true_scene_coordinates(scene):
    _, out = scene
    frame = open_source(out / "seq-02")[3]
    d = stable_depth(frame.depth)
    v, u = np.mgrid[2:d.shape[0] - 2:3, 2:d.shape[1] - 2:3]
    uv = np.stack([u.ravel(), v.ravel()], 1).astype(np.float32)
    pc = backproject(d, frame.intrinsics, uv)
    ok = np.isfinite(pc).all(1)
    X = pc[ok] @ frame.pose[:3, :3].T + frame.pose[:3, 3]
    assert ok.sum() > 300
    ev = QueryEvidence(frame.stamp, frame.intrinsics, "dsacpp", uv[ok], X.astype(np.float32), np.ones(int(ok.sum())))
    # evidence no engine has checked: a dense method's pose needs confirmation (the query's depth or, RGB only,
    # the keyframes' brightness drawn into it); unchecked, it is refused
    est = _solver().solve(ev)
    assert not est.accepted and "needs confirmation" in est.reason
    ev.photometric_agreement = 0.9  # what the engine's check gives a true pose: the soft-inlier PnP decides now
    est = _solver().solve(ev)
    assert est.accepted, est.reason
    dt, dr = pose_error(est.T_map_cam, frame.pose)
    assert dt < 0.01 and dr < 0.1, (dt, dr)


def test_end_to_end_loss_is_small_for_true_coordinates_and_large_for_shifted(scene):
    """Step 3's expected pose loss: ~0 on exact scene coordinates, large when they are displaced."""
    _, out = scene
    frame = open_source(out / "seq-02")[5]
    uv = cell_pixels(frame.intrinsics.width, frame.intrinsics.height)
    X = ground_truth_scene_coordinates(uv, frame.depth, frame.intrinsics, frame.pose)
    ok = np.isfinite(X).all(1)
    conf = dict(scene_training.DEFAULT_TRAIN_CONF)
    T_cam_map = np.linalg.inv(frame.pose)
    rng = np.random.default_rng(0)
    pred = torch.tensor(X[ok], requires_grad=True)
    loss = scene_training.end_to_end_loss(pred, uv[ok], frame.intrinsics.K, T_cam_map, conf, rng, 160)
    loss.backward()
    assert float(loss.detach()) < 2.0 and torch.isfinite(pred.grad).all()
    shifted = torch.tensor(X[ok] + np.array([0.3, 0.0, 0.0], np.float32))
    bad = scene_training.end_to_end_loss(shifted, uv[ok], frame.intrinsics.K, T_cam_map, conf, rng, 160)
    assert float(bad) > 10.0


@pytest.mark.slow
def test_trained_head_beats_mean_scene_point_and_resumes(scene, trained):
    _, out = scene
    map_dir, first = trained
    assert first["steps_done"] == ["depth", "reprojection", "end_to_end"]
    assert first["seconds_total"] <= 43
    assert first["onnx_max_abs_diff_m"] < 1e-3
    kmap = KeyframeMap.load(map_dir)
    method = DsacppRunner(kmap, {"map_dir": map_dir, "threads": 1})
    assert method.problem == ""
    # the mean scene point of the map (from its keyframes' lifted features) is the trivial baseline
    mean_point = np.nanmean(np.concatenate([kf.points3d for kf in kmap.keyframes]), 0)
    queries = open_source(out / "seq-02")
    err, base = [], []
    for i in range(len(queries)):
        f = queries[i]
        uv = cell_pixels(f.intrinsics.width, f.intrinsics.height)
        truth = ground_truth_scene_coordinates(uv, f.depth, f.intrinsics, f.pose)
        ok = np.isfinite(truth).all(1)
        pred = method.predict(f.rgb)
        err.append(np.linalg.norm(pred[ok] - truth[ok], axis=1))
        base.append(np.linalg.norm(truth[ok] - mean_point, axis=1))
    med, med_base = np.median(np.concatenate(err)), np.median(np.concatenate(base))
    assert med < 0.6 * med_base, (med, med_base, first["iterations"], first["step_seconds"], first.get("val_median_cm"))

    # resume: continues the last step from the checkpoint (more end-to-end training), earlier steps are kept
    second = scene_training.train_scene(map_dir, budget_s=50, resume=True, progress=False, steps=("end_to_end",),
                                        conf=CONF)
    assert second["state"]["runs"] == 2
    assert second["iterations"]["depth"] == first["iterations"]["depth"]
    assert second["iterations"]["end_to_end"] > first["iterations"]["end_to_end"]
    assert second["seconds_total"] > first["seconds_total"]


@pytest.mark.slow  # the `trained` fixture spends a 40 s training budget
def test_refusals_untrained_other_version_grown_and_corrupt(scene, trained, tmp_path):
    root, out = scene
    map_dir, _ = trained
    frame = open_source(out / "seq-02")[0]

    def refusal(path, kmap=None):
        kmap = kmap or KeyframeMap.load(path)
        ev = QueryEvidence(frame.stamp, frame.intrinsics, "dsacpp")
        Dsacpp(kmap, {"backend": "auto", "network_threads": 1}).infer(Query(frame), ev)
        return ev.refusal

    untrained = tmp_path / "untrained"
    shutil.copytree(map_dir, untrained, ignore=shutil.ignore_patterns(SC_DIR))
    assert "relocal train-scene" in refusal(untrained)
    in_memory = KeyframeMap.load(map_dir)
    in_memory.path = None  # a map never saved nor loaded: no directory to find a head in
    assert "map directory" in refusal(None, in_memory)

    other = tmp_path / "other"
    shutil.copytree(map_dir, other)
    kmap = KeyframeMap.load(other)
    kmap.keyframes[3].T_map_cam[:3, 3] += 0.05  # another map version: a keyframe moved
    kmap.save(other)
    assert "another version" in refusal(other)

    # a map that only grew keeps its head (the new keyframe is counted as untrained)
    grown = KeyframeMap.load(map_dir)
    extra = open_source(out / "seq-01")[0]
    grown.add_keyframe(extra)
    method = DsacppRunner(grown, {"map_dir": map_dir, "threads": 1})
    assert method.problem == "" and method.untrained_keyframes == 1

    corrupt = tmp_path / "corrupt"
    shutil.copytree(map_dir, corrupt)
    ck = corrupt / SC_DIR / "checkpoint.pt"
    data = bytearray(ck.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ck.write_bytes(bytes(data))
    assert "corrupt" in refusal(corrupt)
    with pytest.raises(CheckpointError, match="corrupt"):
        scene_training.train_scene(corrupt, budget_s=5, resume=True, progress=False, conf={"threads": 1})
    (corrupt / SC_DIR / "meta.json").write_text("{not json")
    assert "unreadable" in refusal(corrupt)


def test_bad_arguments(scene):
    root, _ = scene
    with pytest.raises(ValueError, match="steps"):
        scene_training.train_scene(root / "map", budget_s=5, steps=("nonsense",))
    with pytest.raises(ValueError, match="budget"):
        scene_training.train_scene(root / "map", budget_s=0)


@pytest.mark.slow  # the `trained` fixture spends a 40 s training budget
def test_pipeline_runs_dsacpp(scene, trained):
    from relocal_ros.pipeline import Relocalizer
    _, out = scene
    map_dir, _ = trained
    kmap = KeyframeMap.load(map_dir)
    kmap.path = map_dir
    loc = Relocalizer(kmap, {"inference": {"method": "dsacpp"},
                             "solver": {"max_reproj_error": 10.0, "min_inlier_ratio": 0.1}})
    assert loc.engine.method.runner.problem == ""
    est = loc.localize(open_source(out / "seq-02")[2])
    assert est.accepted or (est.reason and "train-scene" not in est.reason)
    loaded = Relocalizer(KeyframeMap.load(map_dir), {"inference": {"method": "dsacpp"}})
    assert loaded.engine.method.runner.problem == ""  # a loaded map knows its directory, hence its head
    in_memory = KeyframeMap.load(map_dir)
    in_memory.path = None
    untrained = Relocalizer(in_memory, {"inference": {"method": "dsacpp"}})
    assert "map directory" in untrained.localize(open_source(out / "seq-02")[2]).reason


@pytest.mark.slow
def test_map_without_depth_trains_on_the_constant_depth_heuristic(scene, tmp_path):
    root, _ = scene
    kmap = KeyframeMap.load(root / "map")
    kmap.keyframes = kmap.keyframes[:12]
    for kf in kmap.keyframes:
        kf.depth_thumbnail = np.zeros_like(kf.depth_thumbnail)
    kmap.index = type(kmap.index)(kmap.index.dim)
    for kf in kmap.keyframes:
        kmap.index.add(kf.global_descriptors, kf.id)
    kmap.save(tmp_path / "nodepth")
    meta = scene_training.train_scene(tmp_path / "nodepth", budget_s=10, resume=False, progress=False,
                                      steps=("depth", "reprojection"), conf={"threads": 1, "heuristic_depth": 2.0})
    assert meta["depth_supervision"] is False and meta["heuristic_depth_m"] == 2.0
    assert meta["steps_done"] == ["depth", "reprojection"] and "val_median_cm" not in meta
    assert np.isfinite(meta["train_loss"]["reprojection"])
