"""The DALI reader: every frame once, in order, in display orientation, resized like ffmpeg.

Runs DALI on the CPU (device_id=None) with VP9 clips, which its CPU decoder reads; the
GPU variant (NVDEC) runs only where a GPU is visible.
"""
from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nvidia.dali")

from conftest import make_clip, mask_iou, mean_abs_error, with_display_rotation  # noqa: E402
from trt_matte.errors import MatteError  # noqa: E402
from trt_matte.media.dali_video import (  # noqa: E402
    DaliFrameReader, _leading_real_frames, rgb_correction, unsupported_reason)
from trt_matte.media.probe import probe_video  # noqa: E402
from trt_matte.media.frame_reader import FrameReader  # noqa: E402

FAST_VP9 = ["-deadline", "realtime", "-cpu-used", "8"]


def vp9_clip(ffmpeg: str, target: Path, **options) -> Path:
    extra_output = [*FAST_VP9, *options.pop("extra_output", [])]
    return make_clip(ffmpeg, target, codec="libvpx-vp9", extra_output=extra_output, **options)


def read_dali(source: Path, batch_size: int, device_id: int | None = None):
    reader = DaliFrameReader(source, probe_video(source).frame_count, batch_size, device_id)
    batches = list(reader.batches())
    reader.close()
    # Read after the whole pass and the pipeline's release: yielded batches stay valid.
    return reader, batches, np.concatenate([batch.host_array() for batch in batches])


def read_ffmpeg(source: Path) -> np.ndarray:
    reader = FrameReader(source)
    try:
        return np.concatenate(list(reader.batches(16)))
    finally:
        reader.kill()


