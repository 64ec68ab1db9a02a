"""The runtimes behind one call: ONNX export checked against torch, the CPU and torch backends agree, requests for a
GPU runtime that is not there fail with a clear message instead of silently running something else."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from relocal_ros.networks.backends import (OnnxRuntimeBackend, check_onnx, export_onnx, make_backend,
                                           tensorrt_available)
from relocal_ros.networks.layers import ResBlock


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.block = ResBlock(3, 8, 2)

    def forward(self, a, b):
        y = self.block(a)
        return y.mean((2, 3)) + b, y


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    m = Tiny().eval()
    x = {"a": torch.rand(2, 3, 16, 20), "b": torch.rand(2, 8)}
    path = export_onnx(m, x, tmp_path_factory.mktemp("onnx") / "tiny.onnx", ["out", "map"],
                       dynamic_axes={"a": {0: "n"}, "b": {0: "n"}, "out": {0: "n"}, "map": {0: "n"}})
    return m, x, path


def test_export_matches_torch_and_the_check_catches_a_mismatch(exported):
    m, x, path = exported
    assert check_onnx(m, path, x, atol=1e-5) < 1e-5
    other = Tiny().eval()
    with pytest.raises(AssertionError, match="differs from torch"):
        check_onnx(other, path, x, atol=1e-5)


def test_onnxruntime_and_torch_backends_agree_with_a_dynamic_batch(exported):
    m, _, path = exported
    a, b = np.random.default_rng(1).random((5, 3, 16, 20), np.float32), np.zeros((5, 8), np.float32)
    ort_out = make_backend(path, "onnxruntime", threads=1)(a=a, b=b)
    torch_out = make_backend(path, "torch", torch_module=m)(a=a, b=b)
    assert ort_out[0].shape == (5, 8) and ort_out[1].shape == (5, 8, 8, 10)
    for o, t in zip(ort_out, torch_out):
        assert np.allclose(o, t, atol=1e-5)


def test_auto_uses_the_cpu_here_and_missing_inputs_are_named(exported):
    _, _, path = exported
    backend = make_backend(path, "auto", torch_module=None)
    if not tensorrt_available():
        assert isinstance(backend, OnnxRuntimeBackend)
    with pytest.raises(ValueError, match="missing network inputs"):
        backend(a=np.zeros((1, 3, 16, 20), np.float32))


def test_unavailable_or_unknown_backends_fail_clearly(exported, tmp_path):
    _, _, path = exported
    with pytest.raises(ValueError, match="unknown backend"):
        make_backend(path, "openvino")
    with pytest.raises(FileNotFoundError):
        make_backend(tmp_path / "none.onnx", "onnxruntime")
    with pytest.raises(ValueError, match="needs the torch module"):
        make_backend(path, "torch")
    if not tensorrt_available():
        with pytest.raises(RuntimeError, match="tensorrt"):
            make_backend(path, "tensorrt")
