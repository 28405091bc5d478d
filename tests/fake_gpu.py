"""A device backend on the fake CUDA adapter, so the GPU stages run in the CPU suite.

"Device" batches are host memory (``trt_matte.fake_cuda``) and the "engine" is ONNX
Runtime running the same upsizing matte graph a TensorRT engine is built from, reading
its input from and writing its mattes to the addresses the stages hand it. Every
address is checked against the fake allocation ledger first, so a stage that reads or
writes freed memory fails the test instead of passing silently.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from trt_matte import fake_cuda
from trt_matte.build_engine.matte_graph import FRAME_SHAPE_NAME, INPUT_NAME, OUTPUT_NAME, frame_shape_input
from trt_matte.engine.backend import Backend, upload_batch
from trt_matte.engine.onnxruntime_backend import OnnxRuntimeBackend
from trt_matte.errors import MatteError
from trt_matte.models import MODEL_RGB_BYTES, MODEL_SIZE
from trt_matte.onnxruntime_sessions import CPU_PROVIDER, open_session


class FakeGpuBackend(Backend):
    name, device, takes_device_batches = "fake-gpu", "cuda", True
    cuda = fake_cuda

    def __init__(self, plain_graph: Path, upsizing_graph: Path, batch: int = 4, *, fail_on_call: int | None = None,
                 max_frame_side: int | None = None):
        self.preferred_batch = batch
        self.max_frame_side = max_frame_side
        self.calls = 0
        self._fail_on_call = fail_on_call
        self._plain = OnnxRuntimeBackend(plain_graph, device="cpu")
        self._upsizing = open_session(upsizing_graph, [CPU_PROVIDER], threads=None)
        with contextlib.ExitStack() as made:
            self.stream = made.enter_context(contextlib.closing(fake_cuda.Stream()))
            self._input = made.enter_context(contextlib.closing(fake_cuda.DeviceBuffer(batch * MODEL_RGB_BYTES)))
            self._owned = made.pop_all()

    def upload(self, rgb_batch: np.ndarray) -> int:
        return upload_batch(fake_cuda, self._input, rgb_batch, self.stream)

    def enqueue(self, rgb_address: int, batch: int, height: int, width: int, output_address: int) -> None:
        self.check_frame_size(height, width)
        self.calls += 1
        if self.calls == self._fail_on_call:
            raise MatteError("simulated engine failure")
        output = fake_cuda.view(output_address, (batch, height, width))
        frames = fake_cuda.view(rgb_address, (batch, MODEL_SIZE, MODEL_SIZE, 3)).copy()
        output[:] = self._upsizing.run([OUTPUT_NAME], {INPUT_NAME: frames,
                                                       FRAME_SHAPE_NAME: frame_shape_input(height, width)})[0]

    def run(self, rgb_batch: np.ndarray) -> np.ndarray:
        return self._plain.run(rgb_batch)

    def close(self) -> None:
        self._owned.close()
