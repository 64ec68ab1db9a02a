"""Per-map fine-tuning of ExReNet on pairs of the map's own keyframes (`relocal train-scene MAP --method exrenet`).

A map's keyframes are real RGB-D frames with poses: two keyframes that see the same surfaces (share >= min_overlap
of one's depth pixels visible and unoccluded in the other, optical axes <= max_angle_deg apart) make a training
pair with its true relative pose and the depth that gives the auxiliary matching loss its positives, exactly the
pairs of the synthetic training (train.py). Each keyframe's thumbnail is resampled to ExReNet's canonical camera
(model.canonical_view; its depth alike, nearest-neighbour) and the frozen XFeat backbone runs once per image and
per photometrically jittered copy. Every validation_every-th keyframe is held out: its pairs with training keyframes
are the validation set, so the validation error (median rotation + translation-direction error, train.evaluate)
says how the weights do on views they never trained on, before (the shipped weights) and after. Training starts
from the shipped weights, runs under the wall-clock budget (earlier runs of this map counted, resumable from the
checkpoint) and keeps the weights of the best validation; when those do not beat the initial ones, the map keeps
the initial weights. Stored in the map directory (networks/map_weights.py):

    MAP/exrenet/exrenet_finetuned.pt   the best weights (model.save_weights format)
    MAP/exrenet/checkpoint.pt          weights, optimizer, state (resumable)
    MAP/exrenet/meta.json              keyframe fingerprint, budget and seconds, validation before / after, sha256 of
                                       the weights; written last ("complete": true)

The pipeline method (methods/exrenet.py) takes the map's weights when they are valid for it, unless the `weights`
setting names a file."""
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
from relocal_ros.networks.exrenet.model import (VIEW_SIZE, canonical_depth, canonical_intrinsics, canonical_view,
                                                load_exrenet, save_weights, xfeat_input)
from relocal_ros.networks.exrenet.train import (PairCache, compute_losses, evaluate, jitter_colour, pixel_matches,
                                                save_checkpoint)
from relocal_ros.networks.layers import load_xfeat_backbone
from relocal_ros.networks.map_weights import MapWeightsStore, keyframes_fingerprint, load_map_for_training

log = logging.getLogger(__name__)
STORE = MapWeightsStore("exrenet", "exrenet_finetuned.pt", "relocal_ros.exrenet_finetune", 1,
                        "relocal train-scene MAP --method exrenet")
map_weights = STORE.weights_for   # (path of the map's fine-tuned ExReNet weights, "") or ("", why not)
DEFAULT_FINETUNE_CONF = {
    "validation_every": 5,     # every n-th usable keyframe is held out
    "min_overlap": 0.3,        # share of a keyframe's depth grid seen, unoccluded, by the other
    "max_angle_deg": 60.0,     # optical axes at most this far apart
    "max_partners": 8,         # per keyframe, its most overlapping partners
    "copies": 2,               # per keyframe: its clean view + (copies - 1) photometrically jittered ones
    "lr": 1e-4,                # a third of the synthetic training's rate: a small real set, starting from a good point
    "batch": 8,
    "validations": 10,         # validations over the budget (at least every 15 s)
    "threads": None,
    "seed": 0,
}


def _axis_angle_deg(Ta: np.ndarray, Tb: np.ndarray) -> float:
    c = float(np.clip(Ta[:3, 2] @ Tb[:3, 2], -1.0, 1.0))
    return float(np.degrees(np.arccos(c)))


