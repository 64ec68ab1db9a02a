"""Weights fine-tuned on one map's keyframes, stored in the map directory beside its immutable versions
(`relocal train-scene MAP --method sanet|exrenet`): MAP/<subdir>/<weights file> and a meta.json written last
("complete": true) with the keyframes' fingerprint and the weights' sha256. A method uses them only while they are
complete, intact and trained on this map's first num_keyframes keyframes (a map that only grew keeps them: these
networks need no retraining for new keyframes); otherwise it says why and takes the shipped weights."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from relocal_ros.io_utils import atomic_write_bytes, file_sha256


def load_map_for_training(map_dir, budget_s: float, threads: int):
    """What every `relocal train-scene` method checks and sets first: a positive budget, torch's threads (0: its
    default), then the map. Returns (map directory as a Path, KeyframeMap)."""
    if not budget_s > 0:
        raise ValueError(f"budget_s must be positive, got {budget_s}")
    if threads:
        import torch
        torch.set_num_threads(int(threads))
    from relocal_ros.mapping.keyframe_map import KeyframeMap
    map_dir = Path(map_dir)
    return map_dir, KeyframeMap.load(map_dir)


def keyframes_fingerprint(keyframes) -> str:
    from relocal_ros.networks.dsacpp.model import keyframes_fingerprint as fp  # the DSAC++ head's, the same notion
    return fp(keyframes)


@dataclass(frozen=True)
class MapWeightsStore:
    subdir: str            # MAP/<subdir>/
    weights_name: str      # the weights file in it
    meta_format: str       # meta.json's "format"
    meta_version: int
    train_command: str     # what to run, in the messages

    def dir(self, map_dir) -> Path:
        return Path(map_dir) / self.subdir

    def read_meta(self, map_dir) -> dict | None:
        try:
            meta = json.loads((self.dir(map_dir) / "meta.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return meta if isinstance(meta, dict) and meta.get("format") == self.meta_format else None

    def write_complete(self, map_dir, meta: dict, **fields) -> dict:
        """The last write of a fine-tuning run: meta.json with `fields`, "complete": true and the sha256 of the
        weights file as it now stands (written atomically: a killed run leaves the previous meta). Returns meta."""
        d = self.dir(map_dir)
        meta.update(fields, complete=True, weights_sha256=file_sha256(d / self.weights_name))
        atomic_write_bytes(d / "meta.json", json.dumps(meta, indent=1).encode())
        return meta

    def weights_for(self, kmap, map_dir=None) -> tuple[str, str]:
        """(path of the map's fine-tuned weights, "") when they are complete, intact and trained on this map's
        keyframes; else ("", why not)."""
        map_dir = map_dir or getattr(kmap, "path", None)
        if map_dir is None:
            return "", "the map has no directory (never saved nor loaded)"
        d = self.dir(map_dir)
        if not (d / "meta.json").exists():
            return "", f"{map_dir} has no fine-tuned weights in {self.subdir}/ ({self.train_command})"
        meta = self.read_meta(map_dir)
        if meta is None or meta.get("format_version") != self.meta_version:
            return "", f"{d / 'meta.json'}: unreadable or of another format; {self.train_command} --no-resume"
        if not meta.get("complete"):
            return "", f"{d}: fine-tuning did not finish; {self.train_command} to finish it"
        w = d / self.weights_name
        if not w.is_file() or file_sha256(w) != meta.get("weights_sha256"):
            return "", f"{w}: missing or corrupt (checksum mismatch); {self.train_command} --no-resume"
        n = int(meta.get("num_keyframes", -1))
        if n <= 0 or n > len(kmap) or keyframes_fingerprint(kmap.keyframes[:n]) != meta.get("keyframes_sha256"):
            return "", (f"{d}: fine-tuned for another version of this map ({n} keyframes, map version "
                        f"{meta.get('map_version')}; the map now has {len(kmap)} keyframes, version "
                        f"{kmap.version or '?'}); {self.train_command} --no-resume")
        return str(w), ""
