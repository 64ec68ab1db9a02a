"""FAISS index of keyframe global descriptors, with ExReNet's diversity rule for picking references."""
from __future__ import annotations

import faiss
import numpy as np


class KeyframeIndex:
    """Inner-product search over L2-normalised descriptors (cosine similarity). The exact flat index is the record
    (persisted with the map); at the map sizes a robot carries (≤ 10^4 keyframes) searching it takes about a
    millisecond. Above `ivf_pq_above` entries searches go to an IVF-PQ copy (make_faiss_index; on the GPU when
    faiss-gpu sees one), trained on the entries when first needed and rebuilt when the map has grown by a tenth;
    entries added since are searched exactly and merged. A keyframe may own several entries (one per stored
    in-plane rotation); search answers keyframe ids, best first, each once."""

    def __init__(self, dim: int, ivf_pq_above: int = 50_000):
        self.dim = dim
        self.index = faiss.IndexFlatIP(dim)
        self.owners = np.zeros(0, np.int64)
        self.ivf_pq_above = ivf_pq_above
        self._fast = None        # (IVF-PQ index, number of leading entries it holds)

    def __len__(self) -> int:
        return self.index.ntotal

    def add(self, descriptors: np.ndarray, owner: int) -> None:
        d = np.ascontiguousarray(np.atleast_2d(descriptors), dtype=np.float32)
        if d.shape[1] != self.dim:
            raise ValueError(f"descriptor dimension {d.shape[1]} != index dimension {self.dim}")
        self.index.add(d)
        self.owners = np.concatenate([self.owners, np.full(len(d), owner, np.int64)])

    def search(self, descriptor: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self) == 0:
            return np.zeros(0), np.zeros(0, int)
        n_rot = max(1, len(self.owners) // max(1, len(np.unique(self.owners))))
        q = np.ascontiguousarray(descriptor[None], dtype=np.float32)
        sims, ids = self._search_entries(q, min(k * n_rot, len(self)))
        keep = ids[0] >= 0
        owners = self.owners[ids[0][keep]]
        _, first = np.unique(owners, return_index=True)
        first = np.sort(first)[:k]
        return sims[0][keep][first], owners[first]


    def _search_entries(self, q: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(self)
        if n <= self.ivf_pq_above:
            return self.index.search(q, kk)
        if self._fast is None or n > 1.1 * self._fast[1]:
            fast = make_faiss_index(self.dim, n, ivf_pq_above=self.ivf_pq_above)
            x = self.index.reconstruct_n(0, n)
            rng = np.random.default_rng(0)
            fast.train(x[rng.choice(n, min(n, 200_000), replace=False)])
            fast.add(x)
            self._fast = (fast, n)
        fast, n_fast = self._fast
        sims, ids = fast.search(q, kk)
        if n > n_fast:  # entries added since the build: exact, then merged by score
            tail = self.index.reconstruct_n(n_fast, n - n_fast)
            ts = tail @ q[0]
            order = np.argsort(-ts)[:kk]
            sims = np.concatenate([sims[0], ts[order]])[None]
            ids = np.concatenate([ids[0], order + n_fast])[None]
            best = np.argsort(-sims[0], kind="stable")[:kk]
            sims, ids = sims[:, best], ids[:, best]
        return sims, ids


def select_diverse(candidates: np.ndarray, centres: np.ndarray, k: int, min_dist: float = 0.05,
                   max_dist: float = 10.0) -> list[int]:
    """From candidates ordered best first, keep up to k whose camera centre is at least `min_dist` from every
    already selected one (near-duplicates add no information) and within `max_dist` of the first (a far-away
    look-alike is a retrieval error) — the rule of ExReNet §IV-C."""
    chosen: list[int] = []
    for c in candidates:
        c = int(c)
        if chosen:
            d = np.linalg.norm(centres[chosen] - centres[c], axis=1)
            if d.min() < min_dist or d.max() > max_dist:
                continue
        chosen.append(c)
        if len(chosen) == k:
            break
    return chosen


def faiss_has_gpu() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


IVF_PQ_MAX_DIM = 512  # above: a random orthogonal projection to REDUCED_DIM dims first (see ivf_pq_factory)
REDUCED_DIM = 256


def ivf_pq_layout(dim: int, n_expected: int) -> tuple[int, int]:
    """(nlist, m) for an IVF-PQ index of n_expected vectors of `dim` dims (after any reduction): about 4 sqrt(n)
    inverted lists (a power of two, 16 to 65536, and no more than n / 39 so that the coarse k-means has FAISS's 39
    training points per list) and m = the most sub-quantizers (64, 32, 16, 8, 4, 2, 1) that divide dim with at least
    8 dims each, i.e. m bytes per code."""
    n = max(int(n_expected), 1)
    nlist = int(2 ** np.clip(np.round(np.log2(4 * np.sqrt(n))), 4, 16))
    while nlist > 16 and nlist * 39 > n:
        nlist //= 2
    m = next(m for m in (64, 32, 16, 8, 4, 2, 1) if (dim % m == 0 and dim // m >= 8) or m == 1)
    return nlist, m


def ivf_pq_factory(dim: int, n_expected: int) -> str:
    """faiss.index_factory string of the large-map index. Descriptors of more than IVF_PQ_MAX_DIM dims (the 4096-d
    XFeat VLAD) are first mapped by a random orthogonal projection to 256 dims ("RR256": data-independent, no
    training, no centring, so inner products are kept up to Johnson-Lindenstrauss noise) and re-normalised
    ("L2norm": FAISS trains the coarse quantizer of an inner-product IVF with spherical k-means, i.e. unit centroids;
    vectors shrunk to |x| ~ 0.25 by the projection would leave residuals dominated by the centroid, and recall@1 on
    random data drops to 0.13). Without the projection, 8-bit PQ on 4096 dims would spend a byte on 64 dims and
    lose the neighbours (bench/bench_index_scale.py)."""
    prefix = ""
    if dim > IVF_PQ_MAX_DIM:
        prefix, dim = f"RR{REDUCED_DIM},L2norm,", REDUCED_DIM
    nlist, m = ivf_pq_layout(dim, n_expected)
    return f"{prefix}IVF{nlist},PQ{m}"


def make_faiss_index(dim: int, n_expected: int, *, ivf_pq_above: int = 50_000, use_gpu="auto", nprobe: int = 16):
    """A FAISS inner-product index for n_expected L2-normalised descriptors of `dim` dims.

    n_expected <= ivf_pq_above: exact IndexFlatIP (ready to use; 4 * dim bytes per vector).
    Above: "IVF{nlist},PQ{m}" with METRIC_INNER_PRODUCT (see ivf_pq_layout; m bytes per vector + 8 for the id;
    "RR256,L2norm," in front for dim > 512, see ivf_pq_factory; scores are inner products of the PQ codes),
    searched with `nprobe` lists. It is returned UNTRAINED (index.is_trained is False): call index.train(x) once with
    a representative float32 sample before index.add — at least 39 * nlist vectors for the coarse k-means (FAISS warns
    below that) and never fewer than max(nlist, 256); a sample of 50-100 x nlist vectors is plenty.
    use_gpu: "auto" moves the index to every GPU (faiss.index_cpu_to_all_gpus) when this faiss build has GPU support
    and sees a GPU, True requires that (RuntimeError otherwise), False keeps it on the CPU. If the GPU cannot hold
    this layout (e.g. an unsupported sub-quantizer size) "auto" falls back to the CPU index."""
    if dim <= 0 or n_expected < 0:
        raise ValueError(f"bad index size: dim {dim}, n_expected {n_expected}")
    if n_expected <= ivf_pq_above:
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.index_factory(dim, ivf_pq_factory(dim, n_expected), faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        ivf.nprobe = int(nprobe)
        ivf.do_polysemous_training = False  # on by default; only serves Hamming pre-filtering, and costs minutes
    if use_gpu is True and not faiss_has_gpu():
        raise RuntimeError("use_gpu=True but this faiss build has no GPU support or sees no GPU")
    if use_gpu in (True, "auto") and faiss_has_gpu():
        try:
            return faiss.index_cpu_to_all_gpus(index)
        except RuntimeError:
            if use_gpu is True:
                raise
    return index
