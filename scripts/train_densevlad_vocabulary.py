#!/usr/bin/env python3
"""Learn the DenseVLAD model of relocal_ros.retrieval.densevlad (SIFT vocabulary by FAISS k-means + PCA-whitening) from
synthetic scenes only, and write models/densevlad_sift_k64.npz.

Training data: scenes of relocal_ros.data.synth rendered at 320 x 240 into a temporary folder (or --data), seeds
1000-1002 by default, every frame of every sequence (seq-01 map walk, seq-02 query walk, seq-03 corner views).
Seeds 101 and 102 are the held-out evaluation scenes (bench/bench_retrieval.py, test) and are refused here.

    python scripts/train_densevlad_vocabulary.py                 # about 70 s on one core (588 images)
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import faiss  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from relocal_ros.data.synth import generate_scene  # noqa: E402
from relocal_ros.retrieval.densevlad import DEFAULT_MODEL, DenseVladDescriptor  # noqa: E402

HELD_OUT_SEEDS = {101, 102}


def scene_images(folder: Path) -> list[np.ndarray]:
    out = []
    for f in sorted(folder.glob("seq-*/frame-*.color.png")):
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"{f}: unreadable image")
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1000, 1001, 1002])
    ap.add_argument("--data", type=Path, help="folder for the rendered scenes (default: a temporary folder)")
    ap.add_argument("--words", type=int, default=64)
    ap.add_argument("--pca-dim", type=int, default=128)
    ap.add_argument("--out", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    bad = HELD_OUT_SEEDS.intersection(args.seeds)
    if bad:
        ap.error(f"seeds {sorted(bad)} are held out for evaluation")
    cv2.setNumThreads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="densevlad_train_") as tmp:
        root = args.data or Path(tmp)
        images = []
        for seed in args.seeds:
            folder = root / f"synth_{seed}"
            if not (folder / "seq-02").is_dir():
                generate_scene(folder, seed, width=320, height=240, workers=args.threads, progress=True)
            images += scene_images(folder)
    print(f"{len(images)} training images from seeds {args.seeds} ({time.time() - t0:.0f} s)")
    model = DenseVladDescriptor.train(images, n_words=args.words, pca_dim=args.pca_dim, progress=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {args.words} words, descriptor dim "
          f"{model.dim}) in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
