"""The GPU path end to end: TensorRT engine, DALI (NVDEC) reader, device stages.

Every test here is marked ``gpu`` and skips where CUDA sees no GPU; the ones that
need TensorRT or DALI also skip when those are not installed. scripts/gpu_check.py
runs them on a GPU machine before its benchmarks.
"""
from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from conftest import (decode_gray, decode_rgb, make_clip, mask_iou, mean_abs_error, packet_times,
                      with_display_rotation)

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def tensorrt_backend(u2netp_path, cache_home):
    pytest.importorskip("tensorrt")
    from trt_matte.api import BackendRequest, open_backend
    return open_backend(BackendRequest(u2netp_path, cache_home, backend="tensorrt", device="cuda"))


@pytest.fixture(scope="module")
def carphone_pictures(ffmpeg_exe, carphone_path) -> np.ndarray:
    frames = decode_rgb(ffmpeg_exe, carphone_path)[::8]
    return np.stack([np.asarray(Image.fromarray(frame).resize((320, 320), Image.Resampling.LANCZOS))
                     for frame in frames])


def test_fp16_engine_matches_the_fp32_graph(tensorrt_backend, cpu_backend, carphone_pictures):
    gpu_masks = tensorrt_backend.run(carphone_pictures)
    cpu_masks = cpu_backend.run(carphone_pictures)
    errors = [mean_abs_error(a, b) for a, b in zip(gpu_masks, cpu_masks)]
    assert np.mean(errors) <= 1.0
    assert np.mean([mask_iou(a, b) for a, b in zip(gpu_masks, cpu_masks)]) >= 0.98


def test_int8_engine_from_a_calibration_matches_fp32(u2netp_path, cpu_backend, carphone_path, carphone_pictures,
                                                     tmp_path):
    """``build --precision int8``'s path: a calibration on the CPU, then an engine from its
    TensorRT Q/DQ graph (``build_plan`` sets no precision flags); masks checked against the
    CPU FP32 graph on frames of the calibrated clip. The gate is bypassed: this checks
    the engine, and the calibration's own accuracy is test_calibration's business."""
    pytest.importorskip("tensorrt")
    from trt_matte.calibration.calibrate import calibrate
    from trt_matte.api import BackendRequest, open_backend
    report = calibrate(u2netp_path, "u2netp", [carphone_path], tmp_path, frames=24)
    backend = open_backend(BackendRequest(u2netp_path, tmp_path, backend="tensorrt", device="cuda",
                                          precision="int8", accept_below_gate=True))
    assert backend.precision == "int8"
    gpu_masks, cpu_masks = backend.run(carphone_pictures), cpu_backend.run(carphone_pictures)
    iou = np.mean([mask_iou(a, b) for a, b in zip(gpu_masks, cpu_masks)])
    assert iou >= 0.95, (iou, report.accuracy["tensorrt"])
    assert np.mean([mean_abs_error(a, b) for a, b in zip(gpu_masks, cpu_masks)]) <= 4.0


def test_gpu_video_matches_the_cpu_matte(tensorrt_backend, cpu_backend, ffmpeg_exe, carphone_path, tmp_path):
    from trt_matte.runtime.video import matte_video
    notes: list[str] = []
    gpu = matte_video(carphone_path, tmp_path / "gpu.mp4", tensorrt_backend, progress=False, announce=notes.append)
    cpu = matte_video(carphone_path, tmp_path / "cpu.mp4", cpu_backend, progress=False)
    assert notes == []  # H.264 4:2:0 goes through NVDEC, no fallback
    gpu_matte, cpu_matte = decode_gray(ffmpeg_exe, gpu.output), decode_gray(ffmpeg_exe, cpu.output)
    assert gpu_matte.shape == cpu_matte.shape == (120, 144, 176)
    assert packet_times(gpu.output) == packet_times(carphone_path)
    assert np.mean([mask_iou(a, b) for a, b in zip(gpu_matte, cpu_matte)]) >= 0.97
    assert np.mean([mean_abs_error(a, b) for a, b in zip(gpu_matte, cpu_matte)]) <= 3.0


@pytest.mark.parametrize("frames,batch_note", [(1, "one frame"), (37, "not a multiple of the batch")])
def test_gpu_video_frame_count_and_timestamps(tensorrt_backend, ffmpeg_exe, tmp_path, frames, batch_note):
    from trt_matte.runtime.video import matte_video
    source = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", size="640x360", frames=frames)
    result = matte_video(source, None, tensorrt_backend, progress=False)
    assert len(decode_gray(ffmpeg_exe, result.output)) == frames, batch_note
    assert packet_times(result.output) == pytest.approx(packet_times(source), abs=1e-6)


