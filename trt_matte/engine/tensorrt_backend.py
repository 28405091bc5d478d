"""TensorRT backend: an engine's execution context, a non-blocking stream, and device
buffers sized for the largest batch.

Two ways in: ``enqueue`` takes device pointers (a DALI batch, zero-copy) and leaves
the mattes on the GPU; ``run`` takes host arrays, as the Backend interface does.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from ..build_engine.matte_graph import FRAME_SHAPE_NAME, INPUT_NAME, OUTPUT_NAME, frame_shape_dims
from .. import cuda
from ..models import MODEL_RGB_BYTES, MODEL_SIZE
from ..tensorrt_api import ExecutionContext
from .backend import EMPTY_TENSOR_BYTES, Backend, aligned_input, upload_batch


class TensorRTBackend(Backend):
    name = "tensorrt"
    device = "cuda"
    takes_device_batches = True
    cuda = cuda  # the adapter all its device calls go through (the tests swap in fake_cuda)

    def __init__(self, engine_path: Path, max_batch: int, max_frame_side: int, batch: int | None = None,
                 gpu_index: int = 0):
        """``max_batch`` and ``max_frame_side`` are the engine's profile limits; ``batch``
        (at most ``max_batch``, which is the default) is how many frames to send at once;
        ``gpu_index`` the CUDA device the engine was built for and runs on."""
        self.preferred_batch = min(batch or max_batch, max_batch)
        self.max_frame_side = max_frame_side
        self.gpu_index = gpu_index
        self.use_gpu()
        # Whatever was made before a failure is released, in reverse order.
        with contextlib.ExitStack() as made:
            self._engine = made.enter_context(contextlib.closing(
                ExecutionContext(engine_path, [INPUT_NAME, FRAME_SHAPE_NAME], [OUTPUT_NAME])))
            self.stream = made.enter_context(contextlib.closing(self.cuda.Stream()))
            self._input = made.enter_context(contextlib.closing(self.cuda.DeviceBuffer(max_batch * MODEL_RGB_BYTES)))
            # frame_shape is empty, but TensorRT wants an address for every input (one byte at least).
            self._frame_shape = made.enter_context(contextlib.closing(self.cuda.DeviceBuffer(EMPTY_TENSOR_BYTES)))
            self._small_output = made.enter_context(contextlib.closing(
                self.cuda.DeviceBuffer(max_batch * MODEL_SIZE * MODEL_SIZE)))
            self._owned = made.pop_all()

    def enqueue(self, rgb_address: int, batch: int, height: int, width: int, output_address: int) -> None:
        """Queue mattes for ``batch`` frames at ``rgb_address`` (uint8 [N,320,320,3] on the GPU)
        into ``output_address`` (uint8 [N,height,width]) on ``self.stream``; does not wait."""
        self.check_frame_size(height, width)
        self.use_gpu()
        rgb_address = aligned_input(self.cuda, rgb_address, batch * MODEL_RGB_BYTES, self._input, self.stream)
        self._engine.enqueue(
            {INPUT_NAME: (batch, MODEL_SIZE, MODEL_SIZE, 3), FRAME_SHAPE_NAME: frame_shape_dims(height, width)},
            {INPUT_NAME: rgb_address, FRAME_SHAPE_NAME: self._frame_shape.address, OUTPUT_NAME: output_address},
            self.stream.address)

    def upload(self, rgb_batch: np.ndarray) -> int:
        """Copy a host batch into the engine's input buffer; returns its device address."""
        self.use_gpu()
        return upload_batch(self.cuda, self._input, rgb_batch, self.stream)

    def run(self, rgb_batch: np.ndarray) -> np.ndarray:
        """Host uint8 [N,320,320,3] in, host uint8 [N,320,320] masks out (the images path)."""
        return self._host_masks(rgb_batch, MODEL_SIZE, MODEL_SIZE)

    def run_at_size(self, rgb_batch: np.ndarray, height: int, width: int) -> np.ndarray:
        return self._host_masks(rgb_batch, height, width)

    def _host_masks(self, rgb_batch: np.ndarray, height: int, width: int) -> np.ndarray:
        self.use_gpu()  # before the output buffer below is allocated
        batch = len(rgb_batch)
        if batch > self.preferred_batch:
            return np.concatenate([self._host_masks(rgb_batch[start:start + self.preferred_batch], height, width)
                                   for start in range(0, batch, self.preferred_batch)])
        masks = np.empty((batch, height, width), np.uint8)
        with contextlib.ExitStack() as allocated:
            output = self._small_output if masks.nbytes <= self._small_output.nbytes else \
                allocated.enter_context(contextlib.closing(self.cuda.DeviceBuffer(masks.nbytes)))
            self.enqueue(self.upload(rgb_batch), batch, height, width, output.address)
            self.cuda.copy_async(masks.ctypes.data, output.address, masks.nbytes, "cudaMemcpyDeviceToHost",
                                 self.stream)
            self.stream.synchronize()
        return masks

    def close(self) -> None:
        """Wait for queued work, then free the buffers, the stream, the context and the
        engine; safe to call more than once."""
        self.use_gpu()
        self.stream.synchronize()
        self._owned.close()
