#!/usr/bin/env python3
"""Train SANet on synthetic scenes: relocal_ros/networks/sanet/train.py (--help)."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch load

from relocal_ros.networks.sanet.train import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
