"""ONNX Runtime on CUDA inside the zero-copy GPU pipeline, for machines without TensorRT.

It runs the upsizing matte graph with I/O binding on device pointers, so the DALI
batch and the finished mattes stay on the GPU exactly as with TensorRT; only the
engine differs. ONNX Runtime synchronises its own stream at the end of a run, so
copies queued afterwards on ``self.stream`` see finished mattes.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from ..build_engine.matte_graph import FRAME_SHAPE_NAME, INPUT_NAME, OUTPUT_NAME, frame_shape_dims
from .. import cuda
from ..cuda import DeviceBuffer, Stream
from ..errors import MatteError
from ..models import MODEL_RGB_BYTES, MODEL_SIZE
from ..onnxruntime_sessions import cuda_providers, open_session
from .backend import EMPTY_TENSOR_BYTES, upload_batch
from .onnxruntime_backend import OnnxRuntimeBackend


class OnnxRuntimeCudaBackend(OnnxRuntimeBackend):
    takes_device_batches = True
    cuda = cuda

    def __init__(self, graph_path: Path, upsize_graph_path: Path, threads: int | None = None, gpu_index: int = 0):
        """With mask shaping both graphs are the one shaping upsizing graph: one session."""
        super().__init__(graph_path, device="cuda", threads=threads, gpu_index=gpu_index)
        self._upsizing = self._session if upsize_graph_path == graph_path else \
            open_session(upsize_graph_path, cuda_providers(gpu_index), threads)
        self.use_gpu()
        with contextlib.ExitStack() as made:  # a failed allocation releases what came before
            self.stream = made.enter_context(contextlib.closing(Stream()))
            self._input = made.enter_context(contextlib.closing(DeviceBuffer(self.preferred_batch * MODEL_RGB_BYTES)))
            self._frame_shape = made.enter_context(contextlib.closing(DeviceBuffer(EMPTY_TENSOR_BYTES)))
            made.pop_all()

    def upload(self, rgb_batch: np.ndarray) -> int:
        self.use_gpu()
        address = upload_batch(cuda, self._input, rgb_batch, self.stream)
        self.stream.synchronize()  # ONNX Runtime reads on its own stream
        return address

    def enqueue(self, rgb_address: int, batch: int, height: int, width: int, output_address: int) -> None:
        # ONNX Runtime runs on a stream of its own: whatever was queued on ours (DALI hands
        # its batches over there) must be done before it reads the batch.
        self.use_gpu()
        self.stream.synchronize()
        binding = self._upsizing.io_binding()
        gpu = self.gpu_index
        binding.bind_input(INPUT_NAME, "cuda", gpu, np.uint8, [batch, MODEL_SIZE, MODEL_SIZE, 3], rgb_address)
        binding.bind_input(FRAME_SHAPE_NAME, "cuda", gpu, np.uint8, list(frame_shape_dims(height, width)),
                           self._frame_shape.address)
        binding.bind_output(OUTPUT_NAME, "cuda", gpu, np.uint8, [batch, height, width], output_address)
        try:
            self._upsizing.run_with_iobinding(binding)
        except Exception as exc:  # ORT's own exception types
            raise MatteError(f"ONNX Runtime (CUDA) failed: {exc}".splitlines()[0]) from None

    def close(self) -> None:
        """Free the device buffers and the stream; safe to call more than once."""
        self.use_gpu()
        self.stream.synchronize()
        for buffer in (self._input, self._frame_shape):
            buffer.close()
        self.stream.close()
