"""SANet at run time (the pipeline method is relocal_ros/methods/sanet.py; the network is model.py): every keyframe's
scene pyramid, computed once (map load / add_keyframe), and per query the encoder and the registration network
through a backend (relocal_ros.networks.backends). Both networks are exported to ONNX into conf["cache_dir"], keyed
by the sha256 of the weights and of the code that defines the exported graphs, and checked against torch there."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from relocal_ros.networks import layers
from relocal_ros.networks.backends import check_onnx, export_onnx, export_tag, make_backend
from relocal_ros.networks.sanet import model as sanet_model
from relocal_ros.networks.sanet.model import (LEVEL_SIZES, NET_H, NET_W, WIDE, Sanet, load_weights,
                                              pooled_coordinates, prepare_image)
from relocal_ros.resources import model_path  # (source tree, installed share/ or ament index)

DEFAULT_WEIGHTS = model_path("sanet_xfeat_synth.pt")
DEFAULT_CONF = {
    "weights": "",               # "" = the shipped models/sanet_xfeat_synth.pt
    "backend": "auto",           # "auto" | "onnxruntime" | "tensorrt" | "torch" (networks/backends.py)
    "threads": 2,                # ONNX Runtime intra-op threads
    "cache_dir": "",             # where the ONNX exports are cached; "" = ~/.cache/relocal_ros/sanet
    "max_references": 10,        # at most this many of the retrieved keyframes build the query's scene
    "min_scene_points": 20,      # refuse when the references' finest level has fewer valid scene points
}


# ---------------------------------------------------------------------------------------------------------------
# scene pyramid of a set of keyframes
# ---------------------------------------------------------------------------------------------------------------
class KeyframePyramid:
    """One keyframe's scene pyramid: per level the valid cells' map-frame coordinates (M_l x 3) and features
    (M_l x D), plus its camera rotation (the canonical axes when it is the first reference)."""

    def __init__(self, xyz: list[np.ndarray], feats: list[np.ndarray], R_map_cam: np.ndarray):
        self.xyz, self.feats, self.R_map_cam = xyz, feats, R_map_cam

    @property
    def num_points(self) -> int:
        return len(self.xyz[-1])


def build_pyramid(features: list[np.ndarray], coords: list[np.ndarray], T_map_cam: np.ndarray) -> KeyframePyramid:
    """features: per level 1 x D x h x w (encoder output); coords: per level h x w x 3 (pooled_coordinates)."""
    xyz, feats = [], []
    for f, c in zip(features, coords):
        f = np.asarray(f)[0].reshape(f.shape[1], -1).T
        c = c.reshape(-1, 3)
        ok = np.isfinite(c).all(1)
        xyz.append(c[ok].astype(np.float32))
        feats.append(np.ascontiguousarray(f[ok], np.float32))
    return KeyframePyramid(xyz, feats, np.asarray(T_map_cam, np.float64)[:3, :3].copy())


def scene_inputs(pyramids: list[KeyframePyramid], k: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """Network scene inputs from the references' pyramids in the canonical frame (centred on the mean of the
    finest level's points, axes of the first reference's camera), padded with unusable points so that every level
    has at least WIDE * k (the exported kNN's candidate count is fixed). Returns (inputs, centre, R) with
    map = R @ canonical + centre."""
    centre = np.concatenate([p.xyz[-1] for p in pyramids]).astype(np.float64).mean(0)
    R = pyramids[0].R_map_cam
    inputs = {}
    for lvl, name in enumerate(("32", "16", "8")):
        xyz = np.concatenate([p.xyz[lvl] for p in pyramids]).astype(np.float64)
        feat = np.concatenate([p.feats[lvl] for p in pyramids])
        canon = ((xyz - centre) @ R).astype(np.float32)
        valid = np.ones(len(canon), np.float32)
        pad = max(0, WIDE * k - len(canon))
        if pad:
            canon = np.concatenate([canon, np.zeros((pad, 3), np.float32)])
            feat = np.concatenate([feat, np.zeros((pad, feat.shape[1]), np.float32)])
            valid = np.concatenate([valid, np.zeros(pad, np.float32)])
        inputs[f"xyz{name}"] = canon[None]
        inputs[f"feat{name}"] = np.ascontiguousarray(feat, np.float32)[None]
        inputs[f"valid{name}"] = valid[None]
    return inputs, centre, R


# ---------------------------------------------------------------------------------------------------------------
# ONNX export (encoder and registration), cached by weight hash
# ---------------------------------------------------------------------------------------------------------------
ENCODER_INPUTS = ["image"]
ENCODER_OUTPUTS = ["f32", "f16", "f8"]
REG_INPUTS = ["q32", "q16", "q8", "xyz32", "feat32", "valid32", "xyz16", "feat16", "valid16", "xyz8", "feat8",
              "valid8"]
REG_OUTPUTS = ["xyz", "confidence"]


def example_inputs(model: Sanet, num_points=(60, 240, 960), seed: int = 0) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    enc = {"image": torch.rand(1, 3, NET_H, NET_W, generator=g)}
    D = model.arch["dim"]
    reg = {}
    for name, (w, h) in zip(("32", "16", "8"), LEVEL_SIZES):
        reg[f"q{name}"] = torch.randn(1, D, h, w, generator=g).relu()
    for name, m in zip(("32", "16", "8"), num_points):
        reg[f"xyz{name}"] = torch.randn(1, m, 3, generator=g)
        reg[f"feat{name}"] = torch.randn(1, m, D, generator=g).relu()
        reg[f"valid{name}"] = (torch.rand(1, m, generator=g) > 0.1).float()
    return enc, {k: reg[k] for k in REG_INPUTS}


def export_all(model: Sanet, out_dir, tag: str) -> tuple[Path, Path]:
    """encoder and registration ONNX files (dynamic number of scene points), checked against torch."""
    out_dir = Path(out_dir)
    enc_path = out_dir / f"sanet_encoder_{tag}.onnx"
    reg_path = out_dir / f"sanet_registration_{tag}.onnx"
    enc_in, reg_in = example_inputs(model)
    encoder = model.encoder().eval()
    dyn = {f"{p}{n}": {1: f"points{n}"} for n in ("32", "16", "8") for p in ("xyz", "feat", "valid")}
    # the backbone's pixel-unshuffle exports only with fixed sides; the network input size is fixed anyway
    for module, path, example, outputs, axes in ((encoder, enc_path, enc_in, ENCODER_OUTPUTS, {"image": {0: "batch"}}),
                                                 (model.registration.eval(), reg_path, reg_in, REG_OUTPUTS, dyn)):
        if path.is_file():
            continue
        export_onnx(module, example, path, outputs, dynamic_axes=axes)
        try:
            check_onnx(module, path, example, atol=1e-3)
        except AssertionError:
            path.unlink(missing_ok=True)  # never leave an unchecked export in the cache
            raise
    return enc_path, reg_path


def trt_shapes(model: Sanet, max_references: int) -> tuple[dict, dict]:
    """TensorRT optimisation profiles (min, opt, max) of the encoder and registration inputs."""
    img = (1, 3, NET_H, NET_W)
    D, n_min = model.arch["dim"], WIDE * model.arch["k"]
    reg = {}
    for name, (w, h) in zip(("32", "16", "8"), LEVEL_SIZES):
        q = (1, D, h, w)
        reg[f"q{name}"] = (q, q, q)
        lo, opt, hi = n_min, max(n_min, 5 * w * h), max(n_min, max_references * w * h)
        reg[f"xyz{name}"] = ((1, lo, 3), (1, opt, 3), (1, hi, 3))
        reg[f"feat{name}"] = ((1, lo, D), (1, opt, D), (1, hi, D))
        reg[f"valid{name}"] = ((1, lo), (1, opt), (1, hi))
    return {"image": (img, img, img)}, reg


# ---------------------------------------------------------------------------------------------------------------
# the runtime (the pipeline method is relocal_ros/methods/sanet.py)
# ---------------------------------------------------------------------------------------------------------------
class SanetRunner:
    """The networks through a backend, and every keyframe's scene pyramid, computed once (add_keyframe)."""

    def __init__(self, keyframe_map, conf: dict | None = None):
        conf = dict(conf or {})
        unknown = set(conf) - set(DEFAULT_CONF)
        if unknown:
            raise KeyError(f"unknown SANet configuration keys {sorted(unknown)}; known: {sorted(DEFAULT_CONF)}")
        self.conf = {**DEFAULT_CONF, **conf}
        self.map = keyframe_map
        weights = Path(self.conf["weights"] or DEFAULT_WEIGHTS)
        self.model, self.meta = load_weights(weights)
        self.k = self.model.arch["k"]
        # the exports depend on the weights and on the code that defines the graphs: the model, its layers and this
        # file (the export's inputs)
        tag = export_tag(weights, (sanet_model, layers, sys.modules[__name__]))
        cache = Path(self.conf["cache_dir"] or Path.home() / ".cache" / "relocal_ros" / "sanet")
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError:  # read-only home (a robot's container): export into a private temporary folder instead
            import tempfile
            cache = Path(tempfile.mkdtemp(prefix="relocal_sanet_"))
        enc_path, reg_path = export_all(self.model, cache, tag)
        kind, threads = self.conf["backend"], int(self.conf["threads"])
        enc_shapes, reg_shapes = trt_shapes(self.model, int(self.conf["max_references"]))
        self.encoder = make_backend(enc_path, kind, threads, torch_module=self.model.encoder(), trt_shapes=enc_shapes)
        self.registration = make_backend(reg_path, kind, threads, torch_module=self.model.registration,
                                         trt_shapes=reg_shapes)
        self.backend_name = getattr(self.registration, "name", kind)
        self.encoder_calls = 0   # counted so that tests can check keyframes are encoded once, not per query
        self._pyramids: dict[int, KeyframePyramid] = {}
        for kf in keyframe_map.keyframes:
            self.add_keyframe(kf)

    def encode(self, rgb: np.ndarray) -> list[np.ndarray]:
        self.encoder_calls += 1
        return self.encoder(image=prepare_image(rgb))

    def add_keyframe(self, kf) -> None:
        thumb, depth = kf.thumbnail, np.asarray(kf.depth_thumbnail, np.float32)
        intr = kf.intrinsics.scaled(depth.shape[1], depth.shape[0])
        coords = pooled_coordinates(depth, intr, kf.T_map_cam)
        self._pyramids[kf.id] = build_pyramid(self.encode(thumb), coords, kf.T_map_cam)

    def pyramid(self, kf_id: int) -> KeyframePyramid:
        if kf_id not in self._pyramids:  # a keyframe appended to the map without add_keyframe
            self.add_keyframe(self.map.keyframes[kf_id])
        return self._pyramids[kf_id]

    def predict(self, rgb: np.ndarray, refs: list[int]) -> tuple[np.ndarray, np.ndarray, str]:
        """(h*w x 3 map-frame coordinates, h*w confidences in [0, 1], refusal) for the finest level's cells."""
        pyrs = [self.pyramid(i) for i in refs[: int(self.conf["max_references"])]]
        pyrs = [p for p in pyrs if p.num_points > 0]
        n = sum(p.num_points for p in pyrs)
        coarsest = sum(len(p.xyz[0]) for p in pyrs)
        if n < int(self.conf["min_scene_points"]) or coarsest == 0:
            return (np.zeros((0, 3), np.float32), np.zeros(0, np.float32),
                    f"SANet: the retrieved keyframes {list(refs)} have {n} scene points with valid depth "
                    f"({coarsest} at the coarsest level; min_scene_points {self.conf['min_scene_points']}): "
                    f"SANet needs keyframe depth")
        scene, centre, R = scene_inputs(pyrs, self.k)
        q32, q16, q8 = self.encode(rgb)
        xyz, conf = self.registration(q32=q32, q16=q16, q8=q8, **scene)
        canon = xyz[0].reshape(3, -1).T.astype(np.float64)
        pts = (canon @ R.T + centre).astype(np.float32)
        confidence = 0.5 * (1.0 + np.tanh(0.5 * conf[0].reshape(-1)))  # the sigmoid, without exp overflow
        return pts, confidence.astype(np.float32), ""