def distances(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Mean absolute difference of every frame of ``first`` to every frame of ``second``."""
    second = second.astype(np.int16)
    return np.stack([np.abs(second - frame.astype(np.int16)).mean(axis=(1, 2, 3)) for frame in first])


def assert_same_frames(dali: np.ndarray, ffmpeg: np.ndarray, max_error: float) -> None:
    """Frame i of DALI is ffmpeg's frame i: closest to it, close in value, far from i +- 1."""
    assert dali.shape == ffmpeg.shape
    table = distances(dali, ffmpeg)
    for index, row in enumerate(table):
        assert row.argmin() == index
        assert row[index] <= max_error
        for neighbour in (index - 1, index + 1):
            if 0 <= neighbour < len(row):
                assert row[index] < 0.75 * row[neighbour]


# Mean |difference| per channel level, measured: 3.8-4.3 at 160x120 (an upscale, where the
# two decoders' 4:2:0 -> RGB chroma interpolation shows), 2.7-2.9 at 321x241, 0.9 at 1280x720.
@pytest.mark.parametrize("size,frames,batch,max_error", [
    ("160x120", 25, 4, 5.0), ("321x241", 7, 8, 3.5), ("1280x720", 1, 3, 1.5)])
def test_frames_match_the_ffmpeg_reader(ffmpeg_exe, tmp_path, size, frames, batch, max_error):
    source = vp9_clip(ffmpeg_exe, tmp_path / f"clip_{size}.webm", size=size, frames=frames)
    reader, batches, dali = read_dali(source, batch)
    assert [item.frames for item in batches] == [min(batch, frames - start) for start in range(0, frames, batch)]
    for item in batches:
        assert item.rgb.shape() == [batch, 1, 320, 320, 3]
        assert np.from_dlpack(item.rgb).dtype == np.uint8
    assert reader.frames_read == frames
    assert_same_frames(dali, read_ffmpeg(source), max_error)


@pytest.mark.parametrize("numbers,first,real", [
    ([0, 1, 2, 3], 0, 4),
    ([24, 24, 24, 24], 24, 1),   # pad_last_batch repeats the last sample
    ([5, 6, -1, -1], 5, 2),      # pad_mode="constant" frames are -1
    ([24, 0, 1, 2], 24, 1),      # wrapped into the next epoch
    ([-1, -1], 25, 0)])
def test_padding_and_next_epoch_are_never_frames(numbers, first, real):
    assert _leading_real_frames(numbers, first, Path("clip.webm")) == real


@pytest.mark.parametrize("numbers,first", [([3], 2), ([5, -1, 6], 5), ([1, 0], 0)])
def test_skipped_or_reordered_frames_fail(numbers, first):
    with pytest.raises(MatteError, match="DALI returned frame"):
        _leading_real_frames(numbers, first, Path("clip.webm"))


def test_variable_frame_rate_yields_every_frame_once(ffmpeg_exe, tmp_path):
    # 25 fps for 10 frames, then 10 fps, then 50 fps.
    retimed = "settb=1/1000,setpts='(if(lt(N,10),N*0.04,if(lt(N,20),0.4+(N-10)*0.1,1.4+(N-20)*0.02)))/TB'"
    source = vp9_clip(ffmpeg_exe, tmp_path / "vfr.webm", size="320x240", frames=30,
                      extra_output=["-vf", retimed, "-fps_mode", "passthrough", "-enc_time_base", "1:1000"])
    pts = probe_video(source).frame_pts
    assert {round(gap, -1) for gap in np.diff(pts).tolist()} == {20, 40, 100}  # ms, +-1 from rounding
    _, batches, dali = read_dali(source, 4)
    assert sum(item.frames for item in batches) == 30
    assert_same_frames(dali, read_ffmpeg(source), 4.0)


@pytest.mark.parametrize("rotation,quarter_turns", [(90, 1), (-90, 3), (180, 2)])
def test_rotated_source_comes_out_in_display_orientation(ffmpeg_exe, tmp_path, rotation, quarter_turns):
    upright = vp9_clip(ffmpeg_exe, tmp_path / "upright.mp4", size="320x240", frames=4)
    rotated = with_display_rotation(ffmpeg_exe, upright, tmp_path / "rotated.mp4", rotation)
    _, _, stored = read_dali(upright, 3)
    _, _, shown = read_dali(rotated, 3)
    # The same decoded pixels, turned exactly as np.rot90 turns them ...
    np.testing.assert_array_equal(shown, np.rot90(stored, quarter_turns, axes=(1, 2)))
    # ... which is the way ffmpeg's autorotation (the ffmpeg reader) shows them.
    assert_same_frames(shown, read_ffmpeg(rotated), 3.5)


def test_mirrored_sources_are_left_to_the_ffmpeg_reader(ffmpeg_exe, tmp_path):
    upright = vp9_clip(ffmpeg_exe, tmp_path / "upright.mp4", size="320x240", frames=2)
    for degrees in (0, 90):
        # PyAV reports a plain flip as a turn by -180 degrees: the display matrix itself tells.
        mirrored = with_display_rotation(ffmpeg_exe, upright, tmp_path / f"mirrored{degrees}.mp4", degrees, True)
        assert unsupported_reason(mirrored, device_id=0) == "the picture is displayed mirrored"
        with pytest.raises(MatteError, match="displayed mirrored"):
            DaliFrameReader(mirrored, 2, 2, device_id=None)
    turned = with_display_rotation(ffmpeg_exe, upright, tmp_path / "turned.mp4", 180)
    assert unsupported_reason(turned, device_id=0) is None


def _colour_clip(ffmpeg: str, target: Path, tags: list[str], full_range: bool = False) -> Path:
    # Saturation lowered so that every colour lies within both matrices' gamuts.
    scale = ",scale=out_range=full" if full_range else ""
    return vp9_clip(ffmpeg, target, size="640x360", frames=6,
                    extra_output=["-vf", f"eq=saturation=0.6{scale}", *tags])


@pytest.mark.parametrize("full_range", [False, True])
def test_bt709_sources_get_the_colours_ffmpeg_gives_them(ffmpeg_exe, tmp_path, full_range):
    """DALI converts YUV with BT.601's matrix whatever the stream says; ffmpeg follows the
    tag. Uncorrected, this clip's 320x320 frames differ from ffmpeg's by 10 levels."""
    range_tags = ["-color_range", "pc"] if full_range else []
    tagged = _colour_clip(ffmpeg_exe, tmp_path / "bt709.webm", ["-colorspace", "bt709", *range_tags], full_range)
    untagged = _colour_clip(ffmpeg_exe, tmp_path / "untagged.webm", range_tags, full_range)
    errors = {}
    for name, source in (("tagged", tagged), ("untagged", untagged)):
        _, _, dali = read_dali(source, 4)
        errors[name] = np.abs(dali.astype(np.int16) - read_ffmpeg(source)).mean()
    # What is left is DALI's own chroma upsampling, as on untagged (BT.601) streams.
    assert errors["tagged"] <= min(3.0, errors["untagged"] + 0.3)


def test_colour_corrections_turn_bt601_into_each_matrix():
    assert rgb_correction(2) is None and rgb_correction(5) is None and rgb_correction(6) is None
    # The published BT.601 YCbCr -> RGB coefficients, independent of the code's own table.
    bt601 = np.array([[1, 0, 1.402], [1, -0.344136, -0.714136], [1, 1.772, 0]])
    for colorspace, (kr, kb) in ((1, (0.2126, 0.0722)), (9, (0.2627, 0.0593))):
        correction = rgb_correction(colorspace)
        np.testing.assert_allclose(correction @ [100.0, 100.0, 100.0], [100.0, 100.0, 100.0], atol=1e-9)
        # The stream's pure red, pure green and pure blue, decoded as DALI does, come back pure.
        for primary in np.eye(3):
            luma = kr * primary[0] + (1 - kr - kb) * primary[1] + kb * primary[2]
            ycbcr = [luma, (primary[2] - luma) / (2 * (1 - kb)), (primary[0] - luma) / (2 * (1 - kr))]
            np.testing.assert_allclose(correction @ (bt601 @ ycbcr), primary, atol=1e-4)


def test_colour_matrices_dali_cannot_convert_are_left_to_ffmpeg(ffmpeg_exe, tmp_path):
    source = make_clip(ffmpeg_exe, tmp_path / "ycgco.mp4", frames=2,
                       extra_output=["-bsf:v", "h264_metadata=matrix_coefficients=8"])  # YCgCo
    assert "colour matrix" in unsupported_reason(source, device_id=0)


def test_truncated_file_fails(ffmpeg_exe, tmp_path):
    whole = vp9_clip(ffmpeg_exe, tmp_path / "whole.webm", size="320x240", frames=40)
    truncated = tmp_path / "truncated.webm"
    truncated.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    with pytest.raises(MatteError, match="DALI indexes .* frames but the container lists 40"):
        DaliFrameReader(truncated, probe_video(whole).frame_count, 8, None)


def test_frame_count_mismatch_fails(ffmpeg_exe, tmp_path):
    source = vp9_clip(ffmpeg_exe, tmp_path / "clip.webm", frames=5)
    with pytest.raises(MatteError, match="DALI indexes 5 frames but the container lists 6"):
        DaliFrameReader(source, 6, 4, None)


def test_frames_before_time_zero_are_caught(ffmpeg_exe, tmp_path):
    """DALI drops packets with negative timestamps, which ffmpeg and players show."""
    clip = vp9_clip(ffmpeg_exe, tmp_path / "clip.webm", frames=25)
    early = tmp_path / "early.mp4"
    subprocess.run([ffmpeg_exe, "-v", "error", "-i", str(clip), "-c", "copy", "-avoid_negative_ts", "disabled",
                    "-output_ts_offset", "-0.1", str(early)], check=True)
    assert probe_video(early).frame_count == 25
    with pytest.raises(MatteError, match="DALI indexes 22 frames but the container lists 25"):
        DaliFrameReader(early, 25, 4, None)


def test_unreadable_inputs_fail(ffmpeg_exe, tmp_path):
    garbage = tmp_path / "garbage.webm"
    garbage.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(MatteError, match="not a readable video"):
        DaliFrameReader(garbage, 1, 4, None)
    h264 = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", frames=3)
    with pytest.raises(MatteError, match="CPU decoder does not decode h264"):
        DaliFrameReader(h264, 3, 4, None)


def test_what_nvdec_takes(ffmpeg_exe, tmp_path):
    assert unsupported_reason(vp9_clip(ffmpeg_exe, tmp_path / "vp9.webm", frames=2), device_id=0) is None
    assert unsupported_reason(make_clip(ffmpeg_exe, tmp_path / "h264.mp4", frames=2), device_id=0) is None
    for pix_fmt in ("yuv444p", "yuv420p10le"):
        source = vp9_clip(ffmpeg_exe, tmp_path / f"{pix_fmt}.webm", frames=2, pix_fmt=pix_fmt)
        assert unsupported_reason(source, device_id=0) == f"NVDEC via DALI takes 8-bit 4:2:0 video, not {pix_fmt}"
    mjpeg = make_clip(ffmpeg_exe, tmp_path / "mjpeg.avi", frames=2, codec="mjpeg", pix_fmt="yuvj420p")
    assert "does not decode mjpeg" in unsupported_reason(mjpeg, device_id=0)


def test_carphone_masks_match_the_ffmpeg_readers(ffmpeg_exe, carphone_path, cpu_backend, tmp_path):
    source = tmp_path / "carphone.webm"
    subprocess.run([ffmpeg_exe, "-v", "error", "-i", str(carphone_path), "-c:v", "libvpx-vp9", "-crf", "10",
                    "-b:v", "0", *FAST_VP9, str(source)], check=True)
    _, _, dali = read_dali(source, 16)
    ffmpeg = read_ffmpeg(source)
    picked = slice(0, None, 15)  # 8 of the 120 frames keep the model's CPU time to seconds
    dali_masks, ffmpeg_masks = cpu_backend.run(dali[picked]), cpu_backend.run(ffmpeg[picked])
    ious = [mask_iou(a, b) for a, b in zip(dali_masks, ffmpeg_masks)]
    # Measured on all 120 frames: mean IoU 0.976 (median 0.991, worst 0.853), MAE 1.8/255;
    # on these 8: 0.975. Fed ffmpeg's RGB, DALI's resize alone gives IoU 0.988 against
    # rembg: the rest is DALI's 4:2:0 -> RGB conversion (bilinear chroma), which differs
    # from ffmpeg's by 1.5 levels on this 176x144 clip, and U²-Net's min-max amplifies it.
    assert np.mean(ious) >= 0.96
    assert np.mean([mean_abs_error(a, b) for a, b in zip(dali_masks, ffmpeg_masks)]) <= 3.0


def _gpu_count() -> int:
    from nvidia.dali import backend
    return backend.GetCUDADeviceCount()


@pytest.mark.gpu
@pytest.mark.skipif(_gpu_count() == 0, reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("size, extra_output, rotation", [
    ("1920x1080", [], 0),  # coded as 1088 lines: NVDEC must crop to the display area
    ("322x242", [], 0),
    ("640x360", ["-vf", "eq=saturation=0.6", "-colorspace", "bt709"], 0),  # the colour correction
    ("320x240", [], 90),  # quarter turns of GPU frames, against ffmpeg's autorotation
])
def test_nvdec_sizes_colours_and_turns_match_the_ffmpeg_reader(ffmpeg_exe, tmp_path, size, extra_output,
                                                                rotation):
    source = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", size=size, frames=6, extra_output=extra_output)
    if rotation:
        source = with_display_rotation(ffmpeg_exe, source, tmp_path / "turned.mp4", rotation)
    _, _, dali = read_dali(source, 4, device_id=0)
    assert_same_frames(dali, read_ffmpeg(source), 6.0)


@pytest.mark.gpu
@pytest.mark.skipif(_gpu_count() == 0, reason="needs an NVIDIA GPU")
def test_nvdec_frames_match_the_ffmpeg_reader(ffmpeg_exe, tmp_path):
    from nvidia.dali.tensors import TensorGPU

    source = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", size="320x240", frames=25)
    _, batches, dali = read_dali(source, 4, device_id=0)
    assert [item.frames for item in batches] == [4] * 6 + [1]
    assert all(isinstance(item.rgb, TensorGPU) and item.rgb.data_ptr() for item in batches)
    assert math.prod(batches[0].rgb.shape()) == 4 * 320 * 320 * 3
    # NVDEC output goes through DALI's own NV12 -> RGB kernel: a looser bound than the CPU's.
    assert_same_frames(dali, read_ffmpeg(source), 6.0)
