#!/usr/bin/env python3
"""Train the NetVLAD head of relocal_ros.retrieval.netvlad: relocal_ros/networks/netvlad/train.py (--help)."""
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch load
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relocal_ros.networks.netvlad.train import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
