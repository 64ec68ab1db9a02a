"""Runtimes for the exported networks behind one call, `backend(**named_numpy_inputs) -> list[np.ndarray]`:

    onnxruntime  CPU (CI, laptops, the robot without a GPU); the default wherever no GPU is present
    tensorrt     an engine built from the same ONNX file when `tensorrt` is importable and CUDA is available;
                 built once and cached next to the ONNX file (keyed by the ONNX file's sha256 and TensorRT version)
    torch        the torch module itself, on CUDA when available (GPU without TensorRT), else CPU (reference)

"auto" picks tensorrt > torch CUDA > onnxruntime. The ONNX file is the contract: every network that runs per query
is exported with `export_onnx` and checked against its torch module with `check_onnx` before it is shipped.

Building an engine by hand (same result as the cached build; shapes must cover the batch of references):
    trtexec --onnx=models/exrenet_regressor.onnx --saveEngine=exrenet_regressor.engine --fp16 \\
            --minShapes=fine_q:1x128x24x32,... --optShapes=... --maxShapes=...
or  python -m relocal_ros.networks.backends build-trt models/exrenet_regressor.onnx"""
from __future__ import annotations

import hashlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np

from relocal_ros.io_utils import atomic_write_bytes, file_sha256

log = logging.getLogger(__name__)
KINDS = ("auto", "onnxruntime", "tensorrt", "torch")
OPSET = 17


def export_tag(weights, modules) -> str:
    """Cache key of an ONNX export: sha256 (16 hex digits) of the weights file and of the source of every module
    whose code defines the exported graph (the model file and what it builds on, e.g. layers.py)."""
    h = hashlib.sha256(Path(weights).read_bytes())
    for mod in modules:
        h.update(Path(mod.__file__).read_bytes())
    return h.hexdigest()[:16]


def tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
        import torch
        return torch.cuda.is_available()
    except Exception:  # ImportError, or a broken CUDA install: both mean "not here"
        return False


def cuda_available() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:
        return False


def pick_device(name: str = "auto"):
    """The torch device a trainer runs on. auto: the GPU when torch sees one (a lent training machine), else the CPU."""
    import torch
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def model_device(model):
    """The device a torch module's parameters are on (its batches go there)."""
    return next(model.parameters()).device


