"""Training ExReNet on the package's synthetic pairs (data/synth/pairs.py: ExReNet's dense and sparse sampling rules).

Because the XFeat backbone is frozen, its features are computed once per rendered image, when the pair is made,
and training runs on cached features: a pair costs one render + overlap test + two XFeat passes (~40 ms on one
core), after which every epoch over it costs only the trainable layers. Producers (separate processes, one
renderer each) write chunks of pairs to CACHE/chunk-*.npz; the trainer picks up new chunks as they appear.
Colour augmentation (brightness, contrast, saturation) is applied to each image before XFeat.

Loss: L1 on translation direction + mu * L1 on the quaternion + beta * L1 on the scale (mu = beta = 1), plus the
auxiliary triplet matching loss of both correlation layers, its positives from the rendered depth."""
from __future__ import annotations

import io
import json
import logging
import signal
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from relocal_ros.geometry.camera import Intrinsics
from relocal_ros.geometry.poses import invert
from relocal_ros.io_utils import atomic_write_bytes
from relocal_ros.networks.backends import model_device, pick_device
from relocal_ros.networks.correlation import cell_matches, triplet_matching_loss
from relocal_ros.networks.exrenet.model import (VIEW_SIZE, XFEAT_SIZE, ExReNet, canonical_intrinsics, load_exrenet,
                                                pose_targets, save_weights, split_outputs, xfeat_input)
from relocal_ros.networks.layers import load_xfeat_backbone

log = logging.getLogger(__name__)
MU, BETA, AUX_WEIGHT = 1.0, 1.0, 1.0
MATCH_STEP = 2          # pixel grid (in the 160 x 120 view) on which depth matches make the auxiliary positives
VALIDATION_SEEDS = 9000  # scenes from this seed on are never trained on


def jitter_colour(rgb: np.ndarray, rng: np.random.Generator, strength: float = 0.3) -> np.ndarray:
    """Random brightness, contrast and saturation (each a factor in [1 - strength, 1 + strength])."""
    x = rgb.astype(np.float32)
    b, c, s = rng.uniform(1 - strength, 1 + strength, 3)
    x = x * b
    x = (x - x.mean()) * c + x.mean()
    grey = x.mean(2, keepdims=True)
    x = (x - grey) * s + grey
    return np.clip(x, 0, 255).astype(np.uint8)


def _producer(args):
    out_dir, worker, seed0, n_pairs, chunk, dense_share, augment = args
    torch.set_num_threads(1)
    from relocal_ros.data.synth import build_scene
    from relocal_ros.data.synth.pairs import sample_pair
    from relocal_ros.data.synth.renderer import open_renderer
    xfeat = load_xfeat_backbone()
    intr = canonical_intrinsics()
    rng = np.random.default_rng([seed0, worker])
    buf, made, scene_i = [], 0, 0
    while made < n_pairs:
        scene, textures = build_scene(seed0 + worker * 100000 + scene_i)
        scene_i += 1
        renderer = open_renderer(scene.boxes, textures, intr, scene.light, scene.ambient, scene.intensity)
        try:
            for _ in range(min(48, n_pairs - made)):
                p = sample_pair(scene, renderer, rng, "dense" if rng.random() < dense_share else "sparse")
                if p is None:
                    break
                imgs = [jitter_colour(im, rng) if augment else im for im in (p.rgb_a, p.rgb_b)]
                x = torch.from_numpy(np.stack([xfeat_input(im) for im in imgs]))
                with torch.no_grad():
                    f = xfeat(x)[0].numpy().astype(np.float16)
                buf.append((f[0], f[1], p.depth_a.astype(np.float16), p.depth_b.astype(np.float16), p.T_a, p.T_b))
                made += 1
                if len(buf) == chunk or made == n_pairs:
                    _write_chunk(Path(out_dir), worker, buf)
                    buf = []
        finally:
            renderer.release()
    return made