@torch.no_grad()
def map_pairs(kmap: KeyframeMap, conf: dict, progress: bool = False) -> tuple[PairCache, PairCache, dict]:
    """(training pairs, validation pairs, counts) from the map's keyframes with depth."""
    intr = canonical_intrinsics()
    usable = [kf for kf in kmap.keyframes if (np.asarray(kf.depth_thumbnail, np.float32) > 0).mean() > 0.25]
    if len(usable) < 4:
        raise ValueError(f"{len(usable)} keyframes with depth: ExReNet fine-tuning needs at least 4")
    held = set(range(0, len(usable), int(conf["validation_every"])))
    rng = np.random.default_rng(int(conf["seed"]))
    xfeat = load_xfeat_backbone()
    feats, depths, poses = [], [], []
    for kf in tqdm(usable, desc="exrenet: keyframes", disable=not progress):
        h, w = kf.thumbnail.shape[:2]
        ki = kf.intrinsics.scaled(w, h)
        view = canonical_view(kf.thumbnail, ki)
        copies = [view] + [jitter_colour(view, rng) for _ in range(int(conf["copies"]) - 1)]
        x = torch.from_numpy(np.stack([xfeat_input(v) for v in copies]))
        feats.append(xfeat(x)[0].numpy().astype(np.float16))
        depths.append(canonical_depth(np.asarray(kf.depth_thumbnail, np.float32), ki))
        poses.append(kf.T_map_cam.astype(np.float64))
    assert depths[0].shape == (VIEW_SIZE[1], VIEW_SIZE[0])
    sets = {"train": [], "val": []}
    for i in range(len(usable)):
        partners = []
        for j in range(len(usable)):
            if j == i or j in held or _axis_angle_deg(poses[i], poses[j]) > conf["max_angle_deg"]:
                continue
            overlap = float(pixel_matches(depths[j], depths[i], poses[j], poses[i], intr)[2].mean())
            if overlap >= conf["min_overlap"]:
                partners.append((overlap, j))
        for _, j in sorted(partners, reverse=True)[: int(conf["max_partners"])]:
            sets["val" if i in held else "train"].append((j, i))   # (keyframe, query)
    if not sets["train"] or not sets["val"]:
        raise ValueError(f"{len(sets['train'])} training and {len(sets['val'])} validation pairs of overlapping "
                         "keyframes: too few to fine-tune on")

    def arrays(pairs, copy_of):
        c = [copy_of(k) for k in range(len(pairs))]
        return {"xa": np.stack([feats[a][c[k]] for k, (a, _) in enumerate(pairs)]),
                "xb": np.stack([feats[b][c[k]] for k, (_, b) in enumerate(pairs)]),
                "da": np.stack([depths[a] for a, _ in pairs]).astype(np.float16),
                "db": np.stack([depths[b] for _, b in pairs]).astype(np.float16),
                "Ta": np.stack([poses[a] for a, _ in pairs]), "Tb": np.stack([poses[b] for _, b in pairs])}

    n_copies = int(conf["copies"])
    train = [p for p in sets["train"] for _ in range(n_copies)]   # each pair once per photometric copy
    tr = PairCache.from_arrays(arrays(train, lambda k: k % n_copies))
    va = PairCache.from_arrays(arrays(sets["val"], lambda k: 0))   # the clean views
    return tr, va, {"keyframes_used": len(usable), "validation_keyframes": len(held),
                    "train_pairs": len(sets["train"]), "validation_pairs": len(sets["val"])}


def _score(errors: dict) -> float:
    return errors["rotation_deg"] + errors["direction_deg"]


