"""Matte graph -> serialized TensorRT 11 engine, cached per GPU.

The network to build from is handed in: the model itself for FP16 (converted here), or
the Q/DQ network of an INT8 calibration, which the caller looked up. The engine takes
uint8 RGB [N,320,320,3] and an empty ``frame_shape`` [0,H,W] whose shape sets the output size,
and returns uint8 mattes [N,H,W]: the smallest possible transfers on both sides.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..cuda import device_name_and_capability, gpu_count
from ..errors import MatteError
from ..files import file_digest
from ..models import MODEL_SIZE
from ..tensorrt_api import build_serialized, import_tensorrt, tensorrt_version
from .engine_cache import CachedEngine, EngineCache, EngineSpec, GpuIdentity
from .matte_graph import FRAME_SHAPE_NAME, INPUT_NAME, NO_SHAPING, MaskShape, frame_shape_dims, matte_graph_path

DEFAULT_MAX_BATCH = 16
DEFAULT_MAX_FRAME_SIDE = 4096
# The engine's float mattes take batch x side^2 x 4 bytes: 4 GiB at 16 x 8192^2.
MAX_FRAME_SIDE_LIMIT = 8192
# Kernels are tuned for this frame size (clamped to the engine's limit): the common case.
TUNED_FRAME = (1080, 1920)
# Part of every engine's cache key: bump it when the build changes what a plan holds.
BUILD_RECIPE = 3
DEFAULT_WORKSPACE = 4 << 30


def require_tensorrt_gpu() -> None:
    """TensorRT and a visible NVIDIA GPU, or a one-line error saying which is missing."""
    import_tensorrt()  # for its one-line install hint when TensorRT is missing
    if gpu_count() == 0:
        raise MatteError("TensorRT needs an NVIDIA GPU, and CUDA sees none (driver r580+ installed?)")


@dataclass(frozen=True)
class BuildRequest:
    # The model file (fp16) or the calibrated Q/DQ network (int8) the matte graph wraps.
    network_path: Path
    precision: str = "fp16"
    max_batch: int = DEFAULT_MAX_BATCH
    max_frame_side: int = DEFAULT_MAX_FRAME_SIDE
    workspace_bytes: int = DEFAULT_WORKSPACE
    # The matte graph's bound on the per-frame stretch (0: rembg's numerics); in the graph,
    # so engines of different floors are different engines.
    stretch_floor: float = 0.0
    # Mask shaping (threshold, erode, ...) is in the graph too.
    shape: MaskShape = NO_SHAPING


def engine_spec(graph_path: Path, request: BuildRequest, gpu: GpuIdentity, version: str) -> EngineSpec:
    # Tuned for full batches: the pipelines send max_batch frames at a time.
    return EngineSpec(
        graph_sha256=file_digest(graph_path), precision=request.precision, tensorrt_version=version,
        gpu=gpu, min_batch=1, opt_batch=request.max_batch, max_batch=request.max_batch,
        max_frame_side=request.max_frame_side, workspace_bytes=request.workspace_bytes, build_recipe=BUILD_RECIPE)


def profile_shapes(spec: EngineSpec) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) per input; TensorRT requires min <= opt <= max in every dimension."""
    rgb = (MODEL_SIZE, MODEL_SIZE, 3)
    side = spec.max_frame_side
    tuned_frame = tuple(min(extent, side) for extent in TUNED_FRAME)
    return {INPUT_NAME: ((spec.min_batch, *rgb), (spec.opt_batch, *rgb), (spec.max_batch, *rgb)),
            FRAME_SHAPE_NAME: (frame_shape_dims(1, 1), frame_shape_dims(*tuned_frame), frame_shape_dims(side, side))}


def current_gpu() -> GpuIdentity:
    return GpuIdentity(*device_name_and_capability())


def ensure_engine(request: BuildRequest, cache_dir: Path, *, rebuild: bool = False,
                  announce: Callable[[str], None] = lambda message: None) -> tuple[CachedEngine, EngineSpec]:
    """The cached engine for ``request`` on this GPU, building it when none fits (or when ``rebuild``)."""
    require_tensorrt_gpu()
    graph_path = matte_graph_path(request.network_path, cache_dir, request.precision, upsize=True,
                                  stretch_floor=request.stretch_floor, shape=request.shape)
    spec = engine_spec(graph_path, request, current_gpu(), tensorrt_version())
    cache = EngineCache(cache_dir)
    found = None if rebuild else cache.find_covering(spec)
    if found is not None:
        return found
    announce(f"building a {request.precision} TensorRT engine for {spec.gpu.name} "
             f"(max batch {spec.max_batch}; takes a few minutes, once per GPU)")
    started = time.monotonic()
    plan = build_serialized(graph_path, profile_shapes(spec), spec.workspace_bytes, cache.timing_cache_path(spec.gpu))
    seconds = time.monotonic() - started
    cached = cache.store(spec, plan, seconds)
    announce(f"built {cached.path} ({len(plan) / 1e6:.1f} MB) in {seconds:.0f} s")
    return cached, spec