def _write_chunk(out_dir: Path, worker: int, pairs: list) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"chunk-{worker:02d}-{time.time_ns()}"
    buf = io.BytesIO()
    np.savez(buf, xa=np.stack([p[0] for p in pairs]), xb=np.stack([p[1] for p in pairs]),
             da=np.stack([p[2] for p in pairs]), db=np.stack([p[3] for p in pairs]),
             Ta=np.stack([p[4] for p in pairs]), Tb=np.stack([p[5] for p in pairs]))
    atomic_write_bytes(out_dir / f"{name}.npz", buf.getvalue())  # the trainer never sees half a chunk


def start_producers(cache_dir, workers: int, pairs_per_worker: int, seed: int, chunk: int = 64,
                    dense_share: float = 0.7, augment: bool = True):
    """Background pair producers; returns the pool's AsyncResult (get() for the number of pairs made)."""
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    pool = get_context("spawn").Pool(workers)
    jobs = [(str(cache_dir), w, seed, pairs_per_worker, chunk, dense_share, augment) for w in range(workers)]
    return pool, pool.map_async(_producer, jobs)


class PairCache:
    """All chunks of a cache directory in memory (float16 features ~200 kB per pair), refreshed on demand."""

    def __init__(self, cache_dir, max_pairs: int = 20000):
        self.dir, self.max_pairs = Path(cache_dir), max_pairs
        self.seen: set[str] = set()
        self.parts: dict[str, list] = {k: [] for k in ("xa", "xb", "da", "db", "Ta", "Tb")}
        self.n = 0

    @classmethod
    def from_arrays(cls, arrays: dict) -> "PairCache":
        """Pairs already in memory (xa, xb, da, db, Ta, Tb; e.g. a map's keyframe pairs, exrenet/finetune.py)."""
        cache = cls(Path("."), max_pairs=0)
        cache.parts = {k: [np.asarray(arrays[k])] for k in cache.parts}
        cache.n = len(arrays["xa"])
        return cache

    def refresh(self) -> int:
        if self.max_pairs == 0:  # in memory only
            return self.n
        for path in sorted(self.dir.glob("chunk-*.npz")):
            if path.name in self.seen or self.n >= self.max_pairs:
                continue
            with np.load(path, allow_pickle=False) as z:
                for k in self.parts:
                    self.parts[k].append(z[k])
                self.n += len(z["xa"])
            self.seen.add(path.name)
        if self.parts["xa"] and len(self.parts["xa"]) > 1:
            for k in self.parts:
                self.parts[k] = [np.concatenate(self.parts[k])]
        return self.n

    def batch(self, idx: np.ndarray, rng: np.random.Generator):
        xa, xb, da, db, Ta, Tb = (self.parts[k][0][idx] for k in ("xa", "xb", "da", "db", "Ta", "Tb"))
        swap = rng.random(len(idx)) < 0.5   # either image may be the keyframe
        xa[swap], xb[swap] = xb[swap].copy(), xa[swap].copy()
        da[swap], db[swap] = db[swap].copy(), da[swap].copy()
        Ta[swap], Tb[swap] = Tb[swap].copy(), Ta[swap].copy()
        return xa, xb, da, db, Ta, Tb


