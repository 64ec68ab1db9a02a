"""Offline map building from any frame source (dataset folder or bag): keyframe selection, vocabulary, encoding."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from relocal_ros.mapping.keyframe_map import KeyframeMap, KeyframeSelector
from relocal_ros.matching.features import make_extractor
from relocal_ros.retrieval.vlad import VladAggregator, learn_vocabulary
from relocal_ros.settings import stage_defaults

log = logging.getLogger(__name__)


def default_build_conf() -> dict:
    """The "mapping" settings' defaults (relocal_ros/settings.py)."""
    return stage_defaults("mapping")


def build_map(source, conf: dict | None = None, progress: bool = True) -> KeyframeMap:
    defaults = default_build_conf()
    unknown = set(conf or {}) - set(defaults)
    if unknown:
        raise KeyError(f"unknown mapping settings {sorted(unknown)}; known: {sorted(defaults)}")
    conf = {**defaults, **(conf or {})}
    rot = conf["rotations"]
    if not isinstance(rot, (list, tuple)) or not rot or rot[0] != 0 or not all(
            isinstance(r, (int, float)) and not isinstance(r, bool) and -180 <= r <= 180 for r in rot):
        # the first stored rotation is the upright image: matching prefers it on ties (methods/base.py)
        raise ValueError(f"rotations must be a list of in-plane angles in degrees (-180..180), the first 0, got {rot!r}")
    selector = KeyframeSelector(conf["min_translation"], conf["min_rotation_deg"])
    extractor = make_extractor(conf["extractor"], conf["extractor_conf"])
    selected, features, skipped, unreadable = [], [], 0, []
    for i in tqdm(range(len(source)), desc="keyframes", unit="frame", disable=not progress):
        try:
            frame = source[i]
        except (FileNotFoundError, ValueError, OSError) as e:
            # one corrupt or ill-formed frame of a long recording (a folder's PNG, a bag's message) costs that
            # frame, not the map (localize does the same with a query image)
            unreadable.append(f"frame {i}: {e}")
            continue
        if frame.pose is None:
            skipped += 1
            continue
        if selector.should_add(frame.pose):
            selected.append(i)
            features.append([extractor.extract_rotated(frame.rgb, a) for a in conf["rotations"]])
    if skipped:
        log.warning("%d of %d frames have no pose and were not used as keyframes", skipped, len(source))
    if unreadable and len(unreadable) == len(source):
        # not one frame: the source as a whole is unusable (e.g. an image encoding no reader knows), one line
        raise ValueError(f"none of the {len(source)} frames could be read; the first: {unreadable[0]}")
    for why in unreadable[:10]:
        log.warning("%s (skipped)", why)
    if unreadable:
        log.warning("%d of %d frames were unreadable or ill-formed and were skipped", len(unreadable), len(source))
    if not selected:
        raise ValueError("no frame of the source has a ground-truth/mapping pose: a map needs posed frames")

    vocab_choice = conf["vocabulary"]
    if vocab_choice == "map":
        vocabulary = learn_vocabulary(np.concatenate([f[0].descriptors for f in features]), conf["vocabulary_words"])
        vocab_source = "learned from this map's keyframes"
    else:
        vocabulary = np.load(vocab_choice, allow_pickle=False)
        vocab_source = Path(vocab_choice).name

    kmap = KeyframeMap(vocabulary, conf["extractor"], extractor.conf,
                       metadata={"vocabulary": vocab_source, "source_frames": len(source)}, rotations=conf["rotations"],
                       global_descriptor=conf["global_descriptor"])
    pose_sigma = conf["pose_sigma"] if conf["pose_sigma"] is not None else getattr(source, "pose_sigma", None)
    if pose_sigma is not None:
        kmap.metadata["pose_sigma_m"], kmap.metadata["pose_sigma_deg"] = (float(v) for v in pose_sigma)
    vlad = VladAggregator(vocabulary)
    for i, per_rotation in tqdm(list(zip(selected, features)), desc="indexing", unit="kf", disable=not progress):
        frame = source[i]
        gdescs = (np.stack([vlad(f.descriptors) for f in per_rotation]) if kmap.global_descriptor == "xfeat_vlad"
                  else kmap.global_descriptors(frame.rgb, per_rotation))
        kmap._append(frame, per_rotation, gdescs)
    return kmap
