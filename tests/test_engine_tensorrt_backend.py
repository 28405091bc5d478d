"""The TensorRT backend's own logic (buffers, uploads, batching, the empty frame_shape,
aligned inputs, release) on the fake device, with an execution context that runs the
same upsizing graph the engine is built from on ONNX Runtime's CPU. The TensorRT calls
themselves are the adapter's (tensorrt_api.py); they run only on a GPU (tests/test_gpu.py)."""
from __future__ import annotations

import numpy as np
import pytest

from trt_matte import fake_cuda
from trt_matte.build_engine.matte_graph import FRAME_SHAPE_NAME, INPUT_NAME, OUTPUT_NAME, matte_graph_path
from trt_matte.engine import tensorrt_backend
from trt_matte.engine.tensorrt_backend import TensorRTBackend
from trt_matte.errors import MatteError
from trt_matte.onnxruntime_sessions import CPU_PROVIDER, open_session
from trt_matte.runtime.video import matte_video

from conftest import decode_gray, make_clip, mean_abs_error


contexts: list[GraphExecutionContext] = []


class GraphExecutionContext:
    """tensorrt_api.ExecutionContext's interface over an ONNX graph run by ONNX Runtime,
    reading and writing the fake device's memory at the addresses it is given."""

    def __init__(self, engine_path, inputs, outputs):
        assert [list(inputs), list(outputs)] == [[INPUT_NAME, FRAME_SHAPE_NAME], [OUTPUT_NAME]]
        contexts.append(self)
        self._session = open_session(engine_path, [CPU_PROVIDER], threads=None)
        self.closed = 0
        self.device = fake_cuda.current_device()  # an engine runs on the GPU it was loaded on

    def enqueue(self, shapes, addresses, stream_address):
        assert stream_address and all(address % 256 == 0 for address in addresses.values())
        assert fake_cuda.current_device() == self.device, "enqueued from a thread on another GPU"
        batch, frame = shapes[INPUT_NAME], shapes[FRAME_SHAPE_NAME]
        assert frame[0] == 0, "frame_shape must be the empty [0,H,W] tensor"
        fake_cuda.view(addresses[FRAME_SHAPE_NAME], (1,))  # at least one byte behind the address
        masks = self._session.run([OUTPUT_NAME], {INPUT_NAME: fake_cuda.view(addresses[INPUT_NAME], batch).copy(),
                                                  FRAME_SHAPE_NAME: np.zeros(frame, np.uint8)})[0]
        fake_cuda.view(addresses[OUTPUT_NAME], masks.shape)[:] = masks

    def close(self):
        self.closed += 1


@pytest.fixture(params=[0, 1], ids=["gpu0", "gpu1"])
def backend(request, monkeypatch, tiny_model, cache_home):
    """On each of the fake device's two GPUs: on the second, every call from the
    pipeline's threads must select it first (the fake raises WrongDevice otherwise)."""
    monkeypatch.setattr(tensorrt_backend, "ExecutionContext", GraphExecutionContext)
    monkeypatch.setattr(TensorRTBackend, "cuda", fake_cuda)
    before = fake_cuda.live_allocations()
    made = TensorRTBackend(matte_graph_path(tiny_model, cache_home, upsize=True), max_batch=4, max_frame_side=400,
                           batch=3, gpu_index=request.param)
    fake_cuda.use_device(0)  # the test's own thread starts elsewhere, as a user's thread may
    yield made
    made.close()
    made.close()  # idempotent
    fake_cuda.use_device(0)
    assert fake_cuda.live_allocations() == before


def test_run_splits_large_batches_and_matches_the_cpu_backend(backend, tiny_backend, synthetic_frames):
    from PIL import Image
    pictures = np.stack([np.asarray(Image.fromarray(frame).resize((320, 320))) for frame in synthetic_frames[:7]])
    assert backend.preferred_batch == 3
    np.testing.assert_array_equal(backend.run(pictures), tiny_backend.run(pictures))


def test_an_unaligned_device_batch_reaches_the_engine_aligned(backend, tiny_model, cache_home, synthetic_frames):
    from PIL import Image
    pictures = np.stack([np.asarray(Image.fromarray(frame).resize((320, 320))) for frame in synthetic_frames[:2]])
    batch, output = fake_cuda.DeviceBuffer(pictures.nbytes + 64), fake_cuda.DeviceBuffer(2 * 100 * 120)
    try:
        batch.array[64:] = pictures.ravel()
        backend.enqueue(batch.address + 64, 2, 100, 120, output.address)  # 64 bytes off the boundary
        masks = output.array.reshape(2, 100, 120)
        upsized = open_session(matte_graph_path(tiny_model, cache_home, upsize=True), [CPU_PROVIDER], None)
        expected = upsized.run(None, {INPUT_NAME: pictures, FRAME_SHAPE_NAME: np.zeros((0, 100, 120), np.uint8)})[0]
        np.testing.assert_array_equal(masks, expected)
    finally:
        batch.close()
        output.close()


def test_frames_beyond_the_profile_are_refused_before_the_engine(backend):
    with pytest.raises(MatteError, match="401x300 exceed this engine's limit of 400"):
        backend.enqueue(0, 1, 300, 401, 0)


def test_the_video_pipeline_on_it_matches_the_cpu_matte(backend, tiny_backend, ffmpeg_exe, tmp_path):
    source = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", size="200x120", frames=10)
    gpu = matte_video(source, tmp_path / "gpu.mp4", backend, progress=False, crf=0)
    cpu = matte_video(source, tmp_path / "cpu.mp4", tiny_backend, progress=False, crf=0)
    assert mean_abs_error(decode_gray(ffmpeg_exe, gpu.output), decode_gray(ffmpeg_exe, cpu.output)) <= 3.0


def test_the_start_up_line_names_the_gpu(backend):
    assert backend.describe("u2netp") == (f"backend tensorrt on cuda:{backend.gpu_index} "
                                          f"(fake GPU {backend.gpu_index} (host memory)), model u2netp, fp32")


def test_a_stream_used_from_a_thread_on_another_gpu_is_caught():
    """What the GPU-1 runs above rely on: the fake notices work queued off the current GPU."""
    fake_cuda.use_device(1)
    stream, buffer = fake_cuda.Stream(), fake_cuda.DeviceBuffer(16)
    fake_cuda.use_device(0)
    try:
        with pytest.raises(fake_cuda.WrongDevice):
            fake_cuda.copy_async(buffer.address, buffer.address, 16, "cudaMemcpyDeviceToDevice", stream)
    finally:
        buffer.close()


def test_close_releases_the_execution_context_too(backend):
    engine = contexts[-1]
    backend.close()
    assert engine.closed == 1