def pixel_matches(depth_r: np.ndarray, depth_q: np.ndarray, T_r: np.ndarray, T_q: np.ndarray, intr: Intrinsics,
                  step: int = MATCH_STEP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keyframe pixels on a grid, their matching query pixels by depth, and whether the match is real (in view,
    not occluded: the query's own depth agrees within 5 % + 2 cm). Returns (uv_r, uv_q, valid)."""
    h, w = depth_r.shape
    v, u = np.mgrid[step // 2:h:step, step // 2:w:step]
    u, v = u.ravel().astype(np.float64), v.ravel().astype(np.float64)
    z = depth_r[v.astype(int), u.astype(int)].astype(np.float64)
    X = np.stack([(u - intr.cx) / intr.fx * z, (v - intr.cy) / intr.fy * z, z], 1)
    T = invert(T_q) @ T_r
    Xq = X @ T[:3, :3].T + T[:3, 3]
    zq = Xq[:, 2]
    ok = (z > 0) & (zq > 0.05)
    uq = np.where(ok, Xq[:, 0] / np.where(ok, zq, 1) * intr.fx + intr.cx, -1)
    vq = np.where(ok, Xq[:, 1] / np.where(ok, zq, 1) * intr.fy + intr.cy, -1)
    ok &= (uq >= 0) & (uq <= w - 1) & (vq >= 0) & (vq <= h - 1)
    zq_seen = np.zeros_like(zq)
    zq_seen[ok] = depth_q[np.round(vq[ok]).astype(int), np.round(uq[ok]).astype(int)]
    ok &= np.abs(zq_seen - zq) < 0.05 * zq + 0.02
    return np.stack([u, v], 1), np.stack([uq, vq], 1), ok


def _cells(uv: np.ndarray, grid_w: int, grid_h: int) -> np.ndarray:
    w, h = VIEW_SIZE
    cx = np.clip((uv[:, 0] + 0.5) * grid_w / w, 0, grid_w - 1).astype(np.int64)
    cy = np.clip((uv[:, 1] + 0.5) * grid_h / h, 0, grid_h - 1).astype(np.int64)
    return cy * grid_w + cx


def auxiliary_targets(da, db, Ta, Tb, intr):
    """Per batch: (cells_r, cells_q, valid) on the fine (32 x 24) and coarse (8 x 6) grids."""
    fw, fh = XFEAT_SIZE[0] // 8, XFEAT_SIZE[1] // 8
    cw, ch = XFEAT_SIZE[0] // 32, XFEAT_SIZE[1] // 32
    out = {k: [] for k in ("fr", "fq", "cr", "cq", "ok")}
    for i in range(len(da)):
        uv_r, uv_q, ok = pixel_matches(da[i], db[i], Ta[i], Tb[i], intr)
        out["fr"].append(_cells(uv_r, fw, fh))
        out["fq"].append(_cells(np.where(ok[:, None], uv_q, 0), fw, fh))
        out["cr"].append(_cells(uv_r, cw, ch))
        out["cq"].append(_cells(np.where(ok[:, None], uv_q, 0), cw, ch))
        out["ok"].append(ok)
    return {k: torch.from_numpy(np.stack(v)) for k, v in out.items()}


def compute_losses(model: ExReNet, xa, xb, da, db, Ta, Tb, intr, generator=None) -> dict:
    """On the model's device (generator: a torch.Generator on that device, or None); the auxiliary targets are
    computed on the CPU from the depth and moved."""
    dev = model_device(model)
    targets = torch.from_numpy(np.stack([pose_targets(invert(a) @ b) for a, b in zip(Ta, Tb)])).to(dev)
    out, coarse, guided, idx = model.forward_from_xfeat(torch.from_numpy(xa).float().to(dev),
                                                        torch.from_numpy(xb).float().to(dev))
    t = torch.nn.functional.normalize(out[:, :3], dim=1)
    q = torch.nn.functional.normalize(out[:, 3:7], dim=1)
    l_t = (t - targets[:, :3]).abs().sum(1).mean()
    l_q = (q - targets[:, 3:7]).abs().sum(1).mean()
    l_s = (out[:, 7] - targets[:, 7]).abs().mean()
    aux = {k: v.to(dev) for k, v in auxiliary_targets(da, db, Ta, Tb, intr).items()}
    B = out.shape[0]
    fw, fh = XFEAT_SIZE[0] // 8, XFEAT_SIZE[1] // 8
    cw, ch = XFEAT_SIZE[0] // 32, XFEAT_SIZE[1] // 32
    nf, nc = fw * fh, cw * ch
    pos_c = cell_matches(aux["cr"], aux["cq"], aux["ok"], nc, nc)
    corr_c = coarse.flatten(2).transpose(1, 2)                     # (B, keyframe cells, query cells)
    l_aux_c = triplet_matching_loss(corr_c, pos_c)
    pos_f = cell_matches(aux["fr"], aux["fq"], aux["ok"], nf, nf)
    p = 4 * 1                                                      # padding of the guided layer (u * border)
    Wp = fw + 2 * p
    cy, cx = idx // Wp - p, idx % Wp - p
    inside = (cy >= 0) & (cy < fh) & (cx >= 0) & (cx < fw)
    cand = torch.where(inside, cy * fw + cx, torch.zeros_like(cy))
    pos_g = torch.gather(pos_f, 2, cand) & inside
    corr_g = guided.flatten(2).transpose(1, 2)                     # (B, keyframe fine cells, 144)
    l_aux_g = triplet_matching_loss(corr_g, pos_g, inside, max_negatives=16, max_positives=4,
                                     generator=generator)
    pose = l_t + MU * l_q + BETA * l_s
    total = pose + AUX_WEIGHT * 0.5 * (l_aux_c + l_aux_g)
    return {"total": total, "pose": pose, "t": l_t, "q": l_q, "s": l_s, "aux_coarse": l_aux_c, "aux_guided": l_aux_g,
            "outputs": out.detach(), "targets": targets, "B": B}


def relative_errors(outputs: np.ndarray, targets: np.ndarray) -> dict:
    """Median rotation error (deg), translation-direction angle (deg) and scale error (m)."""
    from scipy.spatial.transform import Rotation
    t, q, s = split_outputs(outputs)
    rot = np.degrees((Rotation.from_quat(q) * Rotation.from_quat(targets[:, 3:7]).inv()).magnitude())
    ang = np.degrees(np.arccos(np.clip(np.sum(t * targets[:, :3], 1), -1, 1)))
    return {"rotation_deg": float(np.median(rot)), "direction_deg": float(np.median(ang)),
            "scale_m": float(np.median(np.abs(s - targets[:, 7])))}


def evaluate(model: ExReNet, cache: PairCache, batch: int = 32) -> dict:
    model.eval()
    outs, tgts = [], []
    with torch.no_grad():
        for i in range(0, cache.n, batch):
            idx = np.arange(i, min(i + batch, cache.n))
            xa, xb, da, db, Ta, Tb = (cache.parts[k][0][idx] for k in ("xa", "xb", "da", "db", "Ta", "Tb"))
            dev = model_device(model)
            out, *_ = model.forward_from_xfeat(torch.from_numpy(xa).float().to(dev),
                                               torch.from_numpy(xb).float().to(dev))
            outs.append(out.cpu().numpy())
            tgts.append(np.stack([pose_targets(invert(a) @ b) for a, b in zip(Ta, Tb)]))
    model.train()
    return relative_errors(np.concatenate(outs), np.concatenate(tgts))


def save_checkpoint(path: Path, model, optimizer, state: dict) -> None:
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": json.dumps(state)}, buf)
    atomic_write_bytes(path, buf.getvalue())


def train(work_dir, minutes: float, batch: int = 16, lr: float = 3e-4, producers: int = 1,
          pairs_per_producer: int = 12000, val_pairs: int = 256, seed: int = 0, resume: bool = True,
          progress: bool = True, threads: int = 1, device: str = "auto", init=None) -> dict:
    """Train for `minutes` of wall time (pair production runs beside it); resumable from WORK/last.pt. Writes
    WORK/best.pt (lowest validation rotation + direction error) and WORK/log.jsonl. device: auto (a GPU when torch
    sees one), cpu or cuda; the checkpoints are the same either way. init: ExReNet weights to start from when WORK
    has no checkpoint (e.g. the shipped models/exrenet_synthetic.pt)."""
    torch.set_num_threads(threads)
    dev = pick_device(device)
    # a terminated trainer must not leave its producers rendering: SIGTERM unwinds through the finally below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    intr = canonical_intrinsics()
    val_dir = work / "validation"
    if not any(val_dir.glob("chunk-*.npz")):
        _producer((str(val_dir), 0, VALIDATION_SEEDS, val_pairs, 64, 0.7, False))
    val = PairCache(val_dir)
    val.refresh()
    train_dir = work / "pairs"
    pool = None
    if producers > 0:  # 0: train on the pairs already in the cache
        pool, _ = start_producers(train_dir, producers, pairs_per_producer, seed + 1000 * (len(list(
            train_dir.glob("chunk-*.npz"))) + 1))
    cache = PairCache(train_dir)
    cache.refresh()
    model = ExReNet(load_xfeat_backbone())
    if init is not None and not (resume and (work / "last.pt").is_file()):
        model.load_state_dict(load_exrenet(init)[0].state_dict())
    model.to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    state = {"iteration": 0, "pairs_seen": 0, "best": None, "seconds": 0.0, "device": str(dev)}
    last = work / "last.pt"
    if resume and last.is_file():
        ck = torch.load(last, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        state = {**json.loads(ck["state"]), "device": str(dev)}
    rng = np.random.default_rng([seed, state["iteration"]])
    gen = torch.Generator(device=dev).manual_seed(seed + state["iteration"])
    t_end = time.time() + minutes * 60
    while cache.refresh() < batch and time.time() < t_end:
        time.sleep(2)
    model.train()
    bar = tqdm(total=int(minutes * 60), unit="s", disable=not progress, desc="exrenet")
    t_last_eval, t_start, log_f = time.time(), time.time(), open(work / "log.jsonl", "a")
    running = {}
    try:
        while time.time() < t_end:
            if state["iteration"] % 50 == 0 and pool is not None:
                cache.refresh()
                if cache.n >= cache.max_pairs:  # memory bound reached (~4 GB): give the producers' CPU to training
                    pool.terminate()
                    pool = None
            idx = rng.integers(0, cache.n, batch)
            losses = compute_losses(model, *cache.batch(idx, rng), intr, gen)
            optimizer.zero_grad()
            losses["total"].backward()
            optimizer.step()
            state["iteration"] += 1
            state["pairs_seen"] += batch
            for k in ("total", "pose", "t", "q", "s", "aux_coarse", "aux_guided"):
                running[k] = 0.95 * running.get(k, float(losses[k])) + 0.05 * float(losses[k])
            bar.n = int(time.time() - t_start)
            bar.set_postfix(it=state["iteration"], pairs=cache.n, loss=f"{running['total']:.3f}")
            if time.time() - t_last_eval > 300 or time.time() >= t_end:
                t_last_eval = time.time()
                errors = evaluate(model, val)
                rec = {"iteration": state["iteration"], "pairs_in_cache": cache.n, **running, **errors,
                       "seconds": state["seconds"] + time.time() - t_start}
                log_f.write(json.dumps(rec) + "\n")
                log_f.flush()
                score = errors["rotation_deg"] + errors["direction_deg"]
                if state["best"] is None or score < state["best"]["score"]:
                    state["best"] = {"score": score, **rec}
                    save_weights(work / "best.pt", model, {"validation": errors, "iteration": state["iteration"],
                                                            "pairs_seen": state["pairs_seen"]})
                save_checkpoint(last, model, optimizer, {**state, "seconds": state["seconds"] + time.time() - t_start})
    finally:
        bar.close()
        log_f.close()
        if pool is not None:
            pool.terminate()
    state["seconds"] += time.time() - t_start
    save_checkpoint(last, model, optimizer, state)
    return state


def main(argv=None) -> int:
    """scripts/train_exrenet.py: Train ExReNet on synthetic pairs rendered on the fly.

    .venv/bin/python scripts/train_exrenet.py --work /tmp/exrenet --minutes 45 [--no-resume] [--producers 1]
    cp /tmp/exrenet/best.pt models/exrenet_synthetic.pt   # then update models/README.md from /tmp/exrenet/log.jsonl

Runs for the given wall-clock time, resumes from WORK/last.pt, validates every 5 minutes on pairs of held-out scenes
(seeds >= 9000) and keeps the best weights in WORK/best.pt."""
    import argparse
    p = argparse.ArgumentParser(prog="train_exrenet.py", description=main.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True)
    p.add_argument("--minutes", type=float, default=45.0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--producers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the trainer (producers use one each)")
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--device", default="auto", help="auto (a GPU when torch sees one), cpu or cuda")
    p.add_argument("--init", default=None, help="start from these ExReNet weights when WORK has no checkpoint")
    a = p.parse_args(argv)
    state = train(a.work, a.minutes, a.batch, a.lr, a.producers, seed=a.seed, resume=not a.no_resume,
                  threads=a.threads, device=a.device, init=a.init)
    print(json.dumps(state, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
