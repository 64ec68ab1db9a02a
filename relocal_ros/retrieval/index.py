"""FAISS index of keyframe global descriptors, with ExReNet's diversity rule for picking references."""
from __future__ import annotations

import faiss
import numpy as np


class KeyframeIndex:
    """Inner-product search over L2-normalised descriptors (cosine similarity). Exact (flat) search: at the map
    sizes a robot carries (≤ 10^4 keyframes of 4096-d VLAD) it takes about a millisecond. A keyframe may own
    several entries (one per stored in-plane rotation); search answers keyframe ids, best first, each once."""

    def __init__(self, dim: int):
        self.dim = dim
        self.index = faiss.IndexFlatIP(dim)
        self.owners = np.zeros(0, np.int64)

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
        sims, ids = self.index.search(np.ascontiguousarray(descriptor[None], dtype=np.float32),
                                      min(k * n_rot, len(self)))
        keep = ids[0] >= 0
        owners = self.owners[ids[0][keep]]
        _, first = np.unique(owners, return_index=True)
        first = np.sort(first)[:k]
        return sims[0][keep][first], owners[first]


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
