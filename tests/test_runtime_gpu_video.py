"""The GPU video stages on the fake device (tests/fake_gpu.py): the slot queue, the
events, DALI keepalives, short last batches, frame accounting, failures and teardown
run here without a GPU, and their mattes are compared with the CPU path's.

The fake engine upsizes with the matte graph's bicubic Resize where the CPU path
upsizes with ffmpeg's Lanczos, so the two mattes agree closely, not bit for bit.
"""
from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest

from conftest import (alive, child_processes, decode_gray, leftovers, make_clip, mask_iou, mean_abs_error,
                      packet_times, wait_for_child)
from fake_gpu import FakeGpuBackend
from trt_matte import fake_cuda
from trt_matte.build_engine.matte_graph import matte_graph_path
from trt_matte.errors import MatteError
from trt_matte.media.dali import dali_available
from trt_matte.runtime import gpu_video, stages
from trt_matte.runtime.video import matte_video


@pytest.fixture
def fake_gpu(tiny_model, cache_home):
    """The tiny stand-in model on the fake device; every fake buffer must be freed by the end."""
    before = fake_cuda.live_allocations()
    backends = []

    def make(batch: int = 4, **options) -> FakeGpuBackend:
        backend = FakeGpuBackend(matte_graph_path(tiny_model, cache_home),
                                 matte_graph_path(tiny_model, cache_home, upsize=True), batch, **options)
        backends.append(backend)
        return backend

    yield make
    for backend in backends:
        backend.close()
    assert fake_cuda.live_allocations() == before, "the GPU stages left fake device memory allocated"


def matte_both_ways(source, backend, cpu_backend, tmp_path, **options):
    notes: list[str] = []
    gpu = matte_video(source, tmp_path / "gpu.mp4", backend, progress=False, crf=0, announce=notes.append, **options)
    cpu = matte_video(source, tmp_path / "cpu.mp4", cpu_backend, progress=False, crf=0, **options)
    return gpu, cpu, notes


def assert_close_mattes(ffmpeg_exe, gpu_path, cpu_path, frames: int) -> None:
    gpu, cpu = decode_gray(ffmpeg_exe, gpu_path), decode_gray(ffmpeg_exe, cpu_path)
    assert len(gpu) == len(cpu) == frames
    assert mask_iou(gpu, cpu) >= 0.97  # pooled over all frames
    assert mean_abs_error(gpu, cpu) <= 3.0
    assert packet_times(gpu_path) == pytest.approx(packet_times(cpu_path), abs=1e-6)


@pytest.mark.parametrize("frames, batch", [(1, 4), (13, 4), (24, 7), (10, 16)])
def test_h264_through_the_ffmpeg_reader_matches_the_cpu_path(ffmpeg_exe, fake_gpu, tiny_backend, tmp_path, frames,
                                                               batch):
    """H.264 is beyond the fake device's (CPU) DALI decoder: the stages take the ffmpeg
    reader and upload host batches, short last batch included."""
    source = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", size="200x120", frames=frames)
    gpu, cpu, notes = matte_both_ways(source, fake_gpu(batch), tiny_backend, tmp_path)
    assert gpu.frames == frames
    assert len(notes) == 1 and "decoding with ffmpeg on the CPU instead" in notes[0]
    assert_close_mattes(ffmpeg_exe, gpu.output, cpu.output, frames)


@pytest.mark.skipif(not dali_available(), reason="needs DALI (the test extra installs it)")
@pytest.mark.parametrize("frames, batch", [(9, 4), (8, 8)])
def test_vp9_through_dali_gives_the_masks_of_dalis_own_frames(ffmpeg_exe, fake_gpu, tiny_model, cache_home, tmp_path,
                                                              frames, batch):
    """VP9 goes through DALI (its CPU pipeline on the fake device): the engine reads each
    DALI batch in place, which the stages keep alive until its masks are copied out.
    Frame for frame, the matte is the upsizing graph's mask of DALI's own frames, read
    here separately; a batch freed, reused or put out of order too early would differ."""
    import onnxruntime as ort
    from trt_matte.build_engine.matte_graph import frame_shape_input
    from trt_matte.media.dali_video import DaliFrameReader

    source = make_clip(ffmpeg_exe, tmp_path / "clip.webm", size="200x120", frames=frames, codec="libvpx-vp9")
    notes: list[str] = []
    gpu = matte_video(source, tmp_path / "gpu.mkv", fake_gpu(batch), progress=False, crf=0, announce=notes.append)
    assert notes == [] and gpu.frames == frames
    dali_frames = np.concatenate([batch.host_array() for batch in DaliFrameReader(source, frames, 3, None).batches()])
    upsizing = ort.InferenceSession(str(matte_graph_path(tiny_model, cache_home, upsize=True)),
                                    providers=["CPUExecutionProvider"])
    expected = upsizing.run(None, {"rgb": dali_frames, "frame_shape": frame_shape_input(120, 200)})[0]
    # crf 0 on 4:4:4 gray is lossless up to the full-range conversion's rounding.
    assert mean_abs_error(decode_gray(ffmpeg_exe, gpu.output), expected) <= 0.6
    assert packet_times(gpu.output) == pytest.approx(packet_times(source), abs=1e-6)


