"""Everything computed from one image for retrieval and matching, in one place, so keyframes (once, at mapping)
and queries (per image) go through exactly the same code."""
from __future__ import annotations

import numpy as np

from relocal_ros.matching.features import LocalFeatures, make_extractor
from relocal_ros.retrieval.vlad import VladAggregator


class FrameEncoder:
    def __init__(self, extractor: str, extractor_conf: dict, vocabulary: np.ndarray, global_descriptor=None):
        """global_descriptor: an image -> vector callable (NetVLAD, DenseVLAD); None: VLAD of the local features."""
        self.extractor_name = extractor
        self.extractor = make_extractor(extractor, extractor_conf)
        self.vlad = VladAggregator(vocabulary)
        self.global_descriptor = global_descriptor

    def warm_up(self, width: int, height: int) -> None:
        """Build what is built lazily per image size (ONNX Runtime sessions) before the first real query."""
        self(np.zeros((height, width, 3), np.uint8))

    def __call__(self, rgb: np.ndarray) -> tuple[LocalFeatures, np.ndarray]:
        feats = self.extractor(rgb)
        if self.global_descriptor is not None:
            return feats, self.global_descriptor(rgb)
        return feats, self.vlad(feats.descriptors)
