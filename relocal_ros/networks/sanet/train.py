"""SANet training on the package's synthetic scenes.

Data (generate_shard): per procedural scene (build_scene(seed)) a few clusters of views: a random acceptable 6-DoF
pose and up to 7 random motions of it (about 0.3 m and 15 deg per axis), rendered at the keyframe-thumbnail size
(160x120) with brightness/contrast/gamma jitter, blur and noise. Because the XFeat backbone is frozen, its three
feature maps are computed once per rendered frame and stored (float16) with the frame's pooled scene coordinates
(model.pooled_coordinates, the function the keyframe pyramids use at run time) and camera rotation. A training
sample is one frame of a cluster as the query and 5 other frames as the scene, drawn anew every step.
Seeds >= 9000 are held out for validation.

Training (train): the trainable pyramid heads + registration, L2 (Euclidean) loss over the query's valid cells at
every level plus a confidence loss (is the cell within radius/4 of the truth?), scene coordinates centred on the
scene points' mean in the first scene frame's camera axes and rotated by a random angle about its up (-y) axis.
Adam, cosine learning-rate decay over the wall-clock budget, resumable checkpoints, validation (median error of
the finest level vs the mean-scene-point baseline, on the same cells) logged as JSON lines."""
from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from relocal_ros.io_utils import atomic_write_bytes
from relocal_ros.networks.backends import model_device, pick_device
from relocal_ros.networks.layers import load_xfeat_backbone
from relocal_ros.networks.sanet.model import (LEVEL_SIZES, Sanet, XFeatPyramid, load_weights, pooled_coordinates,
                                              prepare_image, save_weights)

VAL_SEED0 = 9000
SCENE_FRAMES = 5


