"""calibrate(): deterministic graphs, the stored report checked against FP32, damaged
calibrations redone, and the CLI from calibration to an INT8 matte of a held-out clip
(real U²-Net-p weights there)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import decode_gray, make_clip, mask_iou, mean_abs_error
from trt_matte.calibration.calibrate import calibrate
from trt_matte.calibration.store import REPORT_NAME, int8_network
from trt_matte.errors import MatteError


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trt_matte", *args], capture_output=True, text=True)


def test_same_seed_same_bytes_other_seed_other_frames(tiny_conv_model, tiny_calibration, tmp_path):
    clip, report, folder = tiny_calibration
    again = calibrate(tiny_conv_model, "tiny", [clip], tmp_path / "other-cache", frames=12, seed=1)
    for flavour in ("cpu", "tensorrt"):
        assert (Path(again.folder) / f"network-{flavour}.onnx").read_bytes() == \
            (folder / f"network-{flavour}.onnx").read_bytes()
    other = calibrate(tiny_conv_model, "tiny", [clip], tmp_path / "other-cache", frames=12, seed=2)
    assert other.frames_sha256 != report.frames_sha256 and other.folder != again.folder


def test_report_is_stored_and_checks_against_fp32(tiny_calibration):
    _, report, folder = tiny_calibration
    stored = json.loads((folder / REPORT_NAME).read_text())
    assert stored["calibration_frames"] == 12 and stored["held_back_frames"] == 3 and stored["seed"] == 1
    for flavour in ("cpu", "tensorrt"):
        accuracy = report.accuracy[flavour]
        assert stored["accuracy"][flavour]["iou"] == accuracy.iou
        assert 0.9 <= accuracy.iou_worst <= accuracy.iou <= 1.0  # brightness masks survive 8 bits
        assert 0 <= accuracy.mean_abs_error < 4


def test_a_damaged_calibration_is_redone_not_reused(tiny_conv_model, tiny_calibration, tmp_path):
    clip, report, _ = tiny_calibration
    first = calibrate(tiny_conv_model, "tiny", [clip], tmp_path, frames=12, seed=1)
    (Path(first.folder) / REPORT_NAME).write_text("{not json")
    notes: list[str] = []
    again = calibrate(tiny_conv_model, "tiny", [clip], tmp_path, frames=12, seed=1, announce=notes.append)
    assert again.folder == first.folder and not any("reusing" in note for note in notes)
    assert int8_network(tiny_conv_model, tmp_path, "cpu") == Path(first.folder) / "network-cpu.onnx"
    with pytest.raises(MatteError, match="4 to 2000 frames"):
        calibrate(tiny_conv_model, "tiny", [clip], tmp_path, frames=2)


def test_cli_calibrate_errors_are_one_line(tmp_path, tiny_model, ffmpeg_exe):
    done = _cli("calibrate", str(tmp_path / "nope.mp4"), "--model", str(tiny_model))
    assert done.returncode == 1 and done.stderr.strip().count("\n") == 0
    assert "input not found" in done.stderr and "Traceback" not in done.stderr
    assert _cli("calibrate").returncode == 2  # argparse: inputs are required
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", frames=5)
    done = _cli("video", str(clip), "--precision", "int8", "--model", str(tiny_model), "-q")
    assert done.returncode == 1 and done.stderr.strip().count("\n") == 0
    assert "no INT8 calibration" in done.stderr and "trt-matte calibrate" in done.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["clip.mp4"]  # nothing half-written


@pytest.mark.slow
def test_int8_matte_of_a_held_out_clip_matches_fp32(u2netp_path, carphone_path, ffmpeg_exe, tmp_path):
    """Calibrate on the first half of carphone, matte the second half in INT8 and FP32 on
    the CPU through the real CLI, and compare the mattes read back with ffmpeg."""
    first, second = tmp_path / "first.mp4", tmp_path / "second.mp4"
    for target, window in ((first, "0:60"), (second, "60:120")):
        start, end = window.split(":")
        subprocess.run([ffmpeg_exe, "-v", "error", "-i", str(carphone_path), "-vf",
                        f"select='between(n,{start},{int(end) - 1})',setpts=N/25/TB", "-fps_mode", "passthrough",
                        "-c:v", "libx264",
                        "-crf", "12", str(target)], check=True)
    model = ["--model", str(u2netp_path)]
    done = _cli("calibrate", str(first), "--frames", "24", "--quiet", *model)
    assert done.returncode == 0, done.stderr
    assert "ONNX Runtime (CPU) graph: IoU" in done.stdout and "TensorRT graph: IoU" in done.stdout
    for precision in ("int8", "fp32"):
        done = _cli(str(second), "--precision", precision, "--backend", "onnxruntime", "-q", *model,
                    "-o", str(tmp_path / f"{precision}.mp4"))
        assert done.returncode == 0, done.stderr
    int8, fp32 = (decode_gray(ffmpeg_exe, tmp_path / f"{precision}.mp4") for precision in ("int8", "fp32"))
    assert len(int8) == len(fp32) == 60
    ious = [mask_iou(a, b) for a, b in zip(int8, fp32)]
    assert np.mean(ious) >= 0.97, (np.mean(ious), min(ious))
    assert mean_abs_error(int8, fp32) <= 4.0
