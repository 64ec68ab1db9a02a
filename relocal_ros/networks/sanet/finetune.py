"""Per-map fine-tuning of SANet on the map's own keyframes (`relocal train-scene MAP --method sanet`).

A map's keyframes are real RGB-D frames with poses: each is a query whose truth is its own depth thumbnail's pooled
scene coordinates (model.pooled_coordinates), and its nearest keyframes by pose are its scene, exactly the
clusters of the synthetic training data (train.py). Every 5th usable keyframe is held out as a validation query
whose scene is built from training keyframes only, so the validation error (median scene-coordinate error of the
finest level, train.evaluate) says how the weights do on views they never saw, before (the shipped weights) and
after fine-tuning. The frozen backbone runs once per keyframe image (plus photometrically jittered copies,
train.jitter) at the start of each run; the frames stay in memory (train.ClusterData.from_arrays), and train.train
fine-tunes from the shipped weights under the wall-clock budget (earlier runs of this map counted), keeping the
weights of the best validation; when even those do not beat the initial weights on the held-out keyframes, the map
keeps the initial weights (meta "initial_weights_kept"). Stored in the map directory, outside its immutable versions:

    MAP/sanet/sanet_finetuned.pt   the best weights (model.save_weights format)
    MAP/sanet/checkpoint.pt        train.train's resumable state (weights, optimizer, steps, seconds)
    MAP/sanet/train_log.jsonl      train.train's validation log
    MAP/sanet/meta.json            keyframe fingerprint (the DSAC++ head's, dsacpp.model.keyframes_fingerprint), map
                                   version, budget and seconds spent, validation before / after, sha256 of the
                                   weights; written last ("complete": true)

The pipeline method (methods/sanet.py) takes MAP/sanet/sanet_finetuned.pt when meta.json is complete, its checksum
holds and its fingerprint matches the map's first num_keyframes keyframes (a map that only grew keeps them; SANet
needs no retraining for new keyframes), unless the `weights` setting names a file."""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from relocal_ros.io_utils import atomic_write_bytes, file_sha256
from relocal_ros.mapping.keyframe_map import KeyframeMap
from relocal_ros.networks.layers import load_xfeat_backbone
from relocal_ros.networks.map_weights import MapWeightsStore, keyframes_fingerprint, load_map_for_training
from relocal_ros.networks.sanet.model import XFeatPyramid, load_weights, save_weights, pooled_coordinates, prepare_image
from relocal_ros.networks.sanet.train import SCENE_FRAMES, ClusterData, evaluate, jitter, train, validation_picks

log = logging.getLogger(__name__)
FT_DIR = "sanet"
WEIGHTS_NAME = "sanet_finetuned.pt"
META_FORMAT = "relocal_ros.sanet_finetune"
META_VERSION = 1
TRAIN_COMMAND = "relocal train-scene MAP --method sanet"
DEFAULT_FINETUNE_CONF = {
    "validation_every": 5,      # every n-th usable keyframe is a held-out validation query
    "cluster_size": 8,          # a training cluster: a keyframe and its cluster_size - 1 nearest training keyframes
    "copies": 2,                # per training keyframe: its clean image + (copies - 1) photometrically jittered ones
    "min_valid_cells": 0.25,    # keyframes with less depth (share of finest cells) are not used
    "lr": 5e-4,                 # the synthetic training's rate: a budget of minutes on a CPU is a few hundred steps
    "warmup_steps": 10,
    "batch": 8,
    "yaw_deg": 45.0,
    "validations": 10,          # validations over the training budget (at least every 15 s)
    "threads": None,            # torch threads; None leaves the process setting
    "seed": 0,
}


# -- the map's frames and clusters --------------------------------------------------------------------------------
def _neighbours(centres: np.ndarray, looks: np.ndarray, i: int, pool: list[int], n: int) -> list[int]:
    """The n keyframes of pool nearest to keyframe i by pose: camera centre distance plus the distance between the
    points the two cameras look at (at the map's median depth), so that a camera turning in place changes scene."""
    pool = [j for j in pool if j != i]
    d = np.linalg.norm(centres[pool] - centres[i], axis=1) + np.linalg.norm(looks[pool] - looks[i], axis=1)
    return [pool[j] for j in np.argsort(d, kind="stable")[:n]]


