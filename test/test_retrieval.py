"""Global descriptors (DenseVLAD, raw pixels, registry) and the large-map FAISS index, on real behaviour: retrieval on
a rendered synthetic scene judged by frustum overlap, exact model round-trips, clear errors on bad model files."""
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from relocal_ros.data.sources import open_source  # noqa: E402
from relocal_ros.data.synth import generate_scene  # noqa: E402
from relocal_ros.data.synth.overlap import frustum_overlap  # noqa: E402
from relocal_ros.retrieval.densevlad import DEFAULT_MODEL, DenseVladDescriptor  # noqa: E402
from relocal_ros.retrieval.global_descriptors import make_global_descriptor  # noqa: E402
from relocal_ros.retrieval.index import make_faiss_index  # noqa: E402
from relocal_ros.retrieval.raw_pixels import RawPixelDescriptor  # noqa: E402



@pytest.fixture(scope="module")
def small_scene(tmp_path_factory):
    # seed 101 is held out from the DenseVLAD training seeds (1000-1002)
    out = generate_scene(tmp_path_factory.mktemp("synth") / "s101", 101, width=160, height=120, n_map=30, n_query=10,
                         workers=1, progress=False)
    ms, qs = open_source(out / "seq-01"), open_source(out / "seq-02")
    return [ms[i] for i in range(len(ms))], [qs[i] for i in range(len(qs))], ms.intrinsics


@pytest.fixture(scope="module")
def densevlad():
    return DenseVladDescriptor.load()


def _overlap(a, b, intr):
    return 0.5 * (frustum_overlap(a, b, intr, step=0.25) + frustum_overlap(b, a, intr, step=0.25))


def test_densevlad_retrieves_overlapping_views_better_than_random(small_scene, densevlad):
    map_frames, queries, intr = small_scene
    M = np.stack([densevlad(f.rgb) for f in map_frames])
    assert M.dtype == np.float32 and M.shape == (len(map_frames), densevlad.dim)
    np.testing.assert_allclose(np.linalg.norm(M, axis=1), 1.0, atol=1e-5)
    O = np.array([[_overlap(q.pose, m.pose, intr) for m in map_frames] for q in queries])
    top1 = [int(np.argmax(M @ densevlad(q.rgb))) for q in queries]
    hits = np.mean([O[i, j] >= 0.3 for i, j in enumerate(top1)])
    random_rate = np.mean(O >= 0.3)  # expected hit rate of a random ranking's top-1
    rng = np.random.default_rng(0)
    shuffled = np.mean([O[i, rng.integers(len(map_frames))] >= 0.3 for i in range(len(queries)) for _ in range(20)])
    print(f"densevlad top-1 hit rate {hits:.2f}, random {random_rate:.2f}, shuffled {shuffled:.2f}")
    assert hits > random_rate + 0.15 and hits > shuffled + 0.15, (hits, random_rate, shuffled)


def test_densevlad_save_load_roundtrip_is_exact(tmp_path, small_scene, densevlad):
    img = small_scene[1][0].rgb
    p = tmp_path / "model.npz"
    densevlad.save(p)
    again = DenseVladDescriptor.load(p)
    assert again.dim == densevlad.dim and again.conf == densevlad.conf
    np.testing.assert_array_equal(again(img), densevlad(img))


def test_trained_model_roundtrip_is_exact(tmp_path, small_scene):
    map_frames, queries, _ = small_scene
    model = DenseVladDescriptor.train([f.rgb for f in map_frames[::2]], n_words=8, pca_dim=8, max_local=5_000)
    p = tmp_path / "tiny.npz"
    model.save(p)
    loaded = DenseVladDescriptor.load(p)
    for q in queries[:2]:
        np.testing.assert_array_equal(loaded(q.rgb), model(q.rgb))
    assert model(queries[0].rgb).shape == (8,)


def test_shipped_model_is_small_and_valid():
    assert DEFAULT_MODEL.is_file() and DEFAULT_MODEL.stat().st_size < 3_000_000
    with np.load(DEFAULT_MODEL, allow_pickle=False) as z:
        assert z["vocabulary"].shape == (64, 128)


