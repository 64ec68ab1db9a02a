#!/usr/bin/env python3
"""Correct vs wrong hypotheses' acceptance scores, per scene, from `bench_hard.py --dump FILE`: the plot that the
solver's thresholds are read from (independent inliers, dense depth consistency or, for RGB-only runs, photometric
agreement, inlier coverage).

    python bench/plot_acceptance.py DUMP.jsonl --out acceptance.png [--method "relocal default"]

A hypothesis is "correct" within 10 cm / 10 deg (15 cm on sun3d-cross), "wrong" beyond 25 cm or 10 deg; out-of-map
hypotheses are all wrong. The current thresholds are drawn as lines."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dump", type=Path)
    ap.add_argument("--out", type=Path, default=Path("acceptance.png"))
    ap.add_argument("--method", default="relocal default")
    ap.add_argument("--score", default="dense_consistency",
                    choices=("dense_consistency", "dense_photometric", "photometric_agreement", "photometric_band"),
                    help="left panel's y axis: the depth check (RGB-D), the brightness at its consistent samples "
                         "(RGB-D, learned dense methods), the photometric check (RGB only), or its coarser band "
                         "(RGB only: plotted against the finer score for the poses with fewer global-match inliers "
                         "than min_independent_inliers_unverified, the ones a confirmation decides)")
    a = ap.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from relocal_ros.pipeline import default_conf
    conf = default_conf()["solver"]
    recs = [json.loads(line) for line in a.dump.read_text().splitlines() if line.strip()]
    recs = [r for r in recs if r["method"] == a.method and "independent_inliers" in r]
    scenes = sorted({r["scene"] for r in recs})
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    markers = "osD^v<>px*"
    # the band only confirms a pose the finer score does not: its panel shows the two scores of the poses that need it
    band_view = a.score == "photometric_band"
    unverified_below = conf["min_independent_inliers_unverified"]
    for k, scene in enumerate(scenes):
        rs = [r for r in recs if r["scene"] == scene]
        tol = 0.15 if "cross" in scene else 0.10
        for r in rs:
            out_of_map = "out-of-map" in scene
            r["label"] = ("wrong" if out_of_map else "correct" if r.get("t_err", 9) <= tol and r.get("r_err", 99) <= 10
                          else "wrong" if r.get("t_err", 0) > 0.25 or r.get("r_err", 0) > 10 else "between")
        for label, colour in (("correct", "tab:green"), ("wrong", "tab:red"), ("between", "tab:orange")):
            sel = [r for r in rs if r["label"] == label]
            if not sel:
                continue
            x = np.array([r["independent_inliers"] for r in sel], float)
            y = np.array([r.get(a.score, np.nan) for r in sel], float)
            c = np.array([r.get("coverage", np.nan) for r in sel], float)
            if band_view:
                finer = np.array([r.get("photometric_agreement", np.nan) for r in sel], float)
                axes[0].scatter(finer[x < unverified_below], y[x < unverified_below], c=colour,
                                marker=markers[k % len(markers)], s=22, alpha=0.7, label=f"{scene}: {label} ({len(sel)})")
            else:
                axes[0].scatter(np.maximum(x, 0.8), y, c=colour, marker=markers[k % len(markers)], s=22, alpha=0.7,
                                label=f"{scene}: {label} ({len(sel)})")
            axes[1].scatter(np.maximum(x, 0.8), c, c=colour, marker=markers[k % len(markers)], s=22, alpha=0.7)
            ylo, yhi = (np.nanmin(y), np.nanmax(y)) if np.isfinite(y).any() else (np.nan, np.nan)
            print(f"{scene:36s} {label:8s} n={len(sel):3d}  independent inliers {np.nanmin(x):5.0f}..{np.nanmax(x):5.0f}"
                  f"  {a.score} {ylo:.2f}..{yhi:.2f}"
                  f"  coverage {np.nanmin(c):.2f}..{np.nanmax(c):.2f}")
    left = {"dense_consistency": ("dense depth consistency (RGB-D)", conf["min_dense_consistency"]),
            "dense_photometric": ("brightness correlation at the depth-consistent samples (RGB-D)",
                                  conf["min_dense_photometric"]),
            "photometric_agreement": ("photometric agreement (RGB only)", conf["min_photometric_agreement"]),
            "photometric_band": ("photometric agreement in the 1-3 px band (RGB only)",
                                 conf["photometric_band_confirmation"])}[a.score]
    for ax, ylab, thr in ((axes[0], *left),
                          (axes[1], "inlier coverage of the image", conf["min_inlier_coverage"])):
        ax.set_ylabel(ylab)
        if ax is axes[0] and band_view:  # finer score on x: its floor and its own confirmation
            ax.axhline(thr, color="k", ls=":", lw=1)
            ax.set_xlim(0.0, 1.0)
            ax.axvline(conf["min_photometric_agreement"], color="grey", ls=":", lw=1)
            ax.axvline(conf["photometric_confirmation"], color="k", ls="--", lw=1)
            ax.set_xlabel(f"photometric agreement, finer score (poses with < {unverified_below} global-match inliers)")
            continue
        ax.set_xscale("log")
        ax.axvline(conf["min_independent_inliers"], color="k", ls="--", lw=1)
        ax.axhline(thr, color="k", ls=":", lw=1)
        if ax is axes[0] and a.score == "dense_consistency":
            ax.axhline(conf["min_dense_consistency_floor"], color="grey", ls=":", lw=1)
            ax.axvline(conf["min_independent_inliers_unverified"], color="grey", ls="--", lw=1)
        ax.set_xlabel("inliers among globally matched correspondences (log)")
    # the legend below both panels: with every scene of the benchmark it would hide the points inside a panel
    handles, labels = axes[0].get_legend_handles_labels()
    rows = -(-len(labels) // 3)
    width, height = fig.get_size_inches()
    legend_in = 0.14 * rows + 0.3
    fig.set_size_inches(width, height + legend_in)
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=6, frameon=False)
    fig.suptitle(f"{a.method}: correct (green, within 10 cm/10 deg) vs wrong (red, > 25 cm or 10 deg) hypotheses")
    fig.tight_layout(rect=(0, legend_in / (height + legend_in), 1, 1))
    fig.savefig(a.out, dpi=110)
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
