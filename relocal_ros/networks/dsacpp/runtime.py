"""DSAC++ at run time (the pipeline method is relocal_ros/methods/dsacpp.py): the map's trained head (model.py,
trained by train.py) behind a backend, after the frozen encoder."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from relocal_ros.mapping.keyframe_map import Keyframe, KeyframeMap
from relocal_ros.networks.backends import make_backend
from relocal_ros.networks.dsacpp.model import (SC_DIR, TRAIN_COMMAND, CheckpointError, DenseEncoder,
                                               SceneCoordinateHead, head_from_checkpoint, read_checkpoint)


class DsacppRunner:
    """The map's trained head behind a backend: image -> one scene coordinate per encoder cell.

    conf: map_dir (where the map was loaded from; default keyframe_map.path), backend ("auto", "onnxruntime",
    "tensorrt", "torch"), threads. A missing or mismatched head is not an exception: `problem` says why."""

    def __init__(self, keyframe_map: KeyframeMap, conf: dict | None = None):
        conf = dict(conf or {})
        self.map = keyframe_map
        self.problem = ""
        self.meta: dict = {}
        self.head: SceneCoordinateHead | None = None
        self._backend = None
        self._encoder = None
        self.threads = int(conf.get("threads", 2))
        map_dir = conf.get("map_dir") or getattr(keyframe_map, "path", None)
        if map_dir is None:
            self.problem = ("dsacpp needs the map directory (conf map_dir) to find its trained head; "
                            f"{TRAIN_COMMAND}")
            return
        self.sc_dir = Path(map_dir) / SC_DIR
        try:
            self.meta, ckpt = read_checkpoint(self.sc_dir, keyframe_map)
            self.head = head_from_checkpoint(ckpt)
        except CheckpointError as e:
            self.problem = str(e)
            return
        self._backend = make_backend(self.sc_dir / "head.onnx", conf.get("backend", "auto"), self.threads,
                                     torch_module=self.head)
        self._encoder = DenseEncoder(self.threads)
        self.untrained_keyframes = len(keyframe_map) - int(self.meta["num_keyframes"])

    def add_keyframe(self, kf: Keyframe) -> None:
        """Nothing to precompute per keyframe: the head covers the keyframes it was trained on; appended ones are
        counted (retrain with `relocal train-scene` to cover them)."""
        if self.head is not None:
            self.untrained_keyframes += 1

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        """28*40 x 3 scene coordinates (map frame), row-major over the cells of cell_pixels."""
        if self.problem:
            raise CheckpointError(self.problem)
        fmap = self._encoder(rgb)[None]
        return self._backend(features=fmap)[0].reshape(-1, 3)
