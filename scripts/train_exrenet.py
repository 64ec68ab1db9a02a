"""Train ExReNet on synthetic pairs rendered on the fly: relocal_ros/networks/exrenet/train.py (--help)."""
from relocal_ros.networks.exrenet.train import main

if __name__ == "__main__":
    raise SystemExit(main())
