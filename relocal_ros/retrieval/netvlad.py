"""NetVLAD global image descriptor for keyframe retrieval: the network of relocal_ros.networks.netvlad.model (frozen
XFeat backbone + a small NetVLAD head trained on the package's synthetic scenes, relocal_ros/networks/netvlad/train.py)
with the shipped head weights, models/netvlad_xfeat_k32.pt (a plain state dict loaded with
torch.load(weights_only=True) and checked key by key, shape by shape, before use).
backend "onnxruntime" (default) exports backbone and head together to ONNX in memory (once, the working size is fixed)
and runs them with ONNX Runtime; backend "torch" runs them eagerly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from relocal_ros.networks.layers import load_xfeat_backbone
from relocal_ros.networks.netvlad.model import (_EPS, WORK_HEIGHT, WORK_WIDTH, _Network, load_head_weights,
                                                preprocess)
from relocal_ros.resources import models_dir  # (source tree, installed share/ or ament index)

MODELS_DIR = models_dir()
DEFAULT_WEIGHTS = MODELS_DIR / "netvlad_xfeat_k32.pt"


class NetVladDescriptor:
    """Global descriptor of an RGB image: float32, L2-normalised, `dim` values."""
    name = "netvlad"

    def __init__(self, weights: str | Path | None = None, backend: str = "onnxruntime", threads: int = 2):
        if backend not in ("onnxruntime", "torch"):
            raise ValueError(f"unknown NetVLAD backend {backend!r}; choose 'onnxruntime' or 'torch'")
        self.weights = Path(weights) if weights is not None else DEFAULT_WEIGHTS
        self.head, self.meta = load_head_weights(self.weights)
        self.dim = int(self.head.conf["out_dim"])
        self.backend, self.threads = backend, int(threads)
        self.network = _Network(load_xfeat_backbone(), self.head).eval()
        self._session = None

    def _onnx_session(self):
        if self._session is None:
            import io
            import warnings

            from relocal_ros.networks.backends import cpu_session
            buf = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(self.network, (torch.zeros(1, 3, WORK_HEIGHT, WORK_WIDTH),), buf,
                                  input_names=["image"], output_names=["descriptor"], opset_version=17, dynamo=False)
            self._session = cpu_session(buf.getvalue(), self.threads)
        return self._session

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        x = preprocess(rgb)
        if self.backend == "torch":
            with torch.inference_mode():
                d = self.network(torch.from_numpy(x))[0].numpy()
        else:
            d = self._onnx_session().run(None, {"image": x})[0][0]
        d = d.astype(np.float32)
        return d / max(float(np.linalg.norm(d)), _EPS)
