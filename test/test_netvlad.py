"""NetVLAD global descriptor (relocal_ros.retrieval.netvlad): ONNX Runtime against torch eager, the shipped head
weights, their retrieval behaviour on a rendered scene (overlapping views closer than non-overlapping ones, which a
random head does not achieve) and the refusal of crafted weight files."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from relocal_ros.data.sources import open_source
from relocal_ros.data.synth import generate_scene
from relocal_ros.data.synth.overlap import frustum_overlap
from relocal_ros.networks.netvlad.model import NetVladHead, load_head_weights
from relocal_ros.retrieval.netvlad import DEFAULT_WEIGHTS, NetVladDescriptor

needs_weights = pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="models/netvlad_xfeat_k32.pt not shipped")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = generate_scene(tmp_path_factory.mktemp("netvlad_scene"), seed=101, width=160, height=120, n_map=20,
                          n_query=6, workers=1, progress=False)
    frames = [f for seq in ("seq-01", "seq-02") for f in open_source(root / seq)]
    intr = frames[0].intrinsics
    n = len(frames)
    overlap = np.eye(n)
    for i, j in itertools.combinations(range(n), 2):   # symmetrised, as in training (0.2 m voxels: fast enough)
        overlap[i, j] = overlap[j, i] = 0.5 * (frustum_overlap(frames[i].pose, frames[j].pose, intr, step=0.2)
                                               + frustum_overlap(frames[j].pose, frames[i].pose, intr, step=0.2))
    return [f.rgb for f in frames], overlap


@pytest.fixture(scope="module")
def onnx_descriptor():
    return NetVladDescriptor(threads=1)


def overlap_separation(describe, images, overlap) -> tuple[float, float]:
    """Squared descriptor distances of view pairs without any frustum overlap against those of pairs overlapping
    >= 0.3: (difference of the means, that difference in pooled standard deviations, i.e. the scale-free d')."""
    d = np.stack([describe(im) for im in images])
    sq = np.maximum(2.0 - 2.0 * d @ d.T, 0.0)
    iu = np.triu_indices(len(d), 1)
    close, far = sq[iu][overlap[iu] >= 0.3], sq[iu][overlap[iu] <= 0.0]
    assert len(close) >= 8 and len(far) >= 50, (len(close), len(far))
    gap = float(far.mean() - close.mean())
    return gap, gap / float(np.sqrt(0.5 * (far.var() + close.var())) + 1e-12)


# measured on this scene: shipped head gap 0.385, d' 1.13; a random head of the same architecture gap 0.004,
# d' 0.73 (its descriptors barely move, and their order says less about overlap)
MIN_GAP, MIN_DPRIME = 0.25, 0.95


@needs_weights
def test_shipped_weights_give_unit_descriptors(onnx_descriptor, scene):
    images, _ = scene
    head, meta = load_head_weights(DEFAULT_WEIGHTS)
    assert DEFAULT_WEIGHTS.stat().st_size < 5e6
    assert meta["clusters"] == 32 and meta["out_dim"] == 256 and 101 not in meta["train_seeds"]
    assert onnx_descriptor.name == "netvlad" and onnx_descriptor.dim == 256
    a, b = onnx_descriptor(images[0]), onnx_descriptor(images[-1])
    for d in (a, b):
        assert d.dtype == np.float32 and d.shape == (256,) and np.isfinite(d).all()
        assert abs(np.linalg.norm(d) - 1.0) < 1e-5
    assert np.linalg.norm(a - b) > 1e-3            # different views, different descriptors
    with pytest.raises(ValueError):
        onnx_descriptor(images[0].astype(np.float32))


@needs_weights
def test_onnx_matches_torch_eager(onnx_descriptor, scene):
    images, _ = scene
    eager = NetVladDescriptor(backend="torch")
    for im in (images[0], images[len(images) // 2]):
        np.testing.assert_allclose(onnx_descriptor(im), eager(im), atol=1e-4, rtol=0)
    # any input size is resized to the fixed working size
    big = np.ascontiguousarray(np.repeat(np.repeat(images[0], 4, 0), 4, 1))
    np.testing.assert_allclose(onnx_descriptor(big), eager(big), atol=1e-4, rtol=0)


@needs_weights
def test_overlapping_views_are_closer_than_disjoint_ones(onnx_descriptor, scene):
    gap, dprime = overlap_separation(onnx_descriptor, *scene)
    # training pulls ||a - b||^2 towards 2 xi (xi = 1 - overlap), so disjoint views should be clearly farther apart
    assert gap > MIN_GAP and dprime > MIN_DPRIME, (gap, dprime)


def test_overlap_check_fails_for_a_random_head(scene, tmp_path):
    """The check above is not vacuous: an untrained head of the same architecture does not pass it."""
    torch.manual_seed(0)
    path = tmp_path / "random.pt"
    torch.save({"state_dict": NetVladHead().state_dict(), "meta": {}}, path)
    gap, dprime = overlap_separation(NetVladDescriptor(path, backend="torch"), *scene)
    assert gap < MIN_GAP and dprime < MIN_DPRIME, (gap, dprime)


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("content", ["pickled_object", "wrong_keys", "wrong_shape", "not_a_dict", "garbage"])
def test_crafted_weight_files_are_refused(tmp_path, content):
    path = tmp_path / f"{content}.pt"
    good = NetVladHead().state_dict()
    if content == "pickled_object":
        torch.save({"state_dict": _Payload()}, path)
    elif content == "wrong_keys":
        torch.save({"state_dict": {"layer.weight": torch.zeros(3, 3)}}, path)
    elif content == "wrong_shape":
        torch.save({**good, "project.weight": torch.zeros(128, 2048)}, path)
    elif content == "not_a_dict":
        torch.save([torch.zeros(2)], path)
    else:
        path.write_bytes(b"\x80\x04not a torch file at all")
    with pytest.raises(ValueError, match=str(path.name)):
        NetVladDescriptor(path)


def test_missing_weights_and_unknown_backend(tmp_path):
    with pytest.raises(FileNotFoundError):
        NetVladDescriptor(tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="backend"):
        NetVladDescriptor(backend="tensorrt")
