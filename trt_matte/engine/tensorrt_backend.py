"""TensorRT backend: a deserialized engine, one execution context, a non-blocking
stream, and device buffers sized for the largest batch.

Two ways in: ``enqueue`` takes device pointers (a DALI batch, zero-copy) and leaves
the mattes on the GPU; ``run`` takes host arrays, as the Backend interface does.
Every TensorRT call that reports failure by value is checked.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..build_engine.matte_graph import FRAME_SHAPE_NAME, INPUT_NAME, MODEL_SIZE, OUTPUT_NAME
from ..build_engine.tensorrt_build import import_tensorrt
from ..errors import MatteError
from . import Backend
from .cuda import DeviceBuffer, Stream, copy_async, upload_batch

RGB_BYTES = MODEL_SIZE * MODEL_SIZE * 3


class StaleEngine(MatteError):
    """TensorRT refused the plan (another TensorRT version or GPU, or a damaged file)."""


class TensorRTBackend(Backend):
    name = "tensorrt"
    device = "cuda"
    takes_device_batches = True

    def __init__(self, engine_path: Path, max_batch: int, max_frame_side: int, batch: int | None = None):
        """``max_batch`` and ``max_frame_side`` are the engine's profile limits; ``batch``
        (at most ``max_batch``, which is the default) is how many frames to send at once."""
        trt = import_tensorrt()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self._engine is None:
            raise StaleEngine(f"TensorRT could not load {engine_path}")
        self._check_io(trt)
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise MatteError("TensorRT could not create an execution context (out of GPU memory?)")
        self.preferred_batch = min(batch or max_batch, max_batch)
        self.max_frame_side = max_frame_side
        self.stream = Stream()
        self._input = DeviceBuffer(max_batch * RGB_BYTES)
        # Only the shape of frame_shape is read; one byte per pixel of the largest frame.
        self._frame_shape = DeviceBuffer(max_frame_side * max_frame_side)
        self._small_output = DeviceBuffer(max_batch * MODEL_SIZE * MODEL_SIZE)

    def _check_io(self, trt: Any) -> None:
        expected = {INPUT_NAME: trt.TensorIOMode.INPUT, FRAME_SHAPE_NAME: trt.TensorIOMode.INPUT,
                    OUTPUT_NAME: trt.TensorIOMode.OUTPUT}
        found = {self._engine.get_tensor_name(index) for index in range(self._engine.num_io_tensors)}
        if found != set(expected):
            raise StaleEngine(f"the engine's tensors are {sorted(found)}, expected {sorted(expected)}")
        for name, mode in expected.items():
            if self._engine.get_tensor_mode(name) != mode or self._engine.get_tensor_dtype(name) != trt.uint8:
                raise StaleEngine(f"the engine's tensor {name} is not a uint8 {mode}")

    def enqueue(self, rgb_address: int, batch: int, height: int, width: int, output_address: int) -> None:
        """Queue mattes for ``batch`` frames at ``rgb_address`` (uint8 [N,320,320,3] on the GPU)
        into ``output_address`` (uint8 [N,height,width]) on ``self.stream``; does not wait."""
        self.check_frame_size(height, width)
        context = self._context
        if not context.set_input_shape(INPUT_NAME, (batch, MODEL_SIZE, MODEL_SIZE, 3)):
            raise MatteError(f"batch {batch} is outside the engine's profile")
        if not context.set_input_shape(FRAME_SHAPE_NAME, (height, width)):
            raise MatteError(f"frame size {width}x{height} is outside the engine's profile")
        try:
            missing = context.infer_shapes()
        except RuntimeError as exc:
            raise MatteError(f"TensorRT could not infer the output shape: {exc}") from None
        if missing:
            raise MatteError(f"TensorRT could not infer shapes for {', '.join(missing)}")
        for name, address in ((INPUT_NAME, rgb_address), (FRAME_SHAPE_NAME, self._frame_shape.address),
                              (OUTPUT_NAME, output_address)):
            if not context.set_tensor_address(name, address):
                raise MatteError(f"TensorRT refused the buffer for {name}")
        if not context.execute_async_v3(self.stream.address):
            raise MatteError("TensorRT could not run the engine")

    def upload(self, rgb_batch: np.ndarray) -> int:
        """Copy a host batch into the engine's input buffer; returns its device address."""
        return upload_batch(self._input, rgb_batch, RGB_BYTES, self.stream)

    def run(self, rgb_batch: np.ndarray) -> np.ndarray:
        """Host uint8 [N,320,320,3] in, host uint8 [N,320,320] masks out (the images path)."""
        batch = len(rgb_batch)
        if batch > self.preferred_batch:
            return np.concatenate([self.run(rgb_batch[start:start + self.preferred_batch])
                                   for start in range(0, batch, self.preferred_batch)])
        self.enqueue(self.upload(rgb_batch), batch, MODEL_SIZE, MODEL_SIZE, self._small_output.address)
        masks = np.empty((batch, MODEL_SIZE, MODEL_SIZE), np.uint8)
        copy_async(masks.ctypes.data, self._small_output.address, masks.nbytes, "cudaMemcpyDeviceToHost",
                   self.stream)
        self.stream.synchronize()
        return masks

    def close(self) -> None:
        """Free the GPU buffers and the stream; safe to call more than once."""
        self.stream.synchronize()
        for buffer in (self._input, self._frame_shape, self._small_output):
            buffer.close()
        self.stream.close()
