"""exrenet: ExReNet's relative poses to the retrieved keyframes (networks/exrenet/runtime.py: encoder + correlation
regressor, MC-dropout head) -> the solver's relative-pose fusions, as xfeat_relative's."""
from __future__ import annotations

import numpy as np

from relocal_ros.methods.base import (NETWORK_SETTINGS, RELATIVE_POSES, Query, SolverTraits,
                                      map_weights_or_shipped)
from relocal_ros.settings import Setting


class Exrenet:
    name = "exrenet"
    evidence = RELATIVE_POSES
    needs_retrieval = True
    uses_depth = False
    settings = NETWORK_SETTINGS + (
        Setting("mc_samples", 100, "exrenet: MC-dropout samples of the head per keyframe", "inference",
                range=(0, 1000), nodes=("inference_node",), cli="--mc-samples"),)
    solver = SolverTraits()

    def __init__(self, keyframe_map, conf: dict):
        """Weights: the `weights` setting when it names a file, else the map's fine-tuned ones (`relocal
        train-scene MAP --method exrenet`) when they are valid for this map, else the shipped ones."""
        from relocal_ros.networks.exrenet.finetune import STORE  # torch: only when the method is chosen
        from relocal_ros.networks.exrenet.runtime import ExReNetRunner
        self.map = keyframe_map
        self.weights = conf["weights"] or map_weights_or_shipped(STORE, keyframe_map, self.name)
        self.runner = ExReNetRunner(self.weights or None, conf["backend"], conf["mc_samples"],
                                    conf["network_threads"], seed=0)
        self.features: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for kf in keyframe_map.keyframes:
            self.add_keyframe(kf)

    def add_keyframe(self, kf) -> None:
        from relocal_ros.networks.exrenet.model import canonical_view
        h, w = kf.thumbnail.shape[:2]
        self.features[kf.id] = self.runner.encode(canonical_view(kf.thumbnail, kf.intrinsics.scaled(w, h)))

    def infer(self, query: Query, ev) -> None:
        from relocal_ros.estimates import RelativePoseHypothesis
        from relocal_ros.networks.exrenet.model import canonical_view
        refs = [r for r in query.refs if r in self.features]
        if not refs:
            ev.refusal = "no retrieved keyframe has ExReNet features"
            return
        frame = query.frame
        fine_q, coarse_q = self.runner.encode(canonical_view(frame.rgb, frame.intrinsics))
        fr = np.stack([self.features[r][0] for r in refs])
        cr = np.stack([self.features[r][1] for r in refs])
        for kf_id, p in zip(refs, self.runner.predict(fr, cr, fine_q, coarse_q)):
            kf = self.map.keyframes[kf_id]
            ev.hypotheses.append(RelativePoseHypothesis(kf_id, kf.T_map_cam.copy(), p.T_kf_query, p.scale,
                                                        p.direction_sd_deg, p.centres))


METHOD = Exrenet
