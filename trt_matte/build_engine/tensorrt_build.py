"""Matte graph -> serialized TensorRT 11 engine, cached per GPU.

TensorRT 11 networks are strongly typed: precision comes from the ONNX (the FP16
graph, or the Q/DQ graph from ``trt-matte calibrate`` for INT8), never from builder flags. The engine takes uint8 RGB [N,320,320,3] and a
``frame_shape`` [H,W] whose shape sets the output size, and returns uint8 mattes
[N,H,W]: the smallest possible transfers on both sides.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import MatteError
from ..files import atomic_write_bytes
from .engine_cache import CachedEngine, EngineCache, EngineSpec, GpuIdentity
from .matte_graph import FRAME_SHAPE_NAME, INPUT_NAME, MODEL_SIZE, file_digest, matte_graph_path

DEFAULT_MAX_BATCH = 16
DEFAULT_MAX_FRAME_SIDE = 4096
# The engine's float mattes take batch x side^2 x 4 bytes: 4 GiB at 16 x 8192^2.
MAX_FRAME_SIDE_LIMIT = 8192
# Kernels are tuned for this frame size (clamped to the engine's limit): the common case.
TUNED_FRAME = (1080, 1920)
# Part of every engine's cache key: bump it when the build changes what a plan holds.
BUILD_RECIPE = 2
DEFAULT_WORKSPACE = 4 << 30
TENSORRT_INSTALL_HINT = ("TensorRT is not installed: pip install 'trt-matte[gpu]' "
                         "(its wheels are fetched from NVIDIA's package index, pypi.nvidia.com)")


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except (ImportError, OSError):  # a broken install fails to load its libraries (OSError)
        raise MatteError(TENSORRT_INSTALL_HINT) from None
    return tensorrt


def require_tensorrt_gpu() -> Any:
    """TensorRT and a visible NVIDIA GPU, or a one-line error saying which is missing."""
    from ..engine.cuda import gpu_count
    trt = import_tensorrt()
    if gpu_count() == 0:
        raise MatteError("TensorRT needs an NVIDIA GPU, and CUDA sees none (driver r580+ installed?)")
    return trt


def tensorrt_available() -> bool:
    try:
        import_tensorrt()
    except MatteError:
        return False
    return True


@dataclass(frozen=True)
class BuildRequest:
    model_path: Path
    precision: str = "fp16"
    max_batch: int = DEFAULT_MAX_BATCH
    max_frame_side: int = DEFAULT_MAX_FRAME_SIDE
    workspace_bytes: int = DEFAULT_WORKSPACE
    model_label: str | None = None
    # int8: build from a calibration even when its IoU against FP32 is below the gate.
    accept_below_gate: bool = False


def engine_spec(graph_path: Path, request: BuildRequest, gpu: GpuIdentity, tensorrt_version: str) -> EngineSpec:
    # Tuned for full batches: the pipelines send max_batch frames at a time.
    return EngineSpec(
        graph_sha256=file_digest(graph_path), precision=request.precision, tensorrt_version=tensorrt_version,
        gpu=gpu, min_batch=1, opt_batch=request.max_batch, max_batch=request.max_batch,
        max_frame_side=request.max_frame_side, workspace_bytes=request.workspace_bytes, build_recipe=BUILD_RECIPE)


def _parse(trt: Any, builder: Any, logger: Any, graph_path: Path) -> Any:
    network = builder.create_network(0)  # strongly typed: the only kind in TensorRT 11
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(graph_path)):
        errors = [str(parser.get_error(index)) for index in range(parser.num_errors)]
        raise MatteError(f"TensorRT could not parse {graph_path.name}: {errors[0] if errors else 'no details'}")
    return network, parser


def profile_shapes(spec: EngineSpec) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) per input; TensorRT requires min <= opt <= max in every dimension."""
    rgb = (MODEL_SIZE, MODEL_SIZE, 3)
    side = spec.max_frame_side
    tuned_frame = tuple(min(extent, side) for extent in TUNED_FRAME)
    return {INPUT_NAME: ((spec.min_batch, *rgb), (spec.opt_batch, *rgb), (spec.max_batch, *rgb)),
            FRAME_SHAPE_NAME: ((1, 1), tuned_frame, (side, side))}


def _profile(builder: Any, spec: EngineSpec) -> Any:
    profile = builder.create_optimization_profile()
    for name, (smallest, tuned, largest) in profile_shapes(spec).items():
        try:
            profile.set_shape(name, smallest, tuned, largest)
        except (ValueError, RuntimeError) as exc:
            raise MatteError(f"TensorRT rejected the profile {smallest}..{largest} for {name}: {exc}") from None
    return profile


def _timing_cache(config: Any, path: Path) -> Any:
    """Load the per-GPU timing cache; a damaged or foreign one is replaced, not fatal."""
    previous = path.read_bytes() if path.is_file() else b""
    try:
        cache = config.create_timing_cache(previous)
        if cache is not None and config.set_timing_cache(cache, False):
            return cache
    except (RuntimeError, TypeError, ValueError):
        pass  # unreadable bytes: start afresh below
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, False):
        raise MatteError("TensorRT refused an empty timing cache")
    return cache


def build_plan(graph_path: Path, spec: EngineSpec, timing_cache_path: Path) -> bytes:
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, logger, graph_path)  # the network borrows the parser's weights
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_bytes)
    if config.add_optimization_profile(_profile(builder, spec)) < 0:
        raise MatteError("TensorRT rejected the optimization profile")
    timing_cache = _timing_cache(config, timing_cache_path)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise MatteError("TensorRT could not build the engine (see the messages above)")
    atomic_write_bytes(timing_cache_path, bytes(memoryview(timing_cache.serialize())))
    return bytes(memoryview(plan))


def current_gpu() -> GpuIdentity:
    from ..engine.cuda import device_name_and_capability
    return GpuIdentity(*device_name_and_capability())


def ensure_engine(request: BuildRequest, cache_dir: Path, *, force: bool = False,
                  announce: Callable[[str], None] = lambda message: None) -> tuple[CachedEngine, EngineSpec]:
    """The cached engine for ``request`` on this GPU, building it when none fits."""
    trt = require_tensorrt_gpu()
    from ..calibration import network_for
    network = network_for(request.model_path, cache_dir, request.precision, "tensorrt",
                          model_label=request.model_label, accept_below_gate=request.accept_below_gate)
    graph_path = matte_graph_path(network, cache_dir, request.precision, upsize=True)
    spec = engine_spec(graph_path, request, current_gpu(), trt.__version__)
    cache = EngineCache(cache_dir)
    found = None if force else cache.find_covering(spec)
    if found is not None:
        return found
    announce(f"building a {request.precision} TensorRT engine for {spec.gpu.name} "
             f"(max batch {spec.max_batch}; takes a few minutes, once per GPU)")
    started = time.monotonic()
    plan = build_plan(graph_path, spec, cache.timing_cache_path(spec.gpu))
    seconds = time.monotonic() - started
    cached = cache.store(spec, plan, seconds)
    announce(f"built {cached.path} ({len(plan) / 1e6:.1f} MB) in {seconds:.0f} s")
    return cached, spec
