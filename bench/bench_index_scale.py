#!/usr/bin/env python3
"""Keyframe index at scale: exact IndexFlatIP vs the IVF-PQ index that relocal_ros.retrieval.index.make_faiss_index
returns for large maps, on random L2-normalised descriptors (10k x 256, 10k x 4096 = the XFeat VLAD size, 1M x 256).

Per index: build time (IVF-PQ: training on a subsample of at most 39 x nlist vectors, then adding all), time of one
search (k = 5, single query, mean over 200), bytes per keyframe (len(faiss.serialize_index) / n), and recall@1 of
IVF-PQ against the exact flat answer for 1000 queries that are noisy copies of stored descriptors
(q = normalise(x + noise), |noise| about 0.5, i.e. cosine about 0.9 to its source). One thread. For 4096 dims the
IVF-PQ index starts with a random orthogonal projection to 256 dims and re-normalisation (RR256,L2norm, see
index.ivf_pq_factory). Random
isotropic data is the hardest case for PQ (no structure to exploit); real descriptors compress better.

    python bench/bench_index_scale.py [--quick]       # --quick: skips the 1M run
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import faiss  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from relocal_ros.retrieval.index import ivf_pq_factory, ivf_pq_layout, make_faiss_index  # noqa: E402


def normalised(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def random_unit(n: int, d: int, rng, chunk: int = 100_000) -> np.ndarray:
    out = np.empty((n, d), np.float32)
    for s in range(0, n, chunk):
        out[s:s + chunk] = normalised(rng.standard_normal((min(chunk, n - s), d), dtype=np.float32))
    return out


def search_ms(index, Q: np.ndarray, n: int = 200) -> float:
    t = time.perf_counter()
    for q in Q[:n]:
        index.search(q[None], 5)
    return 1000 * (time.perf_counter() - t) / min(n, len(Q))


def run(n: int, d: int, rng, nprobes=(16, 64)) -> list[str]:
    X = random_unit(n, d, rng)
    src = rng.choice(n, 1000, replace=False)
    Q = normalised(X[src] + rng.standard_normal((1000, d), dtype=np.float32) * (0.5 / np.sqrt(d)))
    rows = []
    t = time.perf_counter()
    flat = make_faiss_index(d, n, use_gpu=False)  # n <= 50k -> flat; for 1M force flat explicitly below
    if not isinstance(flat, faiss.IndexFlatIP):
        flat = faiss.IndexFlatIP(d)
    flat.add(X)
    build = time.perf_counter() - t
    _, gt = flat.search(Q, 1)
    gt = gt[:, 0]
    rows.append(("flat", build, search_ms(flat, Q), len(faiss.serialize_index(flat)) / n,
                 float(np.mean(gt == src)), ""))
    del flat
    nlist, _ = ivf_pq_layout(min(d, 256), n)
    spec = ivf_pq_factory(d, n)
    t = time.perf_counter()
    ivf = make_faiss_index(d, n, ivf_pq_above=0, use_gpu=False)
    train = X[rng.choice(n, min(n, 39 * nlist), replace=False)]
    ivf.train(train)
    t_train = time.perf_counter() - t
    ivf.add(X)
    build = time.perf_counter() - t
    size = len(faiss.serialize_index(ivf)) / n
    for nprobe in nprobes:
        faiss.extract_index_ivf(ivf).nprobe = nprobe
        _, top = ivf.search(Q, 1)
        rows.append((f"{spec} nprobe={nprobe}", build, search_ms(ivf, Q), size,
                     float(np.mean(top[:, 0] == gt)), f"train {t_train:.1f} s on {len(train)}"))
    lines = [f"\n== n = {n:,} descriptors, dim {d}"]
    lines.append(f"{'index':<36} {'build s':>8} {'ms/search':>10} {'bytes/kf':>9} {'R@1 vs flat':>12}  note")
    for name, b, ms, bpk, r, note in rows:
        lines.append(f"{name:<36} {b:>8.1f} {ms:>10.3f} {bpk:>9.1f} {r:>12.3f}  {note}")
    lines[-len(rows)] += "  (flat R@1 = share of queries whose source is the exact top-1)"
    print("\n".join(lines), flush=True)
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    out = [f"bench_index_scale: faiss {faiss.__version__}, 1 thread, CPU"]
    print(out[0])
    t0 = time.time()
    for n, d in [(10_000, 256), (10_000, 4096)] + ([] if a.quick else [(1_000_000, 256)]):
        out += run(n, d, rng)
    print(f"\ntotal {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
