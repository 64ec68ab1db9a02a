"""ExReNet: correlation layers against their definitions, the auxiliary loss, MC-dropout sampling, the ONNX export
against torch, the shipped weights against a trivial baseline on held-out synthetic pairs, and the pipeline method."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from relocal_ros.geometry.camera import Intrinsics, project
from relocal_ros.geometry.poses import invert, make_T, pose_error
from relocal_ros.networks.correlation import extensive_correlation, guided_correlation, triplet_matching_loss
from relocal_ros.networks.exrenet.model import (ExReNet, canonical_intrinsics, canonical_view, load_exrenet,
                                                pose_targets, split_outputs)
from relocal_ros.networks.exrenet.runtime import DEFAULT_WEIGHTS, ExReNetRunner, mc_dropout_head, summarize_samples


def _unit(x):
    return torch.nn.functional.normalize(x, dim=1)


def test_extensive_correlation_is_every_dot_product():
    g = torch.Generator().manual_seed(0)
    f1, f2 = _unit(torch.randn(2, 8, 3, 4, generator=g)), _unit(torch.randn(2, 8, 3, 4, generator=g))
    c = extensive_correlation(f1, f2)
    assert c.shape == (2, 12, 3, 4)
    for y1, x1, y2, x2 in [(0, 0, 0, 0), (2, 3, 1, 2), (1, 0, 2, 3)]:
        expect = (f1[1, :, y1, x1] * f2[1, :, y2, x2]).sum()
        assert torch.isclose(c[1, y2 * 4 + x2, y1, x1], expect, atol=1e-6)


def test_guided_correlation_follows_eq2_with_border():
    """Each fine cell is correlated with the u(1+2b) window around the argmax of its parent cell, zero outside."""
    g = torch.Generator().manual_seed(1)
    B, C, Hc, Wc, u, b = 1, 6, 3, 4, 4, 1
    f1 = _unit(torch.randn(B, C, Hc * u, Wc * u, generator=g))
    f2 = _unit(torch.randn(B, C, Hc * u, Wc * u, generator=g))
    coarse = torch.randn(B, Hc * Wc, Hc, Wc, generator=g)
    out, _, origin = guided_correlation(f1, f2, coarse, (Hc, Wc), b)
    d = u * (1 + 2 * b)
    W = Wc * u
    assert out.shape == (B, Hc * u * W, d * d)
    for y1, x1 in [(0, 0), (5, 7), (11, 15), (6, 2)]:
        w = int(coarse[0, :, y1 // u, x1 // u].argmax())
        my, mx = w // Wc, w % Wc
        assert origin[0, y1 * W + x1].tolist() == [(my - b) * u, (mx - b) * u]
        for y2 in range(d):
            for x2 in range(d):
                yy, xx = (my - b) * u + y2, (mx - b) * u + x2
                inside = 0 <= yy < Hc * u and 0 <= xx < Wc * u
                expect = float((f1[0, :, y1, x1] * f2[0, :, yy, xx]).sum()) if inside else 0.0
                assert abs(float(out[0, y1 * W + x1, y2 * d + x2]) - expect) < 1e-5


def test_triplet_loss_is_zero_only_with_margin_and_pulls_matches_up():
    corr = torch.tensor([[[0.9, -0.5, -0.2, 0.0]]], requires_grad=True)
    pos = torch.tensor([[[True, False, False, False]]])
    # hinge terms: max(0, -0.5-0.9+1)=0, max(0, -0.2-0.9+1)=0, max(0, 0-0.9+1)=0.1 -> mean over 3 negatives
    loss = triplet_matching_loss(corr, pos)
    assert float(loss) == pytest.approx(0.1 / 3, abs=1e-6)
    loss.backward()
    assert corr.grad[0, 0, 0] < 0 and corr.grad[0, 0, 3] > 0   # raise the match, lower the violating negative
    far = torch.tensor([[[1.0, -0.5, -0.2, -0.1]]])
    assert float(triplet_matching_loss(far, pos)) == 0.0


def test_pose_targets_roundtrip_and_inverse_convention():
    T = make_T(np.eye(3), [0.3, -0.1, 0.2])
    from scipy.spatial.transform import Rotation
    T[:3, :3] = Rotation.from_rotvec([0.1, -0.2, 0.05]).as_matrix()
    y = pose_targets(T)
    t, q, s = split_outputs(y[None])
    assert s[0] == pytest.approx(np.linalg.norm(T[:3, 3]), abs=1e-6)
    assert np.allclose(t[0] * s[0], T[:3, 3], atol=1e-6)
    assert np.allclose(Rotation.from_quat(q[0]).as_matrix(), T[:3, :3], atol=1e-6)
    assert q[0, 3] >= 0


def test_mc_dropout_head_matches_torch_and_samples_spread():
    model = ExReNet(xfeat=torch.nn.Identity()).eval()
    h = torch.relu(torch.randn(3, 512, generator=torch.Generator().manual_seed(2)))
    fc = [p.detach().numpy() for p in (model.head.fc2.weight, model.head.fc2.bias, model.head.fc3.weight,
                                       model.head.fc3.bias)]
    rng = np.random.default_rng(0)
    det = mc_dropout_head(h.numpy(), *fc, 0, rng)[:, 0]
    with torch.no_grad():
        assert np.allclose(det, model.head(h).numpy(), atol=1e-5)
    samples = mc_dropout_head(h.numpy(), *fc, 200, rng)
    assert samples.shape == (3, 200, 8)
    assert np.all(samples.std(1) > 0)
    # inverted dropout keeps the expectation: the sample mean of the first layer equals the deterministic one
    assert np.allclose(samples.mean(1), det, atol=0.2 * np.abs(det).max() + 0.05)
    p = summarize_samples(np.concatenate([samples[0][:, :7], np.abs(samples[0][:, 7:]) + 0.5], 1))  # scale > 0
    assert p.centres.shape == (200, 3) and p.centre_sigma > 0 and p.direction_sd_deg > 0


def test_canonical_view_undistorts_to_the_training_camera():
    """A 3D point seen by a distorted 640x480 camera lands where the canonical camera projects it."""
    import cv2
    intr = Intrinsics(517.3, 516.5, 318.6, 255.3, 640, 480, (0.26, -0.95, -0.005, 0.003, 1.16))
    X = np.array([[0.25, -0.15, 1.5]])
    uv = cv2.projectPoints(X, np.zeros(3), np.zeros(3), intr.K, np.array(intr.dist))[0].reshape(2)
    img = np.zeros((480, 640, 3), np.uint8)
    cv2.circle(img, (int(round(uv[0])), int(round(uv[1]))), 6, (255, 255, 255), -1)
    view = canonical_view(img, intr)
    assert view.shape == (120, 160, 3)
    ys, xs = np.nonzero(view[:, :, 0] > 100)
    expect, _ = project(X, canonical_intrinsics())
    assert abs(xs.mean() - expect[0, 0]) < 1.0 and abs(ys.mean() - expect[0, 1]) < 1.0


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    import os
    os.environ["RELOCAL_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    if not DEFAULT_WEIGHTS.is_file():
        pytest.fail(f"shipped weights {DEFAULT_WEIGHTS} missing")
    return ExReNetRunner(None, "onnxruntime", 50, threads=2)


def test_onnx_runtime_matches_torch(runner):
    model, _ = load_exrenet(DEFAULT_WEIGHTS)
    rng = np.random.default_rng(3)
    views = [(rng.random((120, 160, 3)) * 255).astype(np.uint8) for _ in range(3)]
    from relocal_ros.networks.exrenet.model import xfeat_input
    enc = model.encoder().eval()
    with torch.no_grad():
        ft, ct = enc(torch.from_numpy(np.stack([xfeat_input(v) for v in views])))
        hidden = model.regressor(ft[:2], ct[:2], ft[2:], ct[2:])
        ref = model.head(hidden).numpy()
    f = [runner.encode(v) for v in views]
    assert np.allclose(f[0][0], ft[0].numpy(), atol=2e-3)  # float16 storage of the keyframe features
    out = runner.predict(np.stack([f[0][0], f[1][0]]), np.stack([f[0][1], f[1][1]]), f[2][0], f[2][1], samples=0)
    t, q, s = split_outputs(ref)
    for k in range(2):
        assert np.degrees(np.arccos(np.clip(out[k].T_kf_query[:3, 3] @ t[k], -1, 1))) < 0.5
        assert out[k].scale == pytest.approx(s[k], abs=5e-3)


def test_corrupt_weights_are_refused(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises((ValueError, RuntimeError)):
        load_exrenet(bad)
    torch.save({"state_dict": {"x": torch.zeros(1)}, "info": "{}"}, bad)
    with pytest.raises(ValueError, match="not an ExReNet weights file"):
        load_exrenet(bad)
    with pytest.raises(FileNotFoundError):
        load_exrenet(tmp_path / "missing.pt")


def _synthetic_pairs(n, seed):
    from relocal_ros.data.synth import build_scene
    from relocal_ros.data.synth.pairs import sample_pair
    from relocal_ros.data.synth.renderer import Renderer
    from relocal_ros.networks.exrenet.train import VALIDATION_SEEDS
    intr = canonical_intrinsics()
    scene, tex = build_scene(VALIDATION_SEEDS + 777)
    r = Renderer(scene.boxes, tex, intr, scene.light, scene.ambient, scene.intensity)
    rng = np.random.default_rng(seed)
    try:
        pairs = [sample_pair(scene, r, rng, "dense") for _ in range(n)]
    finally:
        r.release()
    return [p for p in pairs if p is not None]


def test_shipped_weights_beat_no_motion_on_held_out_scene(runner):
    """On a scene never trained on, predicted rotations are closer to the truth than assuming no rotation, and
    predicted directions closer than the mean training direction would be (a constant guess)."""
    pairs = _synthetic_pairs(24, 0)
    rot, rot0, ang, ang0 = [], [], [], []
    for p in pairs:
        T_gt = invert(p.T_a) @ p.T_b
        fr, cr = runner.encode(p.rgb_a)
        fq, cq = runner.encode(p.rgb_b)
        est = runner.predict(fr[None], cr[None], fq, cq)[0]
        rot.append(pose_error(est.T_kf_query, T_gt)[1])
        rot0.append(pose_error(np.eye(4), T_gt)[1])
        d = T_gt[:3, 3] / np.linalg.norm(T_gt[:3, 3])
        ang.append(np.degrees(np.arccos(np.clip(est.T_kf_query[:3, 3] @ d, -1, 1))))
        ang0.append(np.degrees(np.arccos(np.clip(np.array([0, 0, 1.0]) @ d, -1, 1))))
    assert len(pairs) >= 20
    assert np.median(rot) < np.median(rot0), (np.median(rot), np.median(rot0))
    assert np.median(ang) < np.median(ang0), (np.median(ang), np.median(ang0))


def test_exrenet_method_in_the_pipeline(runner, tmp_path):
    """Keyframe features are computed at map load, one encoder call per query; the solver fuses the hypotheses."""
    from relocal_ros.data.synth import generate_scene
    from relocal_ros.data.sevenscenes import SevenScenesSequence
    from relocal_ros.mapping.builder import build_map
    from relocal_ros.pipeline import Relocalizer
    scene = generate_scene(tmp_path / "scene", seed=3, width=160, height=120, n_map=24, n_query=4, workers=1,
                           progress=False)
    kmap = build_map(SevenScenesSequence(scene / "seq-01"), {"rotations": [0.0]}, progress=False)
    # use_depth off: the raw network output per keyframe (with depth, each hypothesis would carry its agreement)
    reloc = Relocalizer(kmap, {"inference": {"method": "exrenet", "mc_samples": 20, "backend": "onnxruntime",
                                             "use_depth": False}})
    method = reloc.engine.method
    assert set(method.features) == {kf.id for kf in kmap.keyframes}
    calls = []
    encode = method.runner.encode
    method.runner.encode = lambda v: (calls.append(1), encode(v))[1]
    query = SevenScenesSequence(scene / "seq-02", with_ground_truth=False)
    ev = reloc.engine.infer(query[0])
    assert len(calls) == 1
    assert not ev.refusal and len(ev.hypotheses) == len(ev.keyframe_ids) >= 1
    for h in ev.hypotheses:
        assert np.isfinite(h.scale) and h.uncertainty > 0 and h.translation_samples.shape == (20, 3)


@pytest.mark.ros
def test_inference_node_runs_exrenet_with_its_parameters(tmp_path, own_domain):
    """The real graph with inference_node:method:=exrenet: evidence messages carry one hypothesis per retrieved
    keyframe with the requested number of MC-dropout samples."""
    pytest.importorskip("rclpy", reason="rclpy (ROS 2 PyPI wheels) not installed")
    pytest.importorskip("relocal_msgs.msg", reason="relocal_msgs not built: run scripts/build_interfaces.sh .venv")
    import time

    import planar_scene as ps
    from relocal_ros.mapping.builder import build_map
    from relocal_ros.nodes.runner import GraphProcesses
    from graph_probe import Probe, image_msg, query_frames
    from relocal_ros.nodes.conversions import camera_info_msg

    build_map(ps.map_frames(), {"vocabulary": "map", "vocabulary_words": 16}, progress=False).save(tmp_path / "map")
    extra = ["-p", "pose_solver:base_frame:=camera_link", "-p", "inference_node:reliable_images:=true",
             "-p", "inference_node:method:=exrenet", "-p", "inference_node:mc_samples:=10",
             "-p", "inference_node:backend:=onnxruntime"]
    with GraphProcesses(str(tmp_path / "map"), extra=extra, log_dir=tmp_path) as g:
        probe = Probe()
        try:
            from relocal_msgs.msg import QueryEvidence
            evidence = []
            probe.node.create_subscription(QueryEvidence, "relocalization/evidence", evidence.append, 10)
            probe.wait_for_graph(timeout=120)
            frame = query_frames(1)[0]
            end = time.monotonic() + 90
            k = 0
            while not evidence and time.monotonic() < end:  # the node loads the map and exports the networks first
                k += 1
                probe.info.publish(camera_info_msg(frame.intrinsics))
                probe.spin(0.2)
                probe.img.publish(image_msg(frame, stamp=(400 + k, 0)))
                probe.spin(2.0)
            assert evidence, "no evidence from the inference node: " + \
                "".join(f.read_text()[-2000:] for f in tmp_path.glob("*.log"))
            ev = evidence[-1]
            assert ev.method == "exrenet" and not ev.refusal
            assert len(ev.hypotheses) == len(ev.keyframe_ids) >= 1
            for h in ev.hypotheses:
                assert len(h.translation_samples) == 3 * 10 and np.isfinite(h.scale) and h.uncertainty > 0
            assert all(g.alive().values())
        finally:
            probe.close()


@pytest.mark.slow
def test_train_scene_fine_tunes_on_pairs_of_the_maps_keyframes(tmp_path, caplog):
    """`relocal train-scene MAP --method exrenet` (networks/exrenet/finetune.py): pairs of overlapping keyframes with
    their true relative poses, a held-out validation before / after, never worse than the initial weights on it,
    stored in MAP/exrenet and then used by the method; resumable; a changed map is not given them."""
    from relocal_ros.data.sevenscenes import SevenScenesSequence
    from relocal_ros.data.synth import generate_scene
    from relocal_ros.mapping.builder import build_map
    from relocal_ros.mapping.keyframe_map import KeyframeMap
    from relocal_ros.networks.exrenet import finetune
    from relocal_ros.pipeline import Relocalizer
    scene = generate_scene(tmp_path / "scene", seed=3, width=160, height=120, n_map=40, n_query=2, workers=1,
                           progress=False)
    build_map(SevenScenesSequence(scene / "seq-01"), {"rotations": [0.0]}, progress=False).save(tmp_path / "map")
    meta = finetune.train_scene(tmp_path / "map", budget_s=35, progress=False, conf={"validations": 3})
    assert meta["complete"] and meta["train_pairs"] > 0 and meta["validation_pairs"] > 0 and meta["iterations"] > 0
    score = {k: meta[k]["rotation_deg"] + meta[k]["direction_deg"]
             for k in ("validation_before", "validation_finetuned", "validation_after")}
    assert all(np.isfinite(v) for v in score.values())
    assert score["validation_after"] == min(score["validation_before"], score["validation_finetuned"])
    kmap = KeyframeMap.load(tmp_path / "map")
    path, why = finetune.map_weights(kmap)
    assert path.endswith("exrenet_finetuned.pt") and not why
    conf = {"inference": {"method": "exrenet", "mc_samples": 5, "backend": "onnxruntime", "use_depth": False}}
    assert Relocalizer(kmap, conf).engine.method.weights == path
    # resumed with the budget already spent: nothing to do
    again = finetune.train_scene(tmp_path / "map", budget_s=35, progress=False)
    assert again["seconds_total"] == meta["seconds_total"] and again["iterations"] == meta["iterations"]
    # another version of the map (a keyframe moved): the shipped weights, with a warning that says why
    kmap.keyframes[1].T_map_cam[0, 3] += 0.5
    kmap.save(tmp_path / "other")
    import shutil
    shutil.copytree(tmp_path / "map" / "exrenet", tmp_path / "other" / "exrenet")
    with caplog.at_level("WARNING"):
        method = Relocalizer(KeyframeMap.load(tmp_path / "other"), conf).engine.method
    assert method.weights == "" and "another version" in caplog.text


@pytest.mark.slow
def test_synthetic_training_runs_on_the_chosen_device_and_resumes(tmp_path):
    """scripts/train_exrenet.py's loop (what a lent GPU runs with --device auto): pairs rendered by a producer
    process, a validation on held-out scenes, best and last checkpoints; a second call resumes from last.pt and
    counts on. Here on the CPU, as `--device auto` picks when torch sees no GPU."""
    from relocal_ros.networks.backends import pick_device
    from relocal_ros.networks.exrenet.train import train
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    kw = dict(batch=2, producers=1, pairs_per_producer=8, val_pairs=4, progress=False, threads=1, device="cpu")
    first = train(tmp_path, 0.5, **kw)
    assert first["device"] == "cpu" and first["iteration"] > 0 and first["best"] is not None
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "last.pt").is_file()
    assert all(np.isfinite(first["best"][k]) for k in ("rotation_deg", "direction_deg", "scale_m"))
    second = train(tmp_path, 0.2, **{**kw, "producers": 0})  # the pairs already cached
    assert second["iteration"] > first["iteration"] and second["pairs_seen"] > first["pairs_seen"]
    model, info = load_exrenet(tmp_path / "best.pt")
    assert info["iteration"] > 0 and next(model.parameters()).device.type == "cpu"


@pytest.mark.slow
def test_synthetic_training_starts_from_given_weights(tmp_path):
    """--init: a run with no checkpoint of its own starts from the given weights (a lent GPU continues the shipped
    network instead of starting over); a checkpoint, once there, wins over them."""
    from relocal_ros.networks.exrenet.train import train
    shipped = load_exrenet("models/exrenet_synthetic.pt")[0].state_dict()
    kw = dict(batch=2, producers=0, val_pairs=2, progress=False, threads=1, device="cpu")
    train(tmp_path, 0.0, init="models/exrenet_synthetic.pt", **kw)
    start = torch.load(tmp_path / "last.pt", weights_only=True)["model"]
    assert start.keys() == shipped.keys()
    assert all(torch.equal(start[k], shipped[k]) for k in shipped)
    fresh = train(tmp_path / "fresh", 0.0, **kw)  # without --init: a new network
    assert fresh["iteration"] == 0
    other = torch.load(tmp_path / "fresh" / "last.pt", weights_only=True)["model"]
    assert not all(torch.equal(other[k], shipped[k]) for k in shipped)
    (tmp_path / "last.pt").write_bytes((tmp_path / "fresh" / "last.pt").read_bytes())
    train(tmp_path, 0.0, init="models/exrenet_synthetic.pt", **kw)  # resumes: the checkpoint, not --init
    again = torch.load(tmp_path / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(again[k], other[k]) for k in other)