def test_gpu_video_rotated_source(tensorrt_backend, ffmpeg_exe, tmp_path):
    from trt_matte.runtime.video import matte_video
    upright = make_clip(ffmpeg_exe, tmp_path / "upright.mp4", size="640x360", frames=8)
    rotated = with_display_rotation(ffmpeg_exe, upright, tmp_path / "rotated.mp4", 90)
    matte = decode_gray(ffmpeg_exe, matte_video(rotated, None, tensorrt_backend, progress=False).output)
    assert matte.shape == (8, 640, 360)


def test_stale_engine_is_rebuilt(u2netp_path, tmp_path):
    pytest.importorskip("tensorrt")
    from trt_matte.build_engine.engine_cache import EngineCache
    from trt_matte.build_engine.tensorrt_build import BuildRequest, ensure_engine
    from trt_matte.api import BackendRequest, open_backend
    cached, spec = ensure_engine(BuildRequest(u2netp_path, max_batch=2), tmp_path)
    # A plan whose sidecar still matches but that TensorRT cannot load (another version's plan, say).
    plan = bytearray(cached.path.read_bytes())
    plan[len(plan) // 2:] = bytes(len(plan) - len(plan) // 2)
    EngineCache(tmp_path).store(spec, bytes(plan), 0.0)
    notes: list[str] = []
    backend = open_backend(BackendRequest(u2netp_path, tmp_path, backend="tensorrt", max_batch=2,
                                          announce=notes.append))
    assert any("rebuilding" in note for note in notes)
    assert backend.run(np.zeros((1, 320, 320, 3), np.uint8)).shape == (1, 320, 320)


def test_onnxruntime_cuda_on_the_device_pipeline(u2netp_path, cache_home, ffmpeg_exe, carphone_path, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu")
    from trt_matte.api import BackendRequest, open_backend
    from trt_matte.runtime.video import matte_video
    backend = open_backend(BackendRequest(u2netp_path, cache_home, backend="onnxruntime", device="cuda"))
    assert backend.takes_device_batches
    result = matte_video(carphone_path, tmp_path / "ort.mp4", backend, progress=False)
    assert len(decode_gray(ffmpeg_exe, result.output)) == 120


def test_device_cuda_n_names_the_gpu_and_refuses_one_past_the_last(tiny_model):
    """--device cuda:N on real CUDA: the last GPU CUDA sees runs and is named at start-up;
    one past it is the one-line error naming those that are."""
    import onnxruntime as ort

    from trt_matte import Matter, MatteError
    from trt_matte.cuda import gpu_names
    from trt_matte.onnxruntime_sessions import CUDA_PROVIDER
    from trt_matte.tensorrt_api import tensorrt_available
    if not tensorrt_available() and CUDA_PROVIDER not in ort.get_available_providers():
        pytest.skip("needs TensorRT or onnxruntime-gpu")
    names = gpu_names()
    last = len(names) - 1
    with Matter(tiny_model, device=f"cuda:{last}") as matter:
        assert f"cuda:{last} ({names[last]})" in matter.describe()
        assert matter.mask(np.zeros((48, 64, 3), np.uint8)).shape == (48, 64)
    with pytest.raises(MatteError, match=rf"there is no GPU cuda:{last + 1} here: CUDA sees cuda:0 \("):
        Matter(tiny_model, device=f"cuda:{last + 1}")


def test_mask_shaping_in_the_gpu_graph_matches_the_cpu(u2netp_path, cache_home, carphone_pictures):
    """Threshold, erode, dilate and feather run inside the graph on ONNX Runtime's CUDA
    provider (no engine build needed) as they do on the CPU."""
    import onnxruntime as ort

    from trt_matte.api import BackendRequest, open_backend
    from trt_matte.build_engine.matte_graph import MaskShape
    from trt_matte.onnxruntime_sessions import CUDA_PROVIDER
    if CUDA_PROVIDER not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu")
    shape = MaskShape(threshold=128, erode=2, dilate=3, feather=2)
    gpu = open_backend(BackendRequest(u2netp_path, cache_home, backend="onnxruntime", device="cuda", shape=shape))
    cpu = open_backend(BackendRequest(u2netp_path, cache_home, backend="onnxruntime", device="cpu", shape=shape))
    assert gpu.shapes_masks and gpu.device == "cuda"
    on_gpu, on_cpu = gpu.run_at_size(carphone_pictures, 144, 176), cpu.run_at_size(carphone_pictures, 144, 176)
    assert mask_iou(on_gpu, on_cpu) >= 0.99 and mean_abs_error(on_gpu, on_cpu) <= 1.0
