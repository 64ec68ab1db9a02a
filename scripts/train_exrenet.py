"""Train ExReNet on synthetic pairs rendered on the fly (relocal_ros/networks/exrenet_training.py).

    .venv/bin/python scripts/train_exrenet.py --work /tmp/exrenet --minutes 45 [--no-resume] [--producers 1]
    cp /tmp/exrenet/best.pt models/exrenet_synthetic.pt   # then update models/README.md from /tmp/exrenet/log.jsonl

Runs for the given wall-clock time, resumes from WORK/last.pt, validates every 5 minutes on pairs of held-out scenes
(seeds >= 9000) and keeps the best weights in WORK/best.pt."""
import argparse
import json

from relocal_ros.networks.exrenet_training import train


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True)
    p.add_argument("--minutes", type=float, default=45.0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--producers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the trainer (producers use one each)")
    p.add_argument("--no-resume", action="store_true")
    a = p.parse_args()
    state = train(a.work, a.minutes, a.batch, a.lr, a.producers, seed=a.seed, resume=not a.no_resume,
                  threads=a.threads)
    print(json.dumps(state, indent=1))


if __name__ == "__main__":
    main()
