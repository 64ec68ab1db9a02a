#!/usr/bin/env python3
"""Train SANet (relocal_ros.networks.sanet) on synthetic scenes; see relocal_ros/networks/sanet_training.py.

    python scripts/train_sanet.py --generate --data /tmp/sanet_data        # render + cache backbone features
    python scripts/train_sanet.py --data /tmp/sanet_data --minutes 35 --out /tmp/sanet_run --global-k 0 [--resume]
    python scripts/train_sanet.py --data /tmp/sanet_data --minutes 35 --out /tmp/sanet_run2 \
        --init /tmp/sanet_run/sanet_best.pt --lr 3e-4 --global-k 8          # fine-tune with similarity candidates
    python scripts/train_sanet.py --data /tmp/sanet_data --evaluate W1.pt W2.pt   # vs baselines, same samples
    cp /tmp/sanet_run2/sanet_best.pt models/sanet_xfeat_synth.pt

--generate writes train_XXX.npz shards (scene seeds --train-seeds, 40 per shard) and val_000.npz (seeds 9000+);
existing shards are kept, so an interrupted generation resumes. Training stops after --minutes of wall clock
(counting earlier runs with --resume), validating every --val-every seconds; the best validation weights are
written to OUT/sanet_best.pt, the resumable state to OUT/checkpoint.pt, the validation log to OUT/train_log.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from relocal_ros.networks.sanet_training import (VAL_SEED0, compare_on_validation, generate_shard,  # noqa: E402
                                                 train)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="/tmp/sanet_data", help="folder of the cached training shards")
    p.add_argument("--out", default="/tmp/sanet_run", help="checkpoint, log and best weights")
    p.add_argument("--minutes", type=float, default=35.0, help="wall-clock training budget")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--generate", action="store_true", help="render the data shards (then exit)")
    p.add_argument("--train-seeds", type=int, default=240, help="number of training scenes (seeds 0..N-1)")
    p.add_argument("--val-seeds", type=int, default=12, help="number of validation scenes (seeds 9000..)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--yaw-deg", type=float, default=45.0, help="rotation augmentation about the up axis (+-deg)")
    p.add_argument("--val-every", type=float, default=180.0, help="seconds between validations")
    p.add_argument("--threads", type=int, default=1)
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
        val = data / "val_000.npz"
        if not val.is_file():
            generate_shard(range(VAL_SEED0, VAL_SEED0 + a.val_seeds), val)
        per = 40
        for s in range(0, a.train_seeds, per):
            shard = data / f"train_{s // per:03d}.npz"
            if not shard.is_file():
                generate_shard(range(s, min(s + per, a.train_seeds)), shard)
        return 0
    best = train(data, a.out, a.minutes, a.resume, a.batch, a.lr, a.yaw_deg, a.val_every, init=a.init,
                 arch={"global_k": a.global_k})
    print(json.dumps(best, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
