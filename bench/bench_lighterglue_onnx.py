"""LighterGlue in ONNX Runtime against torch (issue #16 item 2: "LighterGlue in ONNX Runtime with LightGlue's early
exit and point pruning"): is ONNX Runtime what would make LighterGlue affordable at 10 Hz?

ONNX cannot hold kornia LightGlue's data-dependent pruning and early exit, so the exported graph runs all 6 layers on
every point (as torch does with pruning off). Its log-assignment matrix goes through kornia's own `filter_matches`.
Per pair, on real SUN3D pairs with the default's XFeat features (the strongest K per image), 2 threads:
- torch as shipped (point pruning on);
- torch without pruning (the graph that was exported);
- ONNX Runtime.

The export needs torch's dynamo exporter and so `onnxscript`, which the package does not depend on
(`pip install onnxscript` into the venv to run this). The TorchScript exporter fails on this graph: it loses a
tensor's rank at a transpose.

    .venv/bin/python bench/bench_lighterglue_onnx.py [--data ../shared/data] [--keypoints 512 1024]
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PAIRS = [(30, 5), (40, 20), (60, 55), (80, 70)]  # SUN3D study room frame indices: query, reference (within fragments)


def exportable(net):
    """kornia LightGlue's layers without pruning or early exit: (keypoints, descriptors, image sizes) -> log
    assignment."""
    import torch
    from kornia.feature.lightglue import normalize_keypoints

    class AllLayers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, k0, k1, d0, d1, s0, s1):
            n = self.net
            k0, k1 = normalize_keypoints(k0, s0), normalize_keypoints(k1, s1)
            d0, d1 = n.input_proj(d0), n.input_proj(d1)
            e0, e1 = n.posenc(k0), n.posenc(k1)
            for i in range(n.conf.n_layers):
                d0, d1 = n.transformers[i](d0, d1, e0, e1)
            return n.log_assignment[n.conf.n_layers - 1](d0, d1)[0]
    return AllLayers().eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("RELOCAL_DATA_DIR", REPO.parent / "shared" / "data")))
    ap.add_argument("--keypoints", type=int, nargs="*", default=[512, 1024])
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        sys.exit("this benchmark exports with torch's dynamo exporter, which needs onnxscript: pip install onnxscript")
    import torch
    from kornia.feature.lightglue import filter_matches

    from relocal_ros.data.sources import open_source
    from relocal_ros.matching.features import make_extractor
    from relocal_ros.matching.matchers import LighterGlueMatcher
    from relocal_ros.networks.backends import cpu_session
    torch.set_num_threads(2)
    folder = a.data / "sun3d_3dmatch_sample" / "studyroom"
    if not folder.is_dir():
        sys.exit(f"{folder} not found")
    src = open_source(folder)
    extractor = make_extractor("xfeat", {})
    lg = LighterGlueMatcher()
    model = exportable(lg.model.net)
    cache = {}

    def features(i):
        if i not in cache:
            f = src[i]
            cache[i] = (extractor(f.rgb), (f.rgb.shape[1], f.rgb.shape[0]))
        return cache[i]

    def pair_inputs(q, r, k):
        (fq, sq), (fr, sr) = features(q), features(r)
        fq = fq.subset(np.argsort(-fq.scores, kind="stable")[:k])
        fr = fr.subset(np.argsort(-fr.scores, kind="stable")[:k])
        t = (torch.from_numpy(fq.keypoints)[None], torch.from_numpy(fr.keypoints)[None],
             torch.from_numpy(fq.descriptors)[None], torch.from_numpy(fr.descriptors)[None],
             torch.tensor(sq, dtype=torch.float32)[None], torch.tensor(sr, dtype=torch.float32)[None])
        return t, fq, sq, fr, sr

    names = ["k0", "k1", "d0", "d1", "s0", "s1"]
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, pair_inputs(*PAIRS[0], a.keypoints[0])[0], buf, input_names=names,
                          output_names=["scores"], opset_version=18, dynamo=True,
                          dynamic_axes={"k0": {1: "m"}, "d0": {1: "m"}, "k1": {1: "n"}, "d1": {1: "n"}})
    session = cpu_session(buf.getvalue(), 2)
    print(f"machine: {os.cpu_count()} cores, 2 threads; {len(PAIRS)} SUN3D pairs; median ms per pair\n")
    print("| keypoints per image | torch, pruning (shipped) | torch, all layers | ONNX Runtime, all layers | "
          "matches torch (shipped) / ONNX Runtime / both |")
    print("|---|---|---|---|---|")
    for k in a.keypoints:
        times = {"shipped": [], "all": [], "ort": []}
        counts = []
        for q, r in PAIRS:
            t, fq, sq, fr, sr = pair_inputs(q, r, k)
            feeds = {n: v.numpy() for n, v in zip(names, t)}
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                shipped, _ = lg(fq, sq, fr, sr)
                t1 = time.perf_counter()
                with torch.inference_mode():
                    model(*t)
                t2 = time.perf_counter()
                scores = session.run(None, feeds)[0]
                t3 = time.perf_counter()
                times["shipped"].append(t1 - t0)
                times["all"].append(t2 - t1)
                times["ort"].append(t3 - t2)
            m0 = filter_matches(torch.from_numpy(scores), lg.min_confidence)[0][0]
            valid = m0 > -1
            ort = set(zip(torch.where(valid)[0].tolist(), m0[valid].tolist()))
            ship = set(map(tuple, shipped.tolist()))
            counts.append(f"{len(ship)}/{len(ort)}/{len(ship & ort)}")
        ms = {n: np.median(v) * 1e3 for n, v in times.items()}
        print(f"| {k} | {ms['shipped']:.0f} | {ms['all']:.0f} | {ms['ort']:.0f} | {', '.join(counts)} |", flush=True)


if __name__ == "__main__":
    main()