@torch.no_grad()
def map_clusters(kmap: KeyframeMap, conf: dict, progress: bool = False):
    """(training ClusterData, validation ClusterData, info) from the map's keyframes; both share one frame array:
    every usable keyframe's clean image, then the jittered copies of the training keyframes."""
    conf = {**DEFAULT_FINETUNE_CONF, **(conf or {})}
    rng = np.random.default_rng([int(conf["seed"]), 11])
    coords, usable = {}, []
    for kf in kmap.keyframes:
        depth = np.asarray(kf.depth_thumbnail, np.float32)
        c = pooled_coordinates(depth, kf.intrinsics.scaled(depth.shape[1], depth.shape[0]), kf.T_map_cam)
        coords[kf.id] = c
        if np.isfinite(c[-1]).all(-1).mean() >= conf["min_valid_cells"]:
            usable.append(kf.id)
    every = int(conf["validation_every"])
    val_ids = [k for n, k in enumerate(usable) if every and n % every == every // 2]
    train_ids = [k for k in usable if k not in val_ids]
    if len(train_ids) < SCENE_FRAMES + 1 or not val_ids:
        raise ValueError(f"{len(usable)} of the map's {len(kmap)} keyframes have depth on at least "
                         f"{conf['min_valid_cells']:.0%} of the image; fine-tuning SANet needs at least "
                         f"{SCENE_FRAMES + 2} (a held-out one and {SCENE_FRAMES + 1} to train on)")
    depths = np.concatenate([np.asarray(kmap.keyframes[k].depth_thumbnail, np.float32).ravel() for k in usable])
    median_depth = float(np.median(depths[np.isfinite(depths) & (depths > 0)]))
    T = np.array([kmap.keyframes[k].T_map_cam for k in range(len(kmap))], np.float64)
    centres = T[:, :3, 3]
    looks = centres + median_depth * T[:, :3, 2]

    # frames: (keyframe id, copy); copy 0 is the clean thumbnail
    frames = [(k, 0) for k in usable] + [(k, c) for c in range(1, int(conf["copies"])) for k in train_ids]
    index = {f: n for n, f in enumerate(frames)}
    backbone = XFeatPyramid(load_xfeat_backbone()).eval()
    feats = {"f32": [], "f16": [], "f8": []}
    bar = tqdm(total=len(frames), desc="sanet features", unit="img", disable=not progress)
    for s in range(0, len(frames), 32):
        images = []
        for k, c in frames[s:s + 32]:
            rgb = kmap.keyframes[k].thumbnail
            images.append(prepare_image(jitter(rgb, rng) if c else rgb))
        out = backbone(torch.from_numpy(np.concatenate(images)))
        for name, f in zip(("f32", "f16", "f8"), out):
            feats[name].append(f.numpy().astype(np.float16))
        bar.update(len(images))
    bar.close()
    arrays = {k: np.concatenate(v) for k, v in feats.items()}
    for lvl, name in enumerate(("c32", "c16", "c8")):
        arrays[name] = np.stack([coords[k][lvl] for k, _ in frames])
    arrays["R"] = np.stack([kmap.keyframes[k].T_map_cam[:3, :3] for k, _ in frames]).astype(np.float32)
    arrays["cluster"] = np.array([k for k, _ in frames], np.int64)   # the keyframe id (train.py counts frames)
    n_near = int(conf["cluster_size"]) - 1
    train_clusters = [[index[(j, c)] for j in [k] + _neighbours(centres, looks, k, train_ids, n_near)]
                      for c in range(int(conf["copies"])) for k in train_ids]
    # a validation query first (validation_picks' query), its scene from training keyframes only
    val_clusters = [[index[(k, 0)]] + [index[(j, 0)] for j in _neighbours(centres, looks, k, train_ids, SCENE_FRAMES)]
                    for k in val_ids]
    info = {"usable_keyframes": len(usable), "train_keyframes": len(train_ids), "validation_keyframes": len(val_ids),
            "validation_ids": [int(k) for k in val_ids], "frames": len(frames), "train_clusters": len(train_clusters),
            "median_depth_m": round(median_depth, 3)}
    return ClusterData.from_arrays(arrays, train_clusters), ClusterData.from_arrays(arrays, val_clusters), info


# -- reading what a map holds -------------------------------------------------------------------------------------
STORE = MapWeightsStore(FT_DIR, WEIGHTS_NAME, META_FORMAT, META_VERSION, TRAIN_COMMAND)
read_meta = STORE.read_meta
map_weights = STORE.weights_for   # (path of the map's fine-tuned SANet weights, "") or ("", why not)


# -- the entry point ----------------------------------------------------------------------------------------------
def train_scene(map_dir, budget_s: float = 600, resume: bool = True, progress: bool = True,
                conf: dict | None = None, init=None) -> dict:
    """Fine-tune SANet on the map's keyframes within budget_s wall seconds in all (this map's earlier runs included
    when resuming), from `init` (default: the shipped weights). Returns the metadata written to MAP/sanet/meta.json
    (validation_before / validation_after: train.evaluate on the held-out keyframes of the initial / best weights).
    Raises ValueError for a map it cannot train on."""
    from relocal_ros.networks.sanet.runtime import DEFAULT_WEIGHTS
    t_start = time.perf_counter()
    conf = {**DEFAULT_FINETUNE_CONF, **(conf or {})}
    map_dir, kmap = load_map_for_training(map_dir, budget_s, conf["threads"])
    d = map_dir / FT_DIR
    fingerprint = keyframes_fingerprint(kmap.keyframes)
    init = Path(init or DEFAULT_WEIGHTS)
    old = read_meta(map_dir) if resume else None
    if old is not None and (old.get("keyframes_sha256") != fingerprint or old.get("num_keyframes") != len(kmap)
                            or old.get("format_version") != META_VERSION):
        log.warning("%s: fine-tuned for another version of this map (%s keyframes, version %s); starting again",
                    d, old.get("num_keyframes"), old.get("map_version"))
        old = None
    if old is not None and not (d / "checkpoint.pt").is_file():
        old = None
    if old is not None and old.get("complete") and old["seconds_total"] >= budget_s - 3.0:
        log.info("%s: already fine-tuned for a budget of %.0f s; nothing to do", d, budget_s)
        return old
    # the clusters first: a map that cannot be trained on (ValueError) leaves MAP/sanet/ as it was, never an
    # unfinished state that the method would then warn about
    tr, va, info = map_clusters(kmap, conf, progress)
    if old is None and d.exists():
        shutil.rmtree(d)   # another map version, --no-resume or an unreadable state: start clean
    d.mkdir(parents=True, exist_ok=True)
    runs = int(old["runs"]) if old else 0
    prep_before = float(old["prep_seconds"]) if old else 0.0
    meta = {"format": META_FORMAT, "format_version": META_VERSION, "complete": False, "map_version": kmap.version,
            "num_keyframes": len(kmap), "keyframes_sha256": fingerprint, "init_weights": str(init),
            "init_sha256": file_sha256(init), "budget_s": float(budget_s), "runs": runs + 1,
            "conf": {k: v for k, v in conf.items() if k != "threads"}}
    atomic_write_bytes(d / "meta.json", json.dumps({**(old or {}), **meta, "complete": False}, indent=1).encode())

    vpicks = validation_picks(va, 1)
    model, init_meta = load_weights(init)
    before = old.get("validation_before") if old else None
    if before is None:
        before = evaluate(model, va, vpicks)
    prep = prep_before + time.perf_counter() - t_start
    train_s = budget_s - prep - 3.0   # 3 s: the final validation and saves
    if train_s <= 0:
        raise ValueError(f"budget {budget_s:.0f} s: preparation alone took {prep:.0f} s")
    best = train(None, d, minutes=train_s / 60.0, resume=old is not None, batch=int(conf["batch"]),
                 lr=float(conf["lr"]), yaw_deg=float(conf["yaw_deg"]),
                 val_every_s=max(15.0, train_s / int(conf["validations"])), seed=int(conf["seed"]) + runs,
                 weights_name=WEIGHTS_NAME, progress=progress, init=init, arch=dict(model.arch), data=(tr, va),
                 val_per_cluster=1, warmup_steps=int(conf["warmup_steps"]))
    ck = torch.load(str(d / "checkpoint.pt"), map_location="cpu", weights_only=True)
    state = json.loads(ck["state"])
    kept = best["median_error_m"] >= before["median_error_m"]
    if kept:  # never worse on the held-out keyframes than where it started: the map keeps the initial weights
        log.warning("%s: fine-tuned weights (held-out median %.3f m) do not beat the initial ones (%.3f m); keeping "
                    "the initial weights", d, best["median_error_m"], before["median_error_m"])
        save_weights(model, d / WEIGHTS_NAME, meta={"validation": before, "initial_weights_kept": str(init)})
    after = before if kept else best
    return STORE.write_complete(
        map_dir, meta, **info, prep_seconds=round(prep, 1), train_seconds=round(state["elapsed"], 1),
        seconds_total=round(prep + state["elapsed"], 1), seconds_this_run=round(time.perf_counter() - t_start, 1),
        steps=state["step"], validation_before=before, validation_after=after, validation_finetuned=best,
        initial_weights_kept=kept,
        improvement=round(1.0 - after["median_error_m"] / max(before["median_error_m"], 1e-9), 3))


def _report(meta: dict, map_path: str) -> None:
    b, f = meta["validation_before"], meta["validation_finetuned"]
    print(f"fine-tuned {meta['seconds_total']:.0f} s in all ({meta['steps']} steps) on {meta['train_keyframes']} "
          f"keyframes; held-out keyframes ({meta['validation_keyframes']}): median scene-coordinate error "
          f"{100 * b['median_error_m']:.1f} cm (initial weights) -> {100 * f['median_error_m']:.1f} cm "
          f"(fine-tuned), within 10 cm {b['within_0.1m']:.0%} -> {f['within_0.1m']:.0%}")
    kept = "the initial weights (fine-tuning did not beat them)" if meta["initial_weights_kept"] else "fine-tuned"
    print(f"the map's SANet weights ({kept}): {Path(map_path) / FT_DIR / WEIGHTS_NAME}")


def main(argv=None) -> int:
    """`python -m relocal_ros.networks.sanet.finetune MAP [--budget S] [--no-resume]` (what `relocal train-scene
    --method sanet` runs)."""
    from relocal_ros.networks.train_scene_cli import run_train_scene
    return run_train_scene(argv, f"Fine-tune SANet on the map's keyframes (stored in MAP/{FT_DIR}/)",
                           "start from the shipped weights again", train_scene, _report)


if __name__ == "__main__":
    raise SystemExit(main())
