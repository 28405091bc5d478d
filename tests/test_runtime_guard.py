"""The reduced-precision guard on real frames: a reduced graph that holds is written as
is, one below the gate is replaced by FP32 before anything is written, one that fails
mid-run is started again in FP32, and --force keeps the reduced precision."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from conftest import decode_gray, make_clip, mean_abs_error
from trt_matte.build_engine.matte_graph import matte_graph_path
from trt_matte.engine.backend import Backend
from trt_matte.engine.onnxruntime_backend import OnnxRuntimeBackend
from trt_matte.runtime import guard as guard_module
from trt_matte.runtime.guard import (LOW_CONFIDENCE_PEAK, PRECHECK_FRAMES, PrecisionGuard, check_line,
                                     spread_frame_numbers)
from trt_matte.runtime.video import matte_video


class Reduced(Backend):
    """A stand-in reduced-precision backend: the FP32 backend's masks for the first
    ``good_frames`` frames it mattes, inverted after (a graph that breaks on later footage)."""

    name, device, preferred_batch, precision = "stand-in", "cpu", 1, "int8"

    def __init__(self, fp32: Backend, good_frames: int | None = None):
        self._fp32 = fp32
        self._good_frames = good_frames
        self.frames = 0

    def run(self, rgb_batch: np.ndarray) -> np.ndarray:
        masks = self._fp32.run(rgb_batch)
        self.frames += len(rgb_batch)
        broken = self._good_frames is not None and self.frames > self._good_frames
        return 255 - masks if broken else masks


def _run(clip, output, backend, reference, force=False):
    notes: list[str] = []
    guard = PrecisionGuard(reference, force, notes.append)
    result = matte_video(clip, output, backend, progress=False, guard=guard, announce=notes.append)
    return result, notes


@pytest.fixture(scope="module")
def fp32(tiny_model, cache_home):
    """The guard's reference: its graph also gives each frame's top probability."""
    return OnnxRuntimeBackend(matte_graph_path(tiny_model, cache_home, peaks=True), device="cpu")


@pytest.fixture(scope="module")
def clip(ffmpeg_exe, tmp_path_factory):
    return make_clip(ffmpeg_exe, tmp_path_factory.mktemp("guard") / "clip.mp4", size="160x120", frames=40)


@pytest.fixture(scope="module")
def fp32_matte(ffmpeg_exe, clip, fp32, tmp_path_factory):
    output = tmp_path_factory.mktemp("guard_fp32") / "fp32.mp4"
    matte_video(clip, output, fp32, progress=False)
    return decode_gray(ffmpeg_exe, output)


def test_frames_to_check_are_spread_over_the_clip():
    assert spread_frame_numbers(600) == [50, 150, 250, 350, 450, 550]
    assert spread_frame_numbers(3) == [0, 1, 2]


def test_a_graph_that_holds_is_written_in_its_own_precision(ffmpeg_exe, clip, fp32, fp32_matte, tmp_path,
                                                            monkeypatch):
    monkeypatch.setattr(guard_module, "SPOT_CHECK_EVERY", 10)
    monkeypatch.setattr(guard_module, "SPOT_CHECK_BUDGET", float("inf"))
    result, notes = _run(clip, tmp_path / "out.mp4", Reduced(fp32), fp32)
    assert result.precision == "int8" and notes == []
    assert result.checked_frames == PRECHECK_FRAMES + 4 and result.precision_check.iou == 1.0
    assert mean_abs_error(decode_gray(ffmpeg_exe, tmp_path / "out.mp4"), fp32_matte) == 0


def test_below_the_gate_before_writing_the_run_is_fp32(ffmpeg_exe, clip, fp32, fp32_matte, tmp_path):
    reduced = Reduced(fp32, good_frames=0)
    result, notes = _run(clip, tmp_path / "out.mp4", reduced, fp32)
    assert result.precision == "fp32" and result.precision_check is None
    assert reduced.frames == PRECHECK_FRAMES  # the reduced graph matted only the checked frames
    assert len(notes) == 1 and "below the gate (IoU 0.97, mean abs error 4/255): running FP32 instead (--force keeps INT8)" in notes[0]
    assert mean_abs_error(decode_gray(ffmpeg_exe, tmp_path / "out.mp4"), fp32_matte) == 0


def test_force_keeps_the_reduced_precision_and_says_so(clip, fp32, tmp_path):
    result, notes = _run(clip, tmp_path / "out.mp4", Reduced(fp32, good_frames=0), fp32, force=True)
    assert result.precision == "int8" and result.precision_check.iou < 0.5
    assert len(notes) == 1 and "--force keeps INT8" in notes[0]


def test_a_graph_that_breaks_mid_run_is_replaced_from_the_first_frame(ffmpeg_exe, clip, fp32, fp32_matte,
                                                                      tmp_path, monkeypatch):
    monkeypatch.setattr(guard_module, "SPOT_CHECK_EVERY", 5)
    monkeypatch.setattr(guard_module, "SPOT_CHECK_BUDGET", float("inf"))
    monkeypatch.setattr(guard_module, "MIN_SPOT_FRAMES", 1)
    # Good for the checked frames and the run's first 20 frames, broken after.
    result, notes = _run(clip, tmp_path / "out.mp4", Reduced(fp32, good_frames=PRECHECK_FRAMES + 20), fp32)
    assert result.precision == "fp32"
    assert len(notes) == 1 and "writing the outputs again in FP32" in notes[0]
    assert mean_abs_error(decode_gray(ffmpeg_exe, tmp_path / "out.mp4"), fp32_matte) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.mp4"]  # the reduced attempt left nothing


@pytest.fixture(scope="module")
def u2netp_backends(u2netp_path, cache_home):
    reduced = OnnxRuntimeBackend(matte_graph_path(u2netp_path, cache_home, "fp16"), device="cpu")
    reduced.precision = "fp16"
    return reduced, OnnxRuntimeBackend(matte_graph_path(u2netp_path, cache_home, peaks=True), device="cpu")


def test_the_fp16_graph_holds_on_a_person(ffmpeg_exe, carphone_path, u2netp_backends, tmp_path, monkeypatch):
    monkeypatch.setattr(guard_module, "SPOT_CHECK_EVERY", 20)
    monkeypatch.setattr(guard_module, "SPOT_CHECK_BUDGET", float("inf"))
    short = tmp_path / "carphone.mp4"
    make_short = ["-v", "error", "-i", str(carphone_path), "-frames:v", "40", "-c:v", "libx264", str(short)]
    subprocess.run([ffmpeg_exe, *make_short], check=True)
    result, notes = _run(short, tmp_path / "out.mp4", *u2netp_backends)
    assert result.precision == "fp16" and notes == []
    assert result.precision_check.iou >= 0.97 and result.precision_check.mean_abs_error <= 2
    assert result.low_confidence_frames == 0  # a person in every frame: top probability 1.00


def test_the_fp16_graph_holds_on_frames_without_a_subject_and_counts_them(ffmpeg_exe, u2netp_backends, tmp_path):
    """A colour gradient: the network is unsure (top probability under 0.1), the frames the
    FP16 graph used to fail on (IoU 0.63 before its sensitive layers stayed FP32)."""
    from test_build_engine_fp16 import GRADIENT
    gradients = tmp_path / "gradients.mp4"
    subprocess.run([ffmpeg_exe, "-v", "error", "-f", "lavfi", "-i", f"gradients=s=320x240:r=10:{GRADIENT}",
                    "-frames:v", "12", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(gradients)], check=True)
    result, notes = _run(gradients, tmp_path / "out.mp4", *u2netp_backends)
    assert result.precision == "fp16" and notes == []
    assert result.precision_check.iou >= 0.97 and not result.precision_check.sparse
    assert result.low_confidence_frames == result.checked_frames == PRECHECK_FRAMES
    line = check_line(result.precision_check, result.checked_frames, result.low_confidence_frames)
    assert line.endswith(f"; {PRECHECK_FRAMES} of them low-confidence (top probability below {LOW_CONFIDENCE_PEAK})")


@pytest.fixture(scope="module")
def u2netp_int8_from_carphone(u2netp_path, carphone_path, tmp_path_factory):
    from pathlib import Path

    from trt_matte.calibration.calibrate import calibrate
    cache = tmp_path_factory.mktemp("int8")
    report = calibrate(u2netp_path, "u2netp", [carphone_path], cache, frames=8)
    reduced = OnnxRuntimeBackend(matte_graph_path(Path(report.folder) / "network-cpu.onnx", cache, "int8"),
                                 device="cpu")
    reduced.precision = "int8"
    return reduced


def test_int8_made_from_a_person_falls_back_on_a_test_pattern(ffmpeg_exe, u2netp_backends,
                                                              u2netp_int8_from_carphone, tmp_path):
    """Calibrated on carphone, INT8 holds there and fails on ffmpeg's test pattern (IoU
    0.70, MAE 24/255 against FP32, measured): the run says so and writes FP32."""
    _, reference = u2netp_backends
    pattern = make_clip(ffmpeg_exe, tmp_path / "pattern.mp4", size="320x240", frames=12)
    result, notes = _run(pattern, tmp_path / "out.mp4", u2netp_int8_from_carphone, reference)
    assert result.precision == "fp32" and result.precision_check is None
    assert len(notes) == 1 and "INT8 against FP32 before writing" in notes[0] and "running FP32 instead" in notes[0]
    fp32_output = tmp_path / "fp32.mp4"
    matte_video(pattern, fp32_output, reference, progress=False)
    assert mean_abs_error(decode_gray(ffmpeg_exe, tmp_path / "out.mp4"), decode_gray(ffmpeg_exe, fp32_output)) == 0


@pytest.mark.parametrize("good_frames, precision_note", [(None, None), (0, "running FP32 instead")])
def test_a_folder_of_images_is_checked_before_writing(synthetic_frames, fp32, tmp_path, good_frames, precision_note):
    from PIL import Image
    from trt_matte.runtime.images import process_images

    photos = tmp_path / "photos"
    photos.mkdir()
    for index, frame in enumerate(synthetic_frames):
        Image.fromarray(frame).save(photos / f"{index}.png")
    notes: list[str] = []
    reduced = Reduced(fp32, good_frames)
    report = process_images(photos, tmp_path / "masks", reduced, progress=False,
                            guard=PrecisionGuard(fp32, False, notes.append), announce=notes.append)
    expected = process_images(photos, tmp_path / "fp32", fp32, progress=False)
    assert report.processed == expected.processed == len(synthetic_frames)
    if precision_note is None:
        assert notes == [] and reduced.frames == PRECHECK_FRAMES + len(synthetic_frames)
    else:
        assert len(notes) == 1 and precision_note in notes[0] and reduced.frames == PRECHECK_FRAMES
    for index in range(len(synthetic_frames)):
        written = np.asarray(Image.open(tmp_path / "masks" / f"{index}.png"))
        np.testing.assert_array_equal(written, np.asarray(Image.open(tmp_path / "fp32" / f"{index}.png")))


def test_int8_on_footage_it_was_not_calibrated_on_gets_a_hint(tiny_conv_model, tiny_calibration, ffmpeg_exe,
                                                              tmp_path, monkeypatch):
    from trt_matte import Matter

    calibrated_clip, _, folder = tiny_calibration
    monkeypatch.setenv("TRT_MATTE_HOME", str(folder.parents[2]))
    other = make_clip(ffmpeg_exe, tmp_path / "other.mp4", size="96x72", frames=8)
    notes: list[str] = []
    with Matter(tiny_conv_model, backend="onnxruntime", precision="int8", announce=notes.append) as matter:
        matter.video(other, tmp_path / "other.matte.mp4")
        hints = [note for note in notes if "calibration was made from" in note]
        assert len(hints) == 1 and f"'trt-matte calibrate {other} --model {tiny_conv_model}'" in hints[0]
        notes.clear()
        matter.video(calibrated_clip, tmp_path / "calibrated.matte.mp4")
        assert not [note for note in notes if "calibration was made from" in note]


def test_a_damaged_stretch_where_a_checked_frame_falls_is_passed_over(ffmpeg_exe, fp32, tmp_path):
    from conftest import with_damaged_frames
    intra = make_clip(ffmpeg_exe, tmp_path / "intra.mkv", size="160x120", frames=40, extra_output=["-g", "1"])
    damaged = with_damaged_frames(intra, tmp_path / "damaged.mkv", list(range(32, 40)))  # the last check lands here
    result, notes = _run(damaged, tmp_path / "out.mp4", Reduced(fp32), fp32)
    assert result.frames == 32 and result.skipped == 8 and result.precision == "int8"
    assert result.checked_frames == PRECHECK_FRAMES - 1 and notes == []


def test_spot_checks_stay_within_their_time_budget(fp32, monkeypatch):
    """A reference slow against the run (a CPU beside a GPU engine) is asked less often
    than one frame in SPOT_CHECK_EVERY: its time stays within SPOT_CHECK_BUDGET of the run's."""
    from types import SimpleNamespace
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(guard_module, "time", SimpleNamespace(monotonic=lambda: clock.now))

    class SlowReference(Backend):
        name, device, preferred_batch = "slow", "cpu", 1

        def run(self, rgb_batch):
            return fp32.run(rgb_batch)

        def run_with_peaks(self, rgb_batch):
            clock.now += 1.0  # a second of FP32 per checked frame
            return fp32.run_with_peaks(rgb_batch)

    guard = PrecisionGuard(SlowReference(), False, lambda note: None)
    frame = np.random.default_rng(0).integers(0, 256, (320, 320, 3), dtype=np.uint8)
    mask = fp32.run(frame[None])[0]
    for _ in range(200):  # 200 s of a run at guard_module.SPOT_CHECK_EVERY frames a second
        clock.now += 1.0
        for _index in guard.due(guard_module.SPOT_CHECK_EVERY):
            guard.check(frame, mask)
    budget_frames = guard_module.SPOT_CHECK_BUDGET * clock.now  # each checked frame costs 1 s
    assert budget_frames - 1 <= guard.checked_frames <= budget_frames + 1