def cpu_session(model, threads: int = 2):
    """An ONNX Runtime CPU session (model: a file path or the serialized bytes) on `threads` threads that sleep when
    idle. ORT's default has its worker threads spin after each run; the three node processes share 2 cores, so
    spinning threads take the CPU from the other processes' work (the solver, the indexer) right when it arrives."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts,
                                providers=["CPUExecutionProvider"])


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, onnx_path, threads: int = 2):
        self.session = cpu_session(onnx_path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, **inputs: np.ndarray) -> list[np.ndarray]:
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise ValueError(f"missing network inputs {sorted(missing)}; expected {self.input_names}")
        return self.session.run(None, {k: np.ascontiguousarray(inputs[k], np.float32) for k in self.input_names})


class TorchBackend:
    name = "torch"

    def __init__(self, module, input_names: list[str], device: str | None = None):
        import torch
        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.module = module.to(self.device).eval()
        self.input_names = list(input_names)
        self.name = f"torch-{self.device}"

    def __call__(self, **inputs: np.ndarray) -> list[np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(inputs[k], np.float32)).to(self.device)
                    for k in self.input_names]
            out = self.module(*args)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.float().cpu().numpy() for o in out]


class TensorRTBackend:
    """TensorRT 10 Python API; device buffers are torch CUDA tensors (no pycuda dependency)."""
    name = "tensorrt"

    def __init__(self, onnx_path, shapes: dict[str, tuple] | None = None, fp16: bool = True):
        import tensorrt as trt
        import torch
        self.trt, self.torch = trt, torch
        engine_path = build_engine(onnx_path, shapes, fp16)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not load the engine {engine_path}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.stream = torch.cuda.Stream()

    def __call__(self, **inputs: np.ndarray) -> list[np.ndarray]:
        torch = self.torch
        keep = []
        for n in self.input_names:
            t = torch.from_numpy(np.ascontiguousarray(inputs[n], np.float32)).cuda()
            keep.append(t)
            self.context.set_input_shape(n, tuple(t.shape))
            self.context.set_tensor_address(n, t.data_ptr())
        outs = []
        for n in self.output_names:
            t = torch.empty(tuple(self.context.get_tensor_shape(n)), dtype=torch.float32, device="cuda")
            outs.append(t)
            self.context.set_tensor_address(n, t.data_ptr())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        self.stream.synchronize()
        return [o.cpu().numpy() for o in outs]


def build_engine(onnx_path, shapes: dict[str, tuple] | None = None, fp16: bool = True) -> Path:
    """Serialized engine for onnx_path, built on first use and cached. shapes: input -> (min, opt, max) shapes
    for dynamic axes."""
    import tensorrt as trt
    onnx_path = Path(onnx_path)
    engine_path = onnx_path.with_suffix(f".{file_sha256(onnx_path)[:12]}.trt{trt.__version__}.engine")
    if engine_path.is_file():
        return engine_path
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if fp16 and builder.platform_has_fast_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if shapes:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise RuntimeError(f"TensorRT engine build failed for {onnx_path}")
    return atomic_write_bytes(engine_path, bytes(blob))


def make_backend(onnx_path, kind: str = "auto", threads: int = 2, torch_module=None,
                 trt_shapes: dict[str, tuple] | None = None):
    """The runtime for one exported network. torch_module: the same network in torch (needed for kind="torch",
    and the CUDA fallback of "auto" when TensorRT is absent)."""
    if kind not in KINDS:
        raise ValueError(f"unknown backend {kind!r}; choose one of {KINDS}")
    onnx_path = Path(onnx_path) if onnx_path is not None else None
    if kind == "auto":
        if onnx_path is not None and tensorrt_available():
            kind = "tensorrt"
        elif torch_module is not None and cuda_available():
            kind = "torch"
        else:
            kind = "onnxruntime"
    if kind == "torch":
        if torch_module is None:
            raise ValueError("backend 'torch' needs the torch module")
        names = OnnxRuntimeBackend(onnx_path).input_names if onnx_path is not None else None
        return TorchBackend(torch_module, names or ["input"])
    if onnx_path is None or not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX file {onnx_path} not found (export the network first)")
    if kind == "tensorrt":
        if not tensorrt_available():
            raise RuntimeError("backend 'tensorrt' requested but tensorrt is not importable or CUDA is unavailable")
        return TensorRTBackend(onnx_path, trt_shapes)
    return OnnxRuntimeBackend(onnx_path, threads)


def export_onnx(module, example_inputs: dict, path, output_names: list[str],
                dynamic_axes: dict | None = None) -> Path:
    """Write module as ONNX (TorchScript exporter, opset 17) atomically; returns the path."""
    import torch
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(example_inputs.values()), buf, input_names=list(example_inputs),
                          output_names=output_names, dynamic_axes=dynamic_axes or {}, opset_version=OPSET,
                          dynamo=False)
    return atomic_write_bytes(path, buf.getvalue())


def check_onnx(module, path, example_inputs: dict, atol: float = 1e-4) -> float:
    """Largest absolute difference between the torch module and its ONNX export under ONNX Runtime on the same
    inputs; raises when above atol."""
    import torch
    with torch.no_grad():
        ref = module.eval()(*example_inputs.values())
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    got = OnnxRuntimeBackend(path, threads=1)(**{k: v.numpy() for k, v in example_inputs.items()})
    diff = max(float(np.max(np.abs(r.numpy() - g))) if r.numel() else 0.0 for r, g in zip(ref, got))
    if not np.isfinite(diff) or diff > atol:
        raise AssertionError(f"ONNX export {path} differs from torch by {diff:.3g} > {atol}")
    return diff


def _main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(description="Build a TensorRT engine from an exported network (needs tensorrt+CUDA)")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build-trt")
    b.add_argument("onnx")
    b.add_argument("--fp32", action="store_true")
    a = p.parse_args(argv)
    if not tensorrt_available():
        print("tensorrt is not importable or CUDA is unavailable on this machine")
        return 2
    print(build_engine(a.onnx, fp16=not a.fp32))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
