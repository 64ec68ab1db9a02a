"""The command line shared by every per-map trainer (`relocal train-scene MAP --method M` runs one of them): the
same arguments, the same error handling; each trainer brings its train function and its one-paragraph report."""
from __future__ import annotations

import argparse
from typing import Callable


def run_train_scene(argv, description: str, no_resume_help: str, train_scene: Callable[..., dict],
                    report: Callable[[dict, str], None]) -> int:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("map")
    ap.add_argument("--budget", type=float, default=600.0, help="wall seconds for this map in all (default 600)")
    ap.add_argument("--no-resume", action="store_true", help=no_resume_help)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    a = ap.parse_args(argv)
    try:
        meta = train_scene(a.map, a.budget, resume=not a.no_resume, progress=True, conf={"threads": a.threads})
    except (ValueError, OSError) as e:  # MapFormatError and CheckpointError are ValueErrors
        print(f"train-scene: {e}")
        return 1
    report(meta, a.map)
    return 0
