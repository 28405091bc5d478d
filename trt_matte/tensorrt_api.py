"""Every TensorRT 11 call trt-matte makes, in one thin adapter.

TensorRT 11 networks are strongly typed: precision comes from the ONNX graph (FP16
tensors, or Q/DQ nodes for INT8), never from builder flags, and there is no INT8
calibrator. Every call that reports failure by value (None, False, a negative index)
is checked here and turned into a one-line MatteError. Nothing else in the package
touches the ``tensorrt`` module; ``tests/test_gpu_api_names.py`` checks each name used
here against the real 11.4 bindings.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import MatteError
from .files import atomic_write_bytes
from .interrupts import import_held

TENSORRT_INSTALL_HINT = ("TensorRT is not installed: pip install 'trt-matte[gpu]' "
                         "(its wheels are fetched from NVIDIA's package index, pypi.nvidia.com)")
# (min, opt, max) shape of each input tensor of an optimization profile.
ProfileShapes = Mapping[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


class StaleEngine(MatteError):
    """TensorRT refused the plan (another TensorRT version or GPU, or a damaged file)."""


def import_tensorrt() -> Any:
    try:
        return import_held("tensorrt")
    except (ImportError, OSError):  # a broken install fails to load its libraries (OSError)
        raise MatteError(TENSORRT_INSTALL_HINT) from None


def tensorrt_available() -> bool:
    try:
        import_tensorrt()
    except MatteError:
        return False
    return True


def tensorrt_version() -> str:
    return import_tensorrt().__version__


def _parse(trt: Any, builder: Any, logger: Any, graph_path: Path) -> tuple[Any, Any]:
    network = builder.create_network(0)  # strongly typed: the only kind in TensorRT 11
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(graph_path)):
        errors = [str(parser.get_error(index)) for index in range(parser.num_errors)]
        raise MatteError(f"TensorRT could not parse {graph_path.name}: {errors[0] if errors else 'no details'}")
    return network, parser


def _profile(builder: Any, shapes: ProfileShapes) -> Any:
    profile = builder.create_optimization_profile()
    for name, (smallest, tuned, largest) in shapes.items():
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


def build_serialized(graph_path: Path, shapes: ProfileShapes, workspace_bytes: int, timing_cache_path: Path) -> bytes:
    """Parse an ONNX graph and build a plan with one optimization profile; the timing
    cache at ``timing_cache_path`` is read first and written back after the build."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, logger, graph_path)  # the network borrows the parser's weights
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if config.add_optimization_profile(_profile(builder, shapes)) < 0:
        raise MatteError("TensorRT rejected the optimization profile")
    timing_cache = _timing_cache(config, timing_cache_path)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise MatteError("TensorRT could not build the engine (see the messages above)")
    atomic_write_bytes(timing_cache_path, bytes(memoryview(timing_cache.serialize())))
    return bytes(memoryview(plan))


class ExecutionContext:
    """A deserialized engine with uint8 inputs and outputs, and one execution context."""

    def __init__(self, engine_path: Path, inputs: Sequence[str], outputs: Sequence[str]):
        trt = import_tensorrt()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self._engine is None:
            raise StaleEngine(f"TensorRT could not load {engine_path}")
        self._check_io(trt, inputs, outputs)
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise MatteError("TensorRT could not create an execution context (out of GPU memory?)")

    def _check_io(self, trt: Any, inputs: Sequence[str], outputs: Sequence[str]) -> None:
        expected = {**{name: trt.TensorIOMode.INPUT for name in inputs},
                    **{name: trt.TensorIOMode.OUTPUT for name in outputs}}
        found = {self._engine.get_tensor_name(index) for index in range(self._engine.num_io_tensors)}
        if found != set(expected):
            raise StaleEngine(f"the engine's tensors are {sorted(found)}, expected {sorted(expected)}")
        for name, mode in expected.items():
            if self._engine.get_tensor_mode(name) != mode or self._engine.get_tensor_dtype(name) != trt.uint8:
                raise StaleEngine(f"the engine's tensor {name} is not a uint8 {mode}")

    def enqueue(self, shapes: Mapping[str, tuple[int, ...]], addresses: Mapping[str, int], stream_address: int) -> None:
        """Set the input shapes and every tensor's device address, then queue one run on the stream."""
        context = self._context
        for name, shape in shapes.items():
            if not context.set_input_shape(name, shape):
                raise MatteError(f"{name} of shape {shape} is outside the engine's profile")
        try:
            missing = context.infer_shapes()
        except RuntimeError as exc:
            raise MatteError(f"TensorRT could not infer the output shape: {exc}") from None
        if missing:
            raise MatteError(f"TensorRT could not infer shapes for {', '.join(missing)}")
        for name, address in addresses.items():
            if not context.set_tensor_address(name, address):
                raise MatteError(f"TensorRT refused the buffer for {name}")
        if not context.execute_async_v3(stream_address):
            raise MatteError("TensorRT could not run the engine")

    def close(self) -> None:
        """Release the context and the engine (with the device memory they hold); idempotent."""
        self._context = None
        self._engine = None