def test_the_real_model_on_the_fake_device_matches_the_cpu_matte(ffmpeg_exe, carphone_path, u2netp_path, cache_home,
                                                                 cpu_backend, tmp_path):
    backend = FakeGpuBackend(matte_graph_path(u2netp_path, cache_home),
                             matte_graph_path(u2netp_path, cache_home, upsize=True), batch=8)
    try:
        gpu, cpu, _ = matte_both_ways(carphone_path, backend, cpu_backend, tmp_path)
    finally:
        backend.close()
    assert_close_mattes(ffmpeg_exe, gpu.output, cpu.output, 120)


def test_one_slot_is_enough_because_slots_come_back_only_from_the_writer(ffmpeg_exe, fake_gpu, tiny_backend,
                                                                        tmp_path, monkeypatch):
    """With a single slot, inference must wait until the writer hands it back; reusing it
    earlier (as a fixed ring would) overwrites masks the writer has not written yet."""
    monkeypatch.setattr(gpu_video, "SLOTS", 1)
    source = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", size="160x96", frames=20)
    gpu, cpu, _ = matte_both_ways(source, fake_gpu(3), tiny_backend, tmp_path)
    np.testing.assert_array_equal(decode_gray(ffmpeg_exe, gpu.output), decode_gray(ffmpeg_exe, matte_video(
        source, tmp_path / "gpu-again.mp4", fake_gpu(20), progress=False, crf=0).output))
    assert_close_mattes(ffmpeg_exe, gpu.output, cpu.output, 20)


def test_an_engine_failure_mid_run_leaves_nothing_and_frees_everything(ffmpeg_exe, fake_gpu, tmp_path):
    source = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", frames=30)
    with pytest.raises(MatteError, match="simulated engine failure"):
        matte_video(source, tmp_path / "out.mp4", fake_gpu(4, fail_on_call=3), progress=False)
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"] and leftovers(tmp_path) == []
    assert not [command for command in child_processes(os.getpid()).values() if "ffmpeg" in command]


def test_frames_beyond_the_engines_limit_fail_before_any_allocation(ffmpeg_exe, fake_gpu, tmp_path):
    source = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", size="320x240", frames=3)
    before = fake_cuda.live_allocations()
    with pytest.raises(MatteError, match="320x240 exceed this engine's limit of 256"):
        matte_video(source, tmp_path / "out.mp4", fake_gpu(4, max_frame_side=256), progress=False)
    assert fake_cuda.live_allocations() == before + 1  # the backend's own input buffer, no stage's


def test_a_stalled_encoder_is_stopped_before_the_slots_are_freed(ffmpeg_exe, fake_gpu, tmp_path, monkeypatch):
    """The writer is blocked in a pipe write from a slot's pinned memory when the stall is
    detected: the encoder is killed first, the writer ends, and only then are the slots
    freed (the fake ledger would raise on a use after free)."""
    monkeypatch.setattr(stages, "STALL_SECONDS", 1.0)
    source = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", size="320x240", frames=400)
    stopped: dict[str, int] = {}

    def stop_the_encoder() -> None:
        stopped["pid"] = wait_for_child(os.getpid(), "pipe:0")
        os.kill(stopped["pid"], signal.SIGSTOP)

    stopper = threading.Thread(target=stop_the_encoder, daemon=True)
    stopper.start()
    with pytest.raises(MatteError, match="no progress for 1 s while writing the outputs"):
        matte_video(source, tmp_path / "out.mp4", fake_gpu(8), progress=False)
    stopper.join(5)
    assert "pid" in stopped and not alive(stopped["pid"])
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]


class _InvertsAfter(FakeGpuBackend):
    """The fake engine whose host path (the one the guard's checks use) inverts its masks
    after ``good_calls`` calls: a reduced graph that breaks on later footage."""

    precision = "int8"

    def __init__(self, *args, good_calls: int | None = None, **options):
        super().__init__(*args, **options)
        self._good_calls = good_calls
        self.host_calls = 0

    def run(self, rgb_batch: np.ndarray) -> np.ndarray:
        self.host_calls += 1
        masks = super().run(rgb_batch)
        return 255 - masks if self._good_calls is not None and self.host_calls > self._good_calls else masks