def train_scene(map_dir, budget_s: float = 600, resume: bool = True, progress: bool = True,
                conf: dict | None = None, init=None) -> dict:
    """Fine-tune ExReNet on the map's keyframe pairs within budget_s wall seconds in all (earlier runs of this map
    included when resuming), from `init` (default: the shipped weights). Returns the metadata written to
    MAP/exrenet/meta.json. Raises ValueError for a map it cannot train on."""
    from relocal_ros.networks.exrenet.runtime import DEFAULT_WEIGHTS
    t_start = time.perf_counter()
    conf = {**DEFAULT_FINETUNE_CONF, **(conf or {})}
    map_dir, kmap = load_map_for_training(map_dir, budget_s, conf["threads"])
    d = STORE.dir(map_dir)
    fingerprint = keyframes_fingerprint(kmap.keyframes)
    init = Path(init or DEFAULT_WEIGHTS)
    old = STORE.read_meta(map_dir) if resume else None
    if old is not None and (old.get("keyframes_sha256") != fingerprint or old.get("num_keyframes") != len(kmap)
                            or old.get("format_version") != STORE.meta_version or not old.get("complete")
                            or not (d / "checkpoint.pt").is_file()):
        log.warning("%s: fine-tuned for another version of this map, or unfinished state; starting again", d)
        old = None
    if old is not None and old.get("complete") and old["seconds_total"] >= budget_s - 3.0:
        log.info("%s: already fine-tuned for a budget of %.0f s; nothing to do", d, budget_s)
        return old
    # the pairs first: a map that cannot be trained on (ValueError) leaves MAP/exrenet/ as it was, never an
    # unfinished state that the method would then warn about
    tr, va, info = map_pairs(kmap, conf, progress)
    if old is None and d.exists():
        shutil.rmtree(d)   # another map version, --no-resume or an unreadable state: start clean
    d.mkdir(parents=True, exist_ok=True)
    spent_before = float(old["seconds_total"]) if old else 0.0
    meta = {"format": STORE.meta_format, "format_version": STORE.meta_version, "complete": False,
            "map_version": kmap.version, "num_keyframes": len(kmap), "keyframes_sha256": fingerprint,
            "init_weights": str(init), "init_sha256": file_sha256(init), "budget_s": float(budget_s),
            "runs": (int(old["runs"]) if old else 0) + 1, "conf": {k: v for k, v in conf.items() if k != "threads"}}
    atomic_write_bytes(d / "meta.json", json.dumps({**(old or {}), **meta}, indent=1).encode())

    initial, _ = load_exrenet(init)
    before = old["validation_before"] if old else evaluate(initial, va)
    model, _ = load_exrenet(init)
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=float(conf["lr"]))
    state = {"iteration": 0, "best": None}
    if old is not None:
        ck = torch.load(str(d / "checkpoint.pt"), map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        state = json.loads(ck["state"])
    train_s = budget_s - spent_before - (time.perf_counter() - t_start) - 3.0  # 3 s: the final saves
    if train_s <= 0:
        raise ValueError(f"budget {budget_s:.0f} s: {spent_before:.0f} s spent before and the preparation "
                         f"({time.perf_counter() - t_start:.0f} s) leave no time to train")
    val_every = max(15.0, train_s / int(conf["validations"]))
    rng = np.random.default_rng([int(conf["seed"]), state["iteration"]])
    gen = torch.Generator().manual_seed(int(conf["seed"]) + state["iteration"])
    intr = canonical_intrinsics()
    t_train, t_val = time.perf_counter(), time.perf_counter()
    bar = tqdm(total=int(train_s), unit="s", disable=not progress, desc="exrenet fine-tuning")
    while True:
        now = time.perf_counter()
        done = now - t_train >= train_s
        if done or now - t_val >= val_every:
            t_val = now
            errors = evaluate(model, va)
            if state["best"] is None or _score(errors) < _score(state["best"]):
                state["best"] = errors
                save_weights(d / STORE.weights_name, model, {"validation": errors, "map": str(map_dir),
                                                             "iteration": state["iteration"]})
            save_checkpoint(d / "checkpoint.pt", model, optimizer, state)
            if done:
                break
        losses = compute_losses(model, *tr.batch(rng.integers(0, tr.n, int(conf["batch"])), rng), intr, gen)
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
        state["iteration"] += 1
        bar.n = int(time.perf_counter() - t_train)
        bar.set_postfix(it=state["iteration"], loss=f"{float(losses['total'].detach()):.3f}")
    bar.close()
    best = state["best"]
    kept = _score(best) >= _score(before)
    if kept:  # never worse on the held-out keyframes than where it started: the map keeps the initial weights
        log.warning("%s: fine-tuned weights (held-out %.1f deg) do not beat the initial ones (%.1f deg); keeping the "
                    "initial weights", d, _score(best), _score(before))
        save_weights(d / STORE.weights_name, initial, {"validation": before, "initial_weights_kept": str(init)})
    seconds = spent_before + time.perf_counter() - t_start
    return STORE.write_complete(map_dir, meta, **info, seconds_total=round(seconds, 1), iterations=state["iteration"],
                                validation_before=before, validation_finetuned=best,
                                validation_after=before if kept else best, initial_weights_kept=kept)


def _report(meta: dict, map_path: str) -> None:
    b, f = meta["validation_before"], meta["validation_finetuned"]
    print(f"fine-tuned {meta['seconds_total']:.0f} s in all ({meta['iterations']} steps) on {meta['train_pairs']} "
          f"pairs of {meta['keyframes_used']} keyframes; held-out pairs ({meta['validation_pairs']}): median rotation "
          f"{b['rotation_deg']:.1f} -> {f['rotation_deg']:.1f} deg, translation direction {b['direction_deg']:.1f} "
          f"-> {f['direction_deg']:.1f} deg (initial -> fine-tuned)")
    kept = "the initial weights (fine-tuning did not beat them)" if meta["initial_weights_kept"] else "fine-tuned"
    print(f"the map's ExReNet weights ({kept}): {STORE.dir(map_path) / STORE.weights_name}")


def main(argv=None) -> int:
    """`python -m relocal_ros.networks.exrenet.finetune MAP [--budget S] [--no-resume]` (what `relocal
    train-scene --method exrenet` runs)."""
    from relocal_ros.networks.train_scene_cli import run_train_scene
    return run_train_scene(argv, f"Fine-tune ExReNet on pairs of the map's keyframes (stored in MAP/{STORE.subdir}/)",
                           "start from the shipped weights again", train_scene, _report)


if __name__ == "__main__":
    raise SystemExit(main())
