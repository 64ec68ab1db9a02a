"""ExReNet at run time (the pipeline method relocal_ros/methods/exrenet.py uses it; the networks are model.py).

Weights (float16 state dict, torch.load(weights_only=True)) are exported once to ONNX in a cache directory keyed by
the sha256 of the weights and of the network's code and checked against torch there; the encoder and the regressor then run through a backend (ONNX
Runtime on CPU, TensorRT or torch CUDA on a GPU, backends.py). Keyframe feature maps are computed when the map
loads (or a keyframe is added), never per query; per query: one encoder pass, one regressor pass over all
retrieved keyframes as a batch, and the MC-dropout head sampled in numpy."""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from relocal_ros.networks import correlation, layers
from relocal_ros.networks.backends import check_onnx, export_onnx, export_tag, make_backend
from relocal_ros.networks.exrenet import model as exrenet_model
from relocal_ros.networks.exrenet.model import DROPOUT, XFEAT_SIZE, ExReNet, load_exrenet, split_outputs, xfeat_input

log = logging.getLogger(__name__)
from relocal_ros.resources import models_dir  # noqa: E402  (source tree, installed share/ or ament index)
MODELS_DIR = models_dir()
DEFAULT_WEIGHTS = MODELS_DIR / "exrenet_synthetic.pt"