def test_bad_model_files_raise_clear_value_errors(tmp_path):
    good = DEFAULT_MODEL.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good[: len(good) // 2])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip archive at all" * 10)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, vocabulary=np.zeros((64, 64), np.float32))
    for p in (truncated, garbage):
        with pytest.raises(ValueError, match="not a readable DenseVLAD model"):
            DenseVladDescriptor.load(p)
    with pytest.raises(ValueError, match="missing arrays"):
        DenseVladDescriptor.load(wrong)
    with np.load(DEFAULT_MODEL, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["pca_A"] = arrays["pca_A"][:, :100]
    bad_pca = tmp_path / "bad_pca.npz"
    np.savez(bad_pca, **arrays)
    with pytest.raises(ValueError, match="do not fit"):
        DenseVladDescriptor.load(bad_pca)
    with pytest.raises(FileNotFoundError):
        DenseVladDescriptor.load(tmp_path / "absent.npz")


def test_raw_pixels_ignore_a_global_brightness_offset(small_scene):
    rgb = small_scene[0][0].rgb.astype(np.int16)
    img = np.clip(rgb // 2 + 40, 0, 255).astype(np.uint8)  # keep headroom so the offset does not clip
    brighter = (img.astype(np.int16) + 50).astype(np.uint8)
    d = RawPixelDescriptor()
    a, b = d(img), d(brighter)
    assert a.shape == (d.dim,) == (32 * 24,) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert abs(np.linalg.norm(a) - 1) < 1e-5
    flat = np.full((48, 64, 3), 77, np.uint8)
    assert not np.any(d(flat))  # a uniform image has no direction: the zero vector, not NaN


def test_registry(monkeypatch):
    assert make_global_descriptor("raw_pixels").name == "raw_pixels"
    assert make_global_descriptor("densevlad").name == "densevlad"
    with pytest.raises(ValueError, match="densevlad, raw_pixels, netvlad"):
        make_global_descriptor("bag_of_words")
    monkeypatch.setitem(sys.modules, "relocal_ros.retrieval.netvlad", None)  # makes the import fail
    with pytest.raises(RuntimeError, match="'netvlad' is not available"):
        make_global_descriptor("netvlad")


def test_make_faiss_index_small_is_flat_large_is_ivfpq_and_finds_noisy_copies():
    assert isinstance(make_faiss_index(64, 1000, use_gpu=False), faiss.IndexFlatIP)
    big = make_faiss_index(4096, 200_000, use_gpu=False)  # the XFeat VLAD size: projected to 256 dims first
    assert isinstance(faiss.downcast_index(big), faiss.IndexPreTransform) and big.d == 4096
    assert faiss.downcast_index(faiss.extract_index_ivf(big)).pq.M == 32
    rng = np.random.default_rng(0)
    n, d = 4000, 64
    X = rng.standard_normal((n, d)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    index = make_faiss_index(d, n, ivf_pq_above=3000, use_gpu=False)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    assert isinstance(ivf, faiss.IndexIVFPQ) and not index.is_trained
    index.train(X)
    index.add(X)
    src = rng.choice(n, 200, replace=False)
    Q = X[src] + rng.standard_normal((200, d)).astype(np.float32) * (0.3 / np.sqrt(d))
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    _, top = index.search(Q, 1)
    assert np.mean(top[:, 0] == src) > 0.8


def test_keyframe_index_switches_to_ivf_pq_for_large_maps_and_finds_late_additions():
    from relocal_ros.retrieval.index import KeyframeIndex
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12_000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx = KeyframeIndex(64, ivf_pq_above=5_000)
    for i in range(0, 11_000, 1000):
        idx.add(x[i:i + 1000], owner=0)
    idx.owners = np.arange(11_000)  # one entry per keyframe here
    hits = sum(idx.search(x[i] + 0.05 * rng.normal(size=64).astype(np.float32), 1)[1][0] == i
               for i in rng.choice(11_000, 200, replace=False))
    assert idx._fast is not None and faiss.downcast_index(faiss.extract_index_ivf(idx._fast[0])).ntotal == 11_000
    assert hits >= 180
    idx.add(x[11_000:11_500], owner=0)  # +4.5 %: no rebuild, the new entries are searched exactly
    idx.owners = np.arange(11_500)
    assert idx.search(x[11_200], 1)[1][0] == 11_200 and idx._fast[1] == 11_000