# ---------------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------------
def jitter(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Photometric augmentation: gain, offset, gamma, optional blur, sensor noise."""
    x = rgb.astype(np.float32) / 255.0
    x = np.clip(x * rng.uniform(0.6, 1.4) + rng.uniform(-0.1, 0.1), 0, 1) ** rng.uniform(0.7, 1.4)
    x = x * rng.uniform(0.9, 1.1, 3)  # white balance
    if rng.random() < 0.5:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.3, 1.2))
    x = x + rng.normal(0, rng.uniform(0, 0.02), x.shape)
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


def cluster_poses(scene, rng, intr, n: int = 8, t_sigma: float = 0.3, r_sigma_deg: float = 15.0,
                  tries: int = 120) -> list[np.ndarray]:
    from relocal_ros.data.synth.cameras import acceptable_view, random_pose
    from relocal_ros.geometry.poses import make_T
    centre = random_pose(scene, rng, intr, dense=True)
    poses = [centre]
    for _ in range(tries):
        if len(poses) >= n:
            break
        dR = Rotation.from_rotvec(rng.normal(0, np.radians(r_sigma_deg), 3)).as_matrix()
        T = centre @ make_T(dR, rng.normal(0, t_sigma, 3))
        if acceptable_view(scene, T, intr):
            poses.append(T)
    return poses


@torch.no_grad()
def generate_shard(seeds, out_path, clusters_per_scene: int = 6, frames_per_cluster: int = 8,
                   backbone: XFeatPyramid | None = None, progress: bool = True) -> Path:
    """Render the clusters of the given scene seeds and store backbone features + pooled coordinates (npz)."""
    from relocal_ros.data.synth import build_scene
    from relocal_ros.data.synth.cameras import scene_intrinsics
    from relocal_ros.data.synth.renderer import open_renderer
    backbone = backbone or XFeatPyramid(load_xfeat_backbone()).eval()
    intr = scene_intrinsics(160, 120)
    keys = ("f32", "f16", "f8", "c32", "c16", "c8")
    data = {k: [] for k in keys}
    rots, cluster_ids, seed_ids = [], [], []
    n_clusters = 0
    for seed in tqdm(list(seeds), desc=f"sanet data {Path(out_path).name}", disable=not progress):
        scene, textures = build_scene(int(seed))
        renderer = open_renderer(scene.boxes, textures, intr, scene.light, scene.ambient, scene.intensity)
        rng = np.random.default_rng([int(seed), 77])
        try:
            for _ in range(clusters_per_scene):
                try:
                    poses = cluster_poses(scene, rng, intr, frames_per_cluster)
                except RuntimeError:
                    continue
                if len(poses) < SCENE_FRAMES + 1:
                    continue
                images, coords = [], []
                for T in poses:
                    rgb, depth = renderer.render(T)
                    images.append(prepare_image(jitter(rgb, rng)))
                    coords.append(pooled_coordinates(depth, intr, T))
                feats = backbone(torch.from_numpy(np.concatenate(images)))
                for name, f in zip(("f32", "f16", "f8"), feats):
                    data[name].append(f.numpy().astype(np.float16))
                for lvl, name in enumerate(("c32", "c16", "c8")):
                    data[name].append(np.stack([c[lvl] for c in coords]))
                rots.append(np.stack([T[:3, :3] for T in poses]).astype(np.float32))
                cluster_ids.append(np.full(len(poses), n_clusters, np.int32))
                seed_ids.append(np.full(len(poses), int(seed), np.int32))
                n_clusters += 1
        finally:
            renderer.release()
    if n_clusters == 0:
        raise RuntimeError(f"no usable cluster in scenes {list(seeds)}")
    arrays = {k: np.concatenate(v) for k, v in data.items()}
    arrays.update(R=np.concatenate(rots), cluster=np.concatenate(cluster_ids), seed=np.concatenate(seed_ids))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(out_path, buf.getvalue())


def _shard_job(job) -> str | None:
    """One shard in a pool worker (its own renderer and backbone); None when the generation budget ran out first."""
    seeds, path, deadline = job
    if deadline is not None and time.time() > deadline:
        return None
    torch.set_num_threads(1)
    return str(generate_shard(seeds, path, progress=False))


def generate(data_dir, train_seeds: int = 240, val_seeds: int = 12, workers: int = 1, minutes: float | None = None,
             shard_size: int = 40) -> list[str]:
    """Render the missing shards of data_dir: val_VAL0-VAL1.npz (seeds 9000..) and train_S0-S1.npz (seeds 0..N-1,
    shard_size scenes each); shards already there are kept, so an interrupted generation resumes. workers > 1
    renders shards in parallel processes (a lent GPU machine's 16 cores); minutes: no shard starts after this
    wall-clock budget (the validation shard always does), so training can start on what exists. Returns the shards
    written."""
    from multiprocessing import get_context
    data_dir = Path(data_dir)
    deadline = None if minutes is None else time.time() + 60.0 * minutes
    jobs = []
    if not list(data_dir.glob("val_*.npz")):
        last = VAL_SEED0 + val_seeds - 1
        jobs.append((list(range(VAL_SEED0, last + 1)), data_dir / f"val_{VAL_SEED0}-{last}.npz", None))
    for s in range(0, train_seeds, shard_size):
        e = min(s + shard_size, train_seeds)
        path = data_dir / f"train_{s:05d}-{e - 1:05d}.npz"
        if not path.is_file():
            jobs.append((list(range(s, e)), path, deadline))
    if workers <= 1:
        done = [_shard_job(j) for j in tqdm(jobs, desc="sanet shards")]
    else:
        with get_context("spawn").Pool(workers) as pool:  # spawn: each worker makes its own EGL context
            done = list(tqdm(pool.imap_unordered(_shard_job, jobs), total=len(jobs), desc="sanet shards"))
    return sorted(d for d in done if d)


class ClusterData:
    """The frames of one or more shards, grouped by cluster."""

    def __init__(self, paths):
        parts = []
        for p in paths:
            with np.load(p, allow_pickle=False) as z:
                parts.append({k: z[k] for k in z.files})
        if not parts:
            raise FileNotFoundError("no SANet data shards")
        self.a = {}
        offset = 0
        clusters = []
        for d in parts:
            clusters.append(d["cluster"].astype(np.int64) + offset)
            offset = int(clusters[-1].max()) + 1
        for k in parts[0]:
            self.a[k] = np.concatenate([d[k] for d in parts]) if k != "cluster" else np.concatenate(clusters)
        order = np.argsort(self.a["cluster"], kind="stable")
        self.a = {k: v[order] for k, v in self.a.items()}
        _, starts, counts = np.unique(self.a["cluster"], return_index=True, return_counts=True)
        self.clusters = [np.arange(s, s + c) for s, c in zip(starts, counts) if c >= SCENE_FRAMES + 1]

    @classmethod
    def from_arrays(cls, arrays: dict, clusters) -> "ClusterData":
        """Frames already in memory (the keys a shard holds) and clusters given as lists of frame indices, which may
        share frames (per-map fine-tuning, finetune.py: a keyframe is in the scene of each of its neighbours)."""
        self = cls.__new__(cls)
        self.a = arrays
        self.clusters = [np.asarray(c, np.int64) for c in clusters if len(c) >= SCENE_FRAMES + 1]
        if not self.clusters:
            raise ValueError(f"no cluster of at least {SCENE_FRAMES + 1} frames")
        return self

    def __len__(self):
        return len(self.clusters)

    @property
    def num_frames(self) -> int:
        return len(self.a["cluster"])


def _rot_y(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def make_batch(data: ClusterData, picks, yaw_deg: float, rng: np.random.Generator | None):
    """picks: list of (query frame index, [scene frame indices]). Returns torch tensors:
    frames' backbone features per level (B*(1+S) x 64 x h x w, query first in each group of 1+S), scene coordinates
    per level (B x S*h*w x 3, canonical frame, 0 where invalid), their validity, the query's truth per level
    (B x 3 x h x w, NaN where invalid), and each sample's (centre, R_canon_from_map) for evaluation."""
    a = data.a
    order = []
    for q, scene in picks:
        order += [q] + list(scene)
    feats = [torch.from_numpy(a[k][order].astype(np.float32)) for k in ("f32", "f16", "f8")]
    xyz_l, valid_l, gt_l = [[] for _ in LEVEL_SIZES], [[] for _ in LEVEL_SIZES], [[] for _ in LEVEL_SIZES]
    frames = []
    for q, scene in picks:
        fine = a["c8"][scene].reshape(-1, 3)
        centre = np.nanmean(fine.astype(np.float64), 0)
        A = a["R"][scene[0]].astype(np.float64).T          # map -> first scene camera's axes
        if rng is not None and yaw_deg > 0:
            A = _rot_y(np.radians(rng.uniform(-yaw_deg, yaw_deg))) @ A
        frames.append((centre, A))
        for lvl, k in enumerate(("c32", "c16", "c8")):
            s = ((a[k][scene].reshape(-1, 3) - centre) @ A.T).astype(np.float32)
            ok = np.isfinite(s).all(1)
            xyz_l[lvl].append(np.where(ok[:, None], s, 0))
            valid_l[lvl].append(ok.astype(np.float32))
            w, h = LEVEL_SIZES[lvl]
            g = ((a[k][q].reshape(-1, 3) - centre) @ A.T).astype(np.float32)
            gt_l[lvl].append(g.T.reshape(3, h, w))
    xyz = [torch.from_numpy(np.stack(x)) for x in xyz_l]
    valid = [torch.from_numpy(np.stack(v)) for v in valid_l]
    gt = [torch.from_numpy(np.stack(g)) for g in gt_l]
    return feats, xyz, valid, gt, frames


def forward_batch(model: Sanet, feats, xyz, valid, n_scene: int = SCENE_FRAMES):
    """Heads on every frame, then registration of each query against its scene frames; every level's output."""
    levels = model.heads(*feats)
    queries, scenes = [], []
    for lvl, f in enumerate(levels):
        N, D, h, w = f.shape
        g = f.reshape(N // (1 + n_scene), 1 + n_scene, D, h * w)
        queries.append(g[:, 0].reshape(-1, D, h, w))
        sf = g[:, 1:].permute(0, 1, 3, 2).reshape(g.shape[0], n_scene * h * w, D)
        scenes.append((xyz[lvl], sf, valid[lvl]))
    return model.registration.forward_all(queries, scenes)


def loss_terms(outs, gt, radii):
    total = 0.0
    errs = []
    for (pred, conf), g, r in zip(outs, gt, radii):
        ok = torch.isfinite(g).all(1)                           # B x h x w
        err = (pred - torch.nan_to_num(g)).norm(dim=1)
        e = err[ok]
        if e.numel() == 0:
            continue
        target = (err.detach() < r / 4).float()
        bce = F.binary_cross_entropy_with_logits(conf[:, 0][ok], target[ok])
        total = total + e.mean() + 0.1 * bce
        errs.append(float(e.detach().median()))
    return total, errs


def sample_picks(data: ClusterData, batch: int, rng: np.random.Generator):
    picks = []
    for c in rng.integers(len(data), size=batch):
        idx = rng.permutation(data.clusters[c])
        picks.append((int(idx[0]), [int(i) for i in idx[1:1 + SCENE_FRAMES]]))
    return picks


def validation_picks(data: ClusterData, per_cluster: int = 2):
    picks = []
    for idx in data.clusters:
        for j in range(min(per_cluster, len(idx))):
            others = [int(i) for i in idx if i != idx[j]][:SCENE_FRAMES]
            picks.append((int(idx[j]), others))
    return picks


def to_device(batch_parts, dev: torch.device):
    """make_batch's tensors (lists of them per level) on the model's device."""
    return [[t.to(dev) for t in part] for part in batch_parts]


@torch.no_grad()
def evaluate(model: Sanet, data: ClusterData, picks, batch: int = 16) -> dict:
    """Median / mean error (m) of the finest level over the query cells with truth, and of the trivial baseline
    (every cell predicted at the mean of the scene points) on the same cells; share of cells within 0.1/0.25 m."""
    model.eval()
    errs, base = [], []
    for s in range(0, len(picks), batch):
        feats, xyz, valid, gt, _ = make_batch(data, picks[s:s + batch], 0.0, None)
        feats, xyz, valid = to_device((feats, xyz, valid), model_device(model))
        pred = forward_batch(model, feats, xyz, valid)[-1][0].cpu()
        g = gt[-1]
        ok = torch.isfinite(g).all(1)
        errs.append((pred - torch.nan_to_num(g)).norm(dim=1)[ok].numpy())
        # the canonical frame is centred on the mean of the scene points: the baseline predicts 0
        base.append(torch.nan_to_num(g).norm(dim=1)[ok].numpy())
    e, b = np.concatenate(errs), np.concatenate(base)
    model.train()
    return {"median_error_m": float(np.median(e)), "mean_error_m": float(e.mean()),
            "within_0.1m": float((e < 0.1).mean()), "within_0.25m": float((e < 0.25).mean()),
            "baseline_median_error_m": float(np.median(b)), "baseline_mean_error_m": float(b.mean()),
            "cells": int(len(e)), "samples": len(picks)}


def matching_baseline(data: ClusterData, picks) -> dict:
    """Explicit matching, no learning (the paper's "Ours (Baseline)" without its network): each query cell takes
    the coordinate of the scene cell whose raw XFeat feature (finest level) is the most cosine-similar."""
    a = data.a
    errs = []
    for q, scene in picks:
        s = a["c8"][scene].reshape(-1, 3)
        fs = a["f8"][scene].astype(np.float32).transpose(0, 2, 3, 1).reshape(-1, a["f8"].shape[1])
        g = a["c8"][q].reshape(-1, 3)
        fq = a["f8"][q].astype(np.float32).transpose(1, 2, 0).reshape(-1, a["f8"].shape[1])
        ok, okq = np.isfinite(s).all(1), np.isfinite(g).all(1)
        fs = fs[ok] / (np.linalg.norm(fs[ok], axis=1, keepdims=True) + 1e-9)
        fq = fq[okq] / (np.linalg.norm(fq[okq], axis=1, keepdims=True) + 1e-9)
        errs.append(np.linalg.norm(s[ok][(fq @ fs.T).argmax(1)] - g[okq], axis=1))
    e = np.concatenate(errs)
    return {"median_error_m": float(np.median(e)), "mean_error_m": float(e.mean()),
            "within_0.1m": float((e < 0.1).mean()), "within_0.25m": float((e < 0.25).mean()), "cells": int(len(e))}


def compare_on_validation(data_dir, weight_files) -> dict:
    """Every given SANet weight file and the two baselines on the same validation samples (same cells)."""
    va = ClusterData(sorted(Path(data_dir).glob("val_*.npz")))
    picks = validation_picks(va)
    out = {"xfeat_matching": matching_baseline(va, picks)}
    xfeat = load_xfeat_backbone()
    for w in weight_files:
        model, _ = load_weights(w, xfeat)
        res = evaluate(model, va, picks)
        out["mean_scene_point"] = {k[9:]: v for k, v in res.items() if k.startswith("baseline_")}
        out[str(w)] = res
    return out


# ---------------------------------------------------------------------------------------------------------------
# training loop
# ---------------------------------------------------------------------------------------------------------------
class _BatchStream(torch.utils.data.IterableDataset):
    """Endless training batches (make_batch), each DataLoader worker with its own random stream: on a GPU the numpy
    batch assembly, not the network, would otherwise set the pace."""

    def __init__(self, data: ClusterData, batch: int, yaw_deg: float, seed: int, step: int):
        self.data, self.batch, self.yaw_deg, self.seed, self.step = data, batch, yaw_deg, seed, step

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, self.step, 1 + (info.id if info else 0)])
        while True:
            yield make_batch(self.data, sample_picks(self.data, self.batch, rng), self.yaw_deg, rng)[:4]


def train(data_dir, out_dir, minutes: float = 30.0, resume: bool = False, batch: int = 8, lr: float = 5e-4,
          yaw_deg: float = 45.0, val_every_s: float = 180.0, seed: int = 0, weights_name: str = "sanet_best.pt",
          progress: bool = True, init=None, arch: dict | None = None, data: tuple | None = None,
          val_per_cluster: int = 2, warmup_steps: int = 100, device: str = "auto", loader_workers: int = 0) -> dict:
    """Train for `minutes` of wall clock (counting previous runs when resuming); returns the best validation.
    init: a SANet weight file to start from (when not resuming); arch: architecture options of Sanet; data:
    (training, validation) ClusterData already in memory instead of data_dir's shards; val_per_cluster: queries
    per validation cluster (validation_picks); warmup_steps: linear learning-rate warm-up; device: auto (a GPU when
    torch sees one), cpu or cuda; loader_workers: processes assembling batches ahead (0: in this process)."""
    dev = pick_device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if data is not None:
        tr, va = data
    else:
        data_dir = Path(data_dir)
        train_paths = sorted(data_dir.glob("train_*.npz"))
        val_paths = sorted(data_dir.glob("val_*.npz"))
        if not train_paths or not val_paths:
            raise FileNotFoundError(f"{data_dir}: needs train_*.npz and val_*.npz shards (scripts/train_sanet.py "
                                    f"--generate)")
        tr, va = ClusterData(train_paths), ClusterData(val_paths)
    vpicks = validation_picks(va, val_per_cluster)
    model = Sanet(conf=arch)
    if init is not None and not (resume and (out_dir / "checkpoint.pt").is_file()):
        blob = torch.load(str(init), map_location="cpu", weights_only=True)
        model.load_trainable_state(blob["state_dict"])
    model.to(dev)
    params = list(model.heads.parameters()) + list(model.registration.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    ckpt_path = out_dir / "checkpoint.pt"
    state = {"step": 0, "elapsed": 0.0, "best": None, "history": []}
    if resume and ckpt_path.is_file():
        ck = torch.load(str(ckpt_path), map_location="cpu", weights_only=True)
        model.load_trainable_state(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        state = json.loads(ck["state"])
    rng = np.random.default_rng([seed, state["step"]])
    stream = None
    if loader_workers > 0:  # forked: the workers share the shards' arrays instead of copying them
        stream = iter(torch.utils.data.DataLoader(_BatchStream(tr, batch, yaw_deg, seed, state["step"]), batch_size=None,
                                                  num_workers=loader_workers, prefetch_factor=4,
                                                  multiprocessing_context="fork"))
    budget = minutes * 60.0
    log_path = out_dir / "train_log.jsonl"
    start = time.time() - state["elapsed"]
    last_val = time.time() if state["step"] else 0.0

    def save_ckpt():
        state["elapsed"] = time.time() - start
        blob = {"model": model.trainable_state(), "optimizer": opt.state_dict(), "state": json.dumps(state)}
        buf = io.BytesIO()
        torch.save(blob, buf)
        atomic_write_bytes(ckpt_path, buf.getvalue())

    def validate():
        res = evaluate(model, va, vpicks)
        res.update(step=state["step"], minutes=round((time.time() - start) / 60, 2), train_frames=tr.num_frames,
                   train_clusters=len(tr))
        state["history"].append(res)
        with open(log_path, "a") as f:
            f.write(json.dumps(res) + "\n")
        if state["best"] is None or res["median_error_m"] < state["best"]["median_error_m"]:
            state["best"] = res
            save_weights(model, out_dir / weights_name, meta={"validation": res})
        return res

    model.train()
    bar = tqdm(total=int(budget), initial=int(state["elapsed"]), unit="s", desc="sanet train", disable=not progress)
    running = None
    while time.time() - start < budget:
        frac = (time.time() - start) / budget
        for g in opt.param_groups:  # cosine decay over the wall-clock budget, short warm-up
            g["lr"] = lr * min(1.0, (state["step"] + 1) / max(warmup_steps, 1)) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
        if stream is not None:
            feats, xyz, valid, gt = next(stream)
        else:
            feats, xyz, valid, gt, _ = make_batch(tr, sample_picks(tr, batch, rng), yaw_deg, rng)
        feats, xyz, valid, gt = to_device((feats, xyz, valid, gt), dev)
        outs = forward_batch(model, feats, xyz, valid)
        loss, errs = loss_terms(outs, gt, model.arch["radii"])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        state["step"] += 1
        running = errs if running is None else [0.98 * r + 0.02 * e for r, e in zip(running, errs)]
        if state["step"] % 20 == 0:
            bar.n = int(time.time() - start)
            bar.set_postfix(step=state["step"], med=" ".join(f"{r:.3f}" for r in running))
            bar.refresh()
        if time.time() - last_val > val_every_s:
            res = validate()
            last_val = time.time()
            bar.write(f"step {state['step']}: val median {res['median_error_m']:.3f} m "
                      f"(baseline {res['baseline_median_error_m']:.3f} m), <0.1 m {res['within_0.1m']:.2f}")
            save_ckpt()
    res = validate()
    bar.write(f"final step {state['step']}: val median {res['median_error_m']:.3f} m "
              f"(baseline {res['baseline_median_error_m']:.3f} m)")
    save_ckpt()
    bar.close()
    return state["best"]


# ---------------------------------------------------------------------------------------------------------------
# entry point (scripts/train_sanet.py)
# ---------------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    """Train SANet (relocal_ros.networks.sanet) on synthetic scenes.

    python scripts/train_sanet.py --generate --data /tmp/sanet_data        # render + cache backbone features
    python scripts/train_sanet.py --generate --data D --train-seeds 1200 --workers 15   # a lent GPU machine's cores
    python scripts/train_sanet.py --data D --device cuda --batch 32 --loader-workers 6 ...  # its GPU (train_on_gpu.sh)
    python scripts/train_sanet.py --data /tmp/sanet_data --minutes 35 --out /tmp/sanet_run --global-k 0 [--resume]
    python scripts/train_sanet.py --data /tmp/sanet_data --minutes 35 --out /tmp/sanet_run2 \
        --init /tmp/sanet_run/sanet_best.pt --lr 3e-4 --global-k 8          # fine-tune with similarity candidates
    python scripts/train_sanet.py --data /tmp/sanet_data --evaluate W1.pt W2.pt   # vs baselines, same samples
    cp /tmp/sanet_run2/sanet_best.pt models/sanet_xfeat_synth.pt

--generate writes train_S0-S1.npz shards (scene seeds 0..--train-seeds, --shard-size per shard) and
val_9000-9011.npz; existing shards are kept, so an interrupted generation resumes (--workers N renders N shards at
a time). Training stops after --minutes of wall clock
(counting earlier runs with --resume), validating every --val-every seconds; the best validation weights are
written to OUT/sanet_best.pt, the resumable state to OUT/checkpoint.pt, the validation log to OUT/train_log.jsonl.
"""
    import argparse
    p = argparse.ArgumentParser(prog="train_sanet.py", description=main.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="/tmp/sanet_data", help="folder of the cached training shards")
    p.add_argument("--out", default="/tmp/sanet_run", help="checkpoint, log and best weights")
    p.add_argument("--minutes", type=float, default=35.0, help="wall-clock training budget")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--generate", action="store_true", help="render the data shards (then exit)")
    p.add_argument("--train-seeds", type=int, default=240, help="number of training scenes (seeds 0..N-1)")
    p.add_argument("--val-seeds", type=int, default=12, help="number of validation scenes (seeds 9000..)")
    p.add_argument("--workers", type=int, default=1, help="--generate: shards rendered in parallel processes")
    p.add_argument("--generate-minutes", type=float, default=None,
                   help="--generate: start no shard after this wall-clock budget (train on the shards that exist)")
    p.add_argument("--shard-size", type=int, default=40, help="--generate: scenes per shard")
    p.add_argument("--loader-workers", type=int, default=0,
                   help="processes that assemble batches ahead of the trainer (a GPU otherwise waits on numpy)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--yaw-deg", type=float, default=45.0, help="rotation augmentation about the up axis (+-deg)")
    p.add_argument("--val-every", type=float, default=180.0, help="seconds between validations")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto", help="auto (a GPU when torch sees one), cpu or cuda")
    p.add_argument("--evaluate", nargs="+", default=None, metavar="WEIGHTS",
                   help="compare these weight files and the baselines on the validation shard (then exit)")
    p.add_argument("--init", default=None, help="start from these SANet weights (fine-tuning)")
    p.add_argument("--global-k", type=int, default=8,
                   help="finer levels also sample the scene points most similar in feature space (0: off)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = Path(a.data)
    if a.evaluate:
        print(json.dumps(compare_on_validation(data, a.evaluate), indent=1))
        return 0
    if a.generate:
        written = generate(data, a.train_seeds, a.val_seeds, a.workers, a.generate_minutes, a.shard_size)
        print(f"{len(written)} shards written to {data}")
        return 0
    best = train(data, a.out, a.minutes, a.resume, a.batch, a.lr, a.yaw_deg, a.val_every, init=a.init,
                 arch={"global_k": a.global_k}, device=a.device, loader_workers=a.loader_workers)
    print(json.dumps(best, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
