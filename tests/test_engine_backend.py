"""The Backend interface's shared behaviour: the frame-size limit, the one-line
description, and release through close() or a with block."""
from __future__ import annotations

import numpy as np
import pytest

from trt_matte.engine.backend import Backend
from trt_matte.errors import MatteError


class LimitedBackend(Backend):
    name, device, preferred_batch, max_frame_side = "tensorrt", "cuda", 4, 4096

    def __init__(self):
        self.closed = 0

    def run(self, rgb_batch: np.ndarray) -> np.ndarray:
        return rgb_batch[..., 0]

    def close(self) -> None:
        self.closed += 1


def test_frames_beyond_the_engines_limit_are_refused_with_the_fix():
    backend = LimitedBackend()
    backend.check_frame_size(2160, 4096)
    with pytest.raises(MatteError, match=r"4097x2160 exceed this engine's limit of 4096 .*--max-size"):
        backend.check_frame_size(2160, 4097)


def test_a_with_block_closes_the_backend_even_on_error():
    with pytest.raises(ZeroDivisionError):
        with LimitedBackend() as backend:
            raise ZeroDivisionError
    assert backend.closed == 1


def test_host_backends_close_without_holding_anything(tiny_backend):
    with tiny_backend as backend:
        assert backend.run(np.zeros((1, 320, 320, 3), np.uint8)).shape == (1, 320, 320)
    tiny_backend.close()  # again: nothing to release, no error
    assert tiny_backend.run(np.zeros((1, 320, 320, 3), np.uint8)).shape == (1, 320, 320)
    assert tiny_backend.describe("tiny") == "backend onnxruntime on cpu, model tiny, fp32"


def test_an_unaligned_device_batch_is_staged_on_a_256_byte_boundary():
    from trt_matte import fake_cuda
    from trt_matte.engine.backend import ALIGNMENT, aligned_input

    stream = fake_cuda.Stream()
    batch, staging = fake_cuda.DeviceBuffer(4096), fake_cuda.DeviceBuffer(1024)
    try:
        batch.array[:] = np.arange(4096) % 251
        assert aligned_input(fake_cuda, batch.address, 1024, staging, stream) == batch.address  # aligned: as is
        unaligned = batch.address + 16
        assert unaligned % ALIGNMENT
        assert aligned_input(fake_cuda, unaligned, 1024, staging, stream) == staging.address
        np.testing.assert_array_equal(staging.array, batch.array[16:16 + 1024])
        with pytest.raises(ValueError, match="staging buffer"):
            aligned_input(fake_cuda, unaligned, 2048, staging, stream)
    finally:
        batch.close()
        staging.close()
