"""Inference backends behind one small interface.

A backend takes a batch of uint8 RGB images [N,320,320,3] and returns uint8 masks
[N,320,320], running the matte graph (``build_engine.matte_graph``), so every backend
shares the same numerics.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import MatteError

BACKEND_CHOICES = ("auto", "tensorrt", "onnxruntime")
# auto: FP16 on TensorRT, FP32 on ONNX Runtime (whose CPU FP16 kernels are slower).
PRECISION_CHOICES = ("auto", "fp32", "fp16", "int8")
DEVICE_CHOICES = ("auto", "cpu", "cuda")


class Backend(abc.ABC):
    """Runs the matte graph on one device."""

    name: str
    device: str
    # Largest batch worth sending at once: CPU batches stay small (more memory, no speed).
    preferred_batch: int
    # GPU backends also take batches already in GPU memory (``enqueue``), zero-copy.
    takes_device_batches: bool = False
    precision: str = "fp32"
    # The largest frame side the backend can upsize to (a TensorRT engine's profile); None: any.
    max_frame_side: int | None = None

    @abc.abstractmethod
    def run(self, rgb_batch: np.ndarray) -> np.ndarray:
        """uint8 [N,320,320,3] RGB -> uint8 [N,320,320] masks."""

    def check_frame_size(self, height: int, width: int) -> None:
        if self.max_frame_side is not None and max(height, width) > self.max_frame_side:
            raise MatteError(f"frames of {width}x{height} exceed this engine's limit of {self.max_frame_side} "
                             "pixels a side; run 'trt-matte build --max-size N' with a larger N")

    def describe(self, model_label: str) -> str:
        return f"backend {self.name} on {self.device}, model {model_label}, {self.precision}"


@dataclass(frozen=True)
class BackendRequest:
    model_path: Path
    cache_dir: Path
    backend: str = "auto"
    device: str = "auto"
    threads: int | None = None
    # TensorRT: the engine's largest batch (its profile); None keeps the default.
    max_batch: int | None = None
    announce: Callable[[str], None] = lambda message: None
    precision: str = "auto"
    model_label: str | None = None
    # int8: use a calibration even when its IoU against FP32 is below the gate.
    accept_below_gate: bool = False


def open_backend(request: BackendRequest) -> Backend:
    """Pick and open a backend; asking for something unavailable is an error, never a fallback.

    auto: TensorRT when it is installed and a GPU is visible, else ONNX Runtime (which
    itself takes CUDA when onnxruntime-gpu can start, else the CPU).
    """
    from ..build_engine.tensorrt_build import tensorrt_available
    from .cuda import gpu_count

    if (request.backend not in BACKEND_CHOICES or request.device not in DEVICE_CHOICES
            or request.precision not in PRECISION_CHOICES):
        raise ValueError(f"unknown backend {request.backend!r}, device {request.device!r} "
                         f"or precision {request.precision!r}")
    wants_tensorrt = request.backend == "tensorrt" or (
        request.backend == "auto" and request.device != "cpu" and tensorrt_available() and gpu_count() > 0)
    backend = _open_tensorrt(request) if wants_tensorrt else _open_onnxruntime(request)
    backend.precision = _resolved_precision(request.precision, wants_tensorrt)
    return backend


def _resolved_precision(precision: str, tensorrt: bool) -> str:
    if precision != "auto":
        return precision
    return "fp16" if tensorrt else "fp32"


def _open_onnxruntime(request: BackendRequest) -> Backend:
    from ..build_engine.matte_graph import matte_graph_path
    from ..calibration import network_for
    from .onnxruntime_backend import OnnxRuntimeBackend

    precision = _resolved_precision(request.precision, tensorrt=False)
    network = network_for(request.model_path, request.cache_dir, precision, "cpu", model_label=request.model_label,
                          accept_below_gate=request.accept_below_gate)
    graph = matte_graph_path(network, request.cache_dir, precision)
    backend = OnnxRuntimeBackend(graph, device=request.device, threads=request.threads)
    if backend.device == "cuda" and gpu_pipeline_available():
        from .onnxruntime_cuda import OnnxRuntimeCudaBackend
        upsizing = matte_graph_path(network, request.cache_dir, precision, upsize=True)
        return OnnxRuntimeCudaBackend(graph, upsizing, threads=request.threads)
    return backend


def gpu_pipeline_available() -> bool:
    """Whether the zero-copy video stages can run: cuda-python and DALI importable."""
    import importlib.util
    try:
        return all(importlib.util.find_spec(name) is not None for name in ("cuda.bindings", "nvidia.dali"))
    except ModuleNotFoundError:  # find_spec imports the parent package ("cuda", "nvidia")
        return False


def check_explicit_tensorrt(backend: str, device: str) -> None:
    """Refuse an explicit TensorRT request this machine cannot serve, in one line; cheap,
    so callers run it before downloading a model that would go unused."""
    if backend != "tensorrt":
        return
    if device == "cpu":
        raise MatteError("--backend tensorrt runs on an NVIDIA GPU; use --backend onnxruntime for the CPU")
    from ..build_engine.tensorrt_build import require_tensorrt_gpu
    require_tensorrt_gpu()


def _open_tensorrt(request: BackendRequest) -> Backend:
    from ..build_engine.engine_cache import EngineCache
    from ..build_engine.tensorrt_build import DEFAULT_MAX_BATCH, BuildRequest, ensure_engine
    from .tensorrt_backend import StaleEngine, TensorRTBackend

    check_explicit_tensorrt("tensorrt", request.device)
    build = BuildRequest(request.model_path, _resolved_precision(request.precision, tensorrt=True),
                         max_batch=request.max_batch or DEFAULT_MAX_BATCH, model_label=request.model_label,
                         accept_below_gate=request.accept_below_gate)
    cached, spec = ensure_engine(build, request.cache_dir, announce=request.announce)
    try:
        return TensorRTBackend(cached.path, spec.max_batch, spec.max_frame_side, build.max_batch)
    except StaleEngine as stale:
        request.announce(f"{stale}; rebuilding it")
        EngineCache(request.cache_dir).discard(spec)
        cached, spec = ensure_engine(build, request.cache_dir, force=True, announce=request.announce)
        return TensorRTBackend(cached.path, spec.max_batch, spec.max_frame_side, build.max_batch)