@pytest.fixture
def guarded_run(tiny_model, cache_home, monkeypatch):
    """A spot check every 5 frames, whatever it costs; the reference reports top probabilities."""
    from trt_matte.engine.onnxruntime_backend import OnnxRuntimeBackend
    from trt_matte.runtime import guard as guard_module
    monkeypatch.setattr(guard_module, "SPOT_CHECK_EVERY", 5)
    monkeypatch.setattr(guard_module, "SPOT_CHECK_BUDGET", float("inf"))
    monkeypatch.setattr(guard_module, "MIN_SPOT_FRAMES", 1)
    reference = OnnxRuntimeBackend(matte_graph_path(tiny_model, cache_home, peaks=True), device="cpu")
    made = []

    def run(source, output, good_calls=None):
        backend = _InvertsAfter(matte_graph_path(tiny_model, cache_home),
                                matte_graph_path(tiny_model, cache_home, upsize=True), 4, good_calls=good_calls)
        made.append(backend)
        notes: list[str] = []
        guard = guard_module.PrecisionGuard(reference, False, notes.append)
        checked: list[np.ndarray] = []
        check = guard.check
        monkeypatch.setattr(guard, "check", lambda rgb, mask: (checked.append(rgb.copy()), check(rgb, mask)))
        result = matte_video(source, output, backend, progress=False, crf=0, guard=guard, announce=notes.append)
        return result, notes, checked

    before = fake_cuda.live_allocations()
    yield run
    for backend in made:
        backend.close()
    assert fake_cuda.live_allocations() == before


@pytest.mark.skipif(not dali_available(), reason="needs DALI (the test extra installs it)")
def test_spot_checks_on_the_gpu_path_see_the_frames_dali_decoded(ffmpeg_exe, guarded_run, tmp_path):
    from trt_matte.media.dali_video import DaliFrameReader
    source = make_clip(ffmpeg_exe, tmp_path / "clip.webm", size="200x120", frames=20, codec="libvpx-vp9")
    result, notes, checked = guarded_run(source, tmp_path / "gpu.mkv")
    assert notes == [] and result.precision == "int8" and result.frames == 20
    assert result.checked_frames == 6 + 4 and result.precision_check.iou == 1.0
    dali_frames = np.concatenate([batch.host_array() for batch in DaliFrameReader(source, 20, 4, None).batches()])
    np.testing.assert_array_equal(np.stack(checked), dali_frames[[4, 9, 14, 19]])


def test_a_gpu_run_whose_spot_checks_fail_is_written_again_in_fp32(ffmpeg_exe, guarded_run, tiny_backend, tmp_path):
    source = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", size="200x120", frames=20)
    # Good for the 6 frames checked before writing, broken from the first spot check on.
    result, notes, checked = guarded_run(source, tmp_path / "out.mp4", good_calls=6)
    assert result.precision == "fp32" and len(checked) == 1
    assert [note for note in notes if "FP32" in note] and "writing the outputs again in FP32" in notes[-1]
    cpu = matte_video(source, tmp_path / "cpu.mp4", tiny_backend, progress=False, crf=0)
    assert mean_abs_error(decode_gray(ffmpeg_exe, result.output), decode_gray(ffmpeg_exe, cpu.output)) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["clip.mp4", "cpu.mp4", "out.mp4"]


@pytest.mark.skipif(not dali_available(), reason="needs DALI (the test extra installs it)")
def test_a_part_of_a_vp9_clip_goes_to_ffmpegs_seek_and_matches_the_cpu_path(ffmpeg_exe, fake_gpu, tiny_backend,
                                                                              tmp_path):
    """DALI walks the whole file, so a part is decoded by ffmpeg, which seeks to it."""
    source = make_clip(ffmpeg_exe, tmp_path / "clip.webm", size="160x96", frames=40, codec="libvpx-vp9")
    gpu, cpu, notes = matte_both_ways(source, fake_gpu(4), tiny_backend, tmp_path, start=0.5, end=1.2)
    assert gpu.frames == cpu.frames == 17  # 25 fps: frames 13 (0.52 s) to 29 (1.16 s)
    assert any("only a part of the clip is matted" in note for note in notes)
    assert_close_mattes(ffmpeg_exe, gpu.output, cpu.output, 17)
    assert packet_times(gpu.output)[0] == pytest.approx(0.02, abs=1e-6)
