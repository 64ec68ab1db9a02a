"""VLAD global descriptors over local features (Jégou et al.; Arandjelović & Zisserman's intra-normalisation):
the place-recognition descriptor of the keyframe index. The vocabulary is learned by FAISS k-means."""
from __future__ import annotations

import faiss
import numpy as np


def learn_vocabulary(descriptors: np.ndarray, n_words: int = 64, seed: int = 0, max_points: int = 200_000) -> np.ndarray:
    descriptors = np.ascontiguousarray(descriptors, dtype=np.float32)
    if len(descriptors) < n_words * 4:
        raise ValueError(f"need at least {n_words * 4} descriptors to learn {n_words} visual words, "
                         f"got {len(descriptors)}")
    rng = np.random.default_rng(seed)
    if len(descriptors) > max_points:
        descriptors = descriptors[rng.choice(len(descriptors), max_points, replace=False)]
    km = faiss.Kmeans(descriptors.shape[1], n_words, niter=20, seed=seed, spherical=True, verbose=False)
    km.train(descriptors)
    return km.centroids.astype(np.float32)


class VladAggregator:
    def __init__(self, vocabulary: np.ndarray):
        self.vocabulary = np.ascontiguousarray(vocabulary, dtype=np.float32)
        self.n_words, self.dim = self.vocabulary.shape
        self._assign = faiss.IndexFlatL2(self.dim)
        self._assign.add(self.vocabulary)

    @property
    def output_dim(self) -> int:
        return self.n_words * self.dim

    def __call__(self, descriptors: np.ndarray) -> np.ndarray:
        out = np.zeros((self.n_words, self.dim), np.float32)
        if len(descriptors):
            d = np.ascontiguousarray(descriptors, dtype=np.float32)
            _, words = self._assign.search(d, 1)
            np.add.at(out, words[:, 0], d - self.vocabulary[words[:, 0]])
            out = np.sign(out) * np.sqrt(np.abs(out))  # power normalisation against bursty features
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out = np.where(norms > 0, out / np.maximum(norms, 1e-12), 0)  # intra-normalisation
        v = out.reshape(-1)
        n = np.linalg.norm(v)
        return (v / n if n > 0 else v).astype(np.float32)
