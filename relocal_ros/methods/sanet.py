"""sanet: scene-agnostic scene coordinates (SANet): the query's cells registered against the retrieved keyframes'
scene pyramids (networks/sanet/) -> 2D-3D correspondences, one per network cell, for the solver's PnP-RANSAC
with DSAC++ soft-inlier scoring. With the query's depth, the RGB-D mode (solver/rgbd_scene_coordinates.py: Kabsch +
ICP against the retrieved keyframes) gives the pose the solver checks."""
from __future__ import annotations

import numpy as np

from relocal_ros.methods.base import CORRESPONDENCES, NETWORK_SETTINGS, Query, SolverTraits, map_weights_or_shipped
from relocal_ros.settings import Setting

_N = ("inference_node",)


class Sanet:
    name = "sanet"
    evidence = CORRESPONDENCES
    needs_retrieval = True
    uses_depth = True   # RGB-D mode when the query has depth (and use_depth is on)
    settings = NETWORK_SETTINGS + (
        Setting("sanet_max_references", 10, "sanet: at most this many of the retrieved keyframes build the "
                "query's scene", "inference", range=(1, 50), nodes=_N),
        Setting("sanet_min_scene_points", 20, "sanet: refuse when the references' finest level has fewer valid "
                "scene points", "inference", range=(1, 100000), nodes=_N),
        Setting("sanet_min_confidence", 0.0, "sanet: drop predictions whose confidence is below this",
                "inference", range=(0.0, 1.0), nodes=_N),
    )
    # SANet's cells are 32 px wide at 640: a 24 px inlier threshold (bench_scene_coordinates.py); one point per
    # cell, errors correlated over neighbouring cells: the covariance's pixel noise is at least half of it, 12 px,
    # and the covariance is 4x the independent-noise model's (bench_hard --dump, per scene: with 6 px and 1x, 30 %
    # / 55 % / 94 % of fr1_rpy / SUN3D frag1 / frag2 ground truths fell in the 95 % ellipsoid; with 12 px and 4x,
    # 95 / 100 / 100 %). With depth, only depth-confirmed poses: at agreement 0.4-0.65 SANet's accepted poses
    # held all its wrong answers on real scenes (docs/measurements.md "The query's depth vets ...")
    # In RGB-D mode (depth- and brightness-confirmed) a ratio floor of 0.1 as DSAC++'s: on the hard benchmark's
    # sparse fr1_rpy map 0.2 refused 3 poses within 10 cm / 10 deg and one 11 cm off (ratios 0.10-0.20), while every
    # wrong hypothesis the depth confirmed with a ratio in [0.1, 0.2) (fr1_desk, synthetic 9001-9004) failed
    # min_dense_photometric; 0.1 took fr1_rpy from 70.8 to 73.6 % within 10 cm / 10 deg, no wrong answer added
    solver = SolverTraits(reproj_frac=0.0375, min_inlier_ratio=0.2, soft_inlier=True, sigma_floor_frac=0.5,
                          needs_dense_confirmation=True, covariance_scale=4.0, min_inlier_ratio_rgbd=0.1)

    def __init__(self, keyframe_map, conf: dict, runner=None):
        """runner: an already loaded SanetRunner of this map (tests share one), else built from conf. Weights: the
        `weights` setting when it names a file, else the map's fine-tuned ones (`relocal train-scene MAP --method
        sanet`) when they are valid for this map, else the shipped ones."""
        from relocal_ros.networks.sanet.runtime import SanetRunner  # torch: only when the method is chosen
        from relocal_ros.solver.icp import SurfaceCache
        self.map = keyframe_map
        self._surfaces = SurfaceCache()
        self.min_confidence = float(conf["sanet_min_confidence"])
        self.weights = conf["weights"]
        if not self.weights and runner is None:
            from relocal_ros.networks.sanet.finetune import STORE
            self.weights = map_weights_or_shipped(STORE, keyframe_map, self.name)
        self.runner = runner or SanetRunner(keyframe_map, {
            "weights": self.weights, "backend": conf["backend"], "threads": conf["network_threads"],
            "max_references": conf["sanet_max_references"], "min_scene_points": conf["sanet_min_scene_points"]})

    def add_keyframe(self, keyframe) -> None:
        self.runner.add_keyframe(keyframe)

    def infer(self, query: Query, ev) -> None:
        from relocal_ros.geometry.camera import lift_pixels, undistort_points
        from relocal_ros.networks.sanet.model import cell_pixels
        from relocal_ros.solver.rgbd_scene_coordinates import fill_rgbd_evidence
        refs = [int(r) for r in query.refs if 0 <= int(r) < len(self.map.keyframes)]
        if not refs:
            ev.refusal = "SANet: no retrieved keyframes to build the scene from"
            return
        rgb, intr = query.frame.rgb, query.frame.intrinsics
        ev.keyframe_ids = list(refs)
        pts, w, why = self.runner.predict(rgb, refs)
        if why:
            ev.refusal = why
            return
        uv = cell_pixels(intr.width, intr.height)
        keep = np.isfinite(pts).all(1) & np.isfinite(w) & (w >= self.min_confidence)
        if not keep.any():
            ev.refusal = "SANet: no scene coordinate above sanet_min_confidence"
            return
        ev.image_points = undistort_points(uv[keep], intr)
        ev.map_points = pts[keep]
        ev.weights = np.clip(w[keep], 0, 1).astype(np.float32)
        if query.frame.depth is not None and len(refs) < 2:
            # one reference keyframe: its view is both the scene the coordinates come from and the only surface ICP
            # and the depth check can use, so the 3D-3D pose inherits the view's bias unseen (SUN3D 1-keyframe map:
            # Kabsch poses 14-40 cm off at depth agreement 0.75-0.86). PnP on the colour image, which errors along
            # the view's rays barely move, gives the pose, and the engine checks it against the depth
            ev.depth_unused = True
        elif query.frame.depth is not None:
            fill_rgbd_evidence(ev, lift_pixels(query.frame.depth, intr, uv[keep]), query.frame, self.map, None,
                               self._surfaces, refs)


METHOD = Sanet