def cache_dir() -> Path:
    root = os.environ.get("RELOCAL_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                           os.path.expanduser("~/.cache"), "relocal_ros")
    return Path(root) / "networks"


@dataclass
class RelativePrediction:
    T_kf_query: np.ndarray       # mean pose, unit translation (the direction)
    scale: float                 # mean predicted distance (m)
    centre_sigma: float          # sd of the sampled camera centres (m): the paper's sigma
    direction_sd_deg: float      # angular spread of the sampled translation directions
    rotation_sd_deg: float       # angular spread of the sampled rotations
    centres: np.ndarray          # (S, 3) sampled query centres in the keyframe frame (m)


def mc_dropout_head(hidden: np.ndarray, fc2_w: np.ndarray, fc2_b: np.ndarray, fc3_w: np.ndarray, fc3_b: np.ndarray,
                    samples: int, rng: np.random.Generator, p: float = DROPOUT) -> np.ndarray:
    """(R, 512) hidden vectors -> (R, S, 8) head outputs under S dropout masks (inverted dropout, as torch)."""
    R, S = hidden.shape[0], max(samples, 1)
    if samples <= 0:
        h = hidden[:, None]
    else:
        keep = rng.random((R, samples, hidden.shape[1]), dtype=np.float32) >= p
        h = hidden[:, None] * keep * np.float32(1.0 / (1.0 - p))
    h = h.reshape(R * S, -1)  # one 2-D product: numpy's stacked 3-D matmul is ~20x slower here (no batched BLAS)
    z = np.maximum(h @ fc2_w.T + fc2_b, 0.0)
    return (z @ fc3_w.T + fc3_b).reshape(R, S, -1)


def summarize_samples(out: np.ndarray) -> RelativePrediction:
    """(S, 8) head samples of one pair -> mean pose and spreads."""
    t, q, s = split_outputs(out)
    centres = t * s[:, None]
    mean_t = t.mean(0)
    mean_t /= max(np.linalg.norm(mean_t), 1e-9)
    rots = Rotation.from_quat(q)
    R_mean = rots.mean()
    dir_sd = np.degrees(np.sqrt(np.mean(np.arccos(np.clip(t @ mean_t, -1, 1)) ** 2))) if len(t) > 1 else 0.0
    rot_sd = np.degrees(np.sqrt(np.mean(np.sum((rots * R_mean.inv()).as_rotvec() ** 2, 1)))) if len(t) > 1 else 0.0
    sigma = float(np.sqrt(np.sum(centres.var(0)))) if len(t) > 1 else 0.0
    T = np.eye(4)
    T[:3, :3] = R_mean.as_matrix()
    T[:3, 3] = mean_t
    return RelativePrediction(T, float(s.mean()), sigma, float(dir_sd), float(rot_sd), centres)


class _RegressorGraph(torch.nn.Module):
    def __init__(self, model: ExReNet):
        super().__init__()
        self.regressor = model.regressor

    def forward(self, fine_r, coarse_r, fine_q, coarse_q):
        return self.regressor(fine_r, coarse_r, fine_q, coarse_q)


class ExReNetRunner:
    """encode(image) once per image, predict(keyframe features, query features) -> one RelativePrediction per
    keyframe."""

    def __init__(self, weights=None, backend: str = "auto", mc_samples: int = 100, threads: int = 2, seed: int = 0):
        weights = Path(weights or DEFAULT_WEIGHTS)
        self.model, self.info = load_exrenet(weights)
        self.mc_samples = int(mc_samples)
        self.rng = np.random.default_rng(seed)
        # the export depends on the weights and on the code that defines the graph: the model, its layers, its
        # correlations and this file (the exported regressor wrapper)
        digest = export_tag(weights, (exrenet_model, correlation, layers, sys.modules[__name__]))
        enc_path, reg_path = self._export(digest)
        W, H = XFEAT_SIZE
        self.encoder = make_backend(enc_path, backend, threads, torch_module=self.model.encoder(),
                                    trt_shapes=None)
        fine_shape, coarse_shape = self._feature_shapes()
        self.regressor = make_backend(
            reg_path, backend, threads, torch_module=_RegressorGraph(self.model),
            trt_shapes={"fine_r": ((1, *fine_shape), (5, *fine_shape), (16, *fine_shape)),
                        "coarse_r": ((1, *coarse_shape), (5, *coarse_shape), (16, *coarse_shape)),
                        "fine_q": ((1, *fine_shape),) * 3, "coarse_q": ((1, *coarse_shape),) * 3})
        head = self.model.head
        self._fc = [p.detach().numpy().astype(np.float32) for p in
                    (head.fc2.weight, head.fc2.bias, head.fc3.weight, head.fc3.bias)]
        self.backend_name = self.encoder.name

    def _feature_shapes(self):
        with torch.no_grad():
            f, c = self.model.encoder()(torch.zeros(1, 3, XFEAT_SIZE[1], XFEAT_SIZE[0]))
        return tuple(f.shape[1:]), tuple(c.shape[1:])

    def _export(self, digest: str) -> tuple[Path, Path]:
        """ONNX files of this exact weights file, exported and checked against torch once per machine."""
        d = cache_dir()
        enc, reg = d / f"exrenet_encoder_{digest}.onnx", d / f"exrenet_regressor_{digest}.onnx"
        if enc.is_file() and reg.is_file():
            return enc, reg
        W, H = XFEAT_SIZE
        torch.manual_seed(0)
        image = {"image": torch.rand(1, 3, H, W)}
        encoder = self.model.encoder().eval()
        export_onnx(encoder, image, enc.with_suffix(".check"), ["fine", "coarse"])
        check_onnx(encoder, enc.with_suffix(".check"), image, atol=1e-3)
        with torch.no_grad():
            f, c = encoder(torch.rand(2, 3, H, W))
        feats = {"fine_r": f[:1].expand(3, -1, -1, -1).contiguous(), "coarse_r": c[:1].expand(3, -1, -1, -1).contiguous(),
                 "fine_q": f[1:], "coarse_q": c[1:]}
        graph = _RegressorGraph(self.model).eval()
        export_onnx(graph, feats, reg.with_suffix(".check"), ["hidden"],
                    dynamic_axes={"fine_r": {0: "refs"}, "coarse_r": {0: "refs"}, "hidden": {0: "refs"}})
        check_onnx(graph, reg.with_suffix(".check"), feats, atol=1e-3)
        os.replace(enc.with_suffix(".check"), enc)
        os.replace(reg.with_suffix(".check"), reg)
        return enc, reg

    def encode(self, view_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Canonical 160 x 120 view -> (fine (C, 24, 32), coarse (C', 6, 8)) float16."""
        fine, coarse = self.encoder(image=xfeat_input(view_rgb)[None])
        return fine[0].astype(np.float16), coarse[0].astype(np.float16)

    def predict(self, fine_r: np.ndarray, coarse_r: np.ndarray, fine_q: np.ndarray, coarse_q: np.ndarray,
                samples: int | None = None):
        samples = self.mc_samples if samples is None else samples
        (hidden,) = self.regressor(fine_r=fine_r.astype(np.float32), coarse_r=coarse_r.astype(np.float32),
                                   fine_q=fine_q[None].astype(np.float32), coarse_q=coarse_q[None].astype(np.float32))
        out = mc_dropout_head(hidden, *self._fc, samples, self.rng)
        return [summarize_samples(o) for o in out]
