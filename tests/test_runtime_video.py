"""The video pipeline: frame-exact, timestamp-exact mattes that match rembg."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import (ExplodingBackend, alive, child_processes, decode_gray, decode_rgb, leftovers, make_clip,
                      mask_iou, mean_abs_error, packet_times, rembg_mask, video_size, wait_for_child,
                      with_display_rotation)
from trt_matte.errors import MatteError
from trt_matte.runtime import stages
from trt_matte.runtime.video import matte_video


@pytest.fixture(scope="module")
def default_cpu_backend(u2netp_path, cache_home):
    """What `trt-matte` runs on a CPU: OpenVINO where installed, else ONNX Runtime."""
    from trt_matte.api import BackendRequest, open_backend
    return open_backend(BackendRequest(u2netp_path, cache_home, device="cpu"))


@pytest.mark.slow
@pytest.mark.parametrize("backend_fixture", ["cpu_backend", "default_cpu_backend"])
def test_carphone_matte_matches_rembg(ffmpeg_exe, carphone_path, backend_fixture, rembg_session, tmp_path, request):
    backend = request.getfixturevalue(backend_fixture)
    result = matte_video(carphone_path, tmp_path / "carphone.matte.mp4", backend, progress=False)
    matte = decode_gray(ffmpeg_exe, result.output)
    frames = decode_rgb(ffmpeg_exe, carphone_path)
    assert matte.shape == frames.shape[:3] == (120, 144, 176)
    ious, errors = [], []
    for index in range(0, len(frames), 4):
        reference = rembg_mask(rembg_session, frames[index])
        ious.append(mask_iou(matte[index], reference))
        errors.append(mean_abs_error(matte[index], reference))
    # Measured: IoU 0.988, MAE 1.3/255 on this 176x144 clip after the H.264 round trip.
    assert np.mean(ious) >= 0.98
    assert np.mean(errors) <= 2.0
    assert packet_times(result.output) == packet_times(carphone_path)
    with av.open(str(result.output)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.color_range == 2  # full range (pc)
        assert stream.sample_aspect_ratio == Fraction(128, 117)  # carphone's non-square pixels


@pytest.mark.parametrize("frames,batch", [(1, 2), (13, 4), (24, 7), (10, 16)])
def test_frame_count_is_exact_for_any_batch(ffmpeg_exe, tiny_backend, tmp_path, frames, batch):
    source = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", frames=frames)
    result = matte_video(source, None, tiny_backend, batch_size=batch, progress=False)
    assert result.output == tmp_path / "clip.matte.mp4"
    assert len(decode_gray(ffmpeg_exe, result.output)) == frames
    assert packet_times(result.output) == pytest.approx(packet_times(source), abs=1e-6)


def test_odd_size(ffmpeg_exe, tiny_backend, tmp_path):
    source = make_clip(ffmpeg_exe, tmp_path / "odd.mp4", size="176x144", frames=6, pix_fmt="yuv444p",
                       extra_output=["-vf", "format=yuv444p,crop=175:143:0:0"])
    assert video_size(ffmpeg_exe, source) == (175, 143)
    result = matte_video(source, tmp_path / "odd.matte.mp4", tiny_backend, progress=False)
    assert video_size(ffmpeg_exe, result.output) == (175, 143)
    assert len(decode_gray(ffmpeg_exe, result.output)) == 6


def test_matte_follows_the_picture(ffmpeg_exe, tiny_backend, tmp_path):
    """The tiny model's mask is the picture's brightness: the matte must line up with it."""
    source = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", size="320x240", frames=5)
    matte = decode_gray(ffmpeg_exe, matte_video(source, None, tiny_backend, progress=False).output)
    brightness = decode_rgb(ffmpeg_exe, source).mean(axis=3)
    for mask, light in zip(matte, brightness):
        assert np.corrcoef(mask.ravel(), light.ravel())[0, 1] > 0.9


def test_rotated_source_gets_a_matte_in_display_orientation(ffmpeg_exe, tiny_backend, tmp_path):
    upright = make_clip(ffmpeg_exe, tmp_path / "upright.mp4", size="320x240", frames=4)
    rotated = with_display_rotation(ffmpeg_exe, upright, tmp_path / "rotated.mp4", 90)
    matte = decode_gray(ffmpeg_exe, matte_video(rotated, None, tiny_backend, progress=False).output)
    shown = decode_rgb(ffmpeg_exe, rotated)  # ffmpeg applies the rotation, as players do
    assert matte.shape[1:] == shown.shape[1:3] == (320, 240)
    with av.open(str(tmp_path / "rotated.matte.mp4")) as container:
        first = next(container.decode(video=0))
        assert first.rotation == 0
    for mask, picture in zip(matte, shown):
        assert np.corrcoef(mask.ravel(), picture.mean(axis=2).ravel())[0, 1] > 0.9


def test_vp9_webm_source(ffmpeg_exe, tiny_backend, tmp_path):
    source = make_clip(ffmpeg_exe, tmp_path / "clip.webm", codec="libvpx-vp9", frames=9)
    result = matte_video(source, tmp_path / "out.mp4", tiny_backend, batch_size=2, progress=False)
    assert len(decode_gray(ffmpeg_exe, result.output)) == 9
    assert packet_times(result.output) == pytest.approx(packet_times(source), abs=1e-6)


def test_failure_mid_run_leaves_no_output(ffmpeg_exe, tiny_backend, tmp_path):
    source = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", frames=20)
    with pytest.raises(MatteError, match="simulated"):
        matte_video(source, tmp_path / "out.mp4", ExplodingBackend(tiny_backend), progress=False)
    assert not (tmp_path / "out.mp4").exists()
    assert leftovers(tmp_path) == []


def test_existing_output_is_replaced_only_on_success(ffmpeg_exe, tiny_backend, tmp_path):
    source = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", frames=8)
    target = tmp_path / "out.mp4"
    target.write_bytes(b"previous result")
    with pytest.raises(MatteError):
        matte_video(source, target, ExplodingBackend(tiny_backend), progress=False, overwrite=True)
    assert target.read_bytes() == b"previous result"
    notes: list[str] = []
    kept = matte_video(source, target, tiny_backend, progress=False, announce=notes.append)
    assert (kept.frames, kept.outputs, kept.kept) == (0, {}, {"matte": target}) and len(notes) == 1
    assert target.read_bytes() == b"previous result"
    matte_video(source, target, tiny_backend, progress=False, overwrite=True)
    assert len(decode_gray(ffmpeg_exe, target)) == 8


def test_mpegts_start_offset_is_exact_in_mp4(ffmpeg_exe, tiny_backend, tmp_path):
    # MPEG-TS starts at ~1.4 s in a 1/90000 time base; the default MP4 movie timescale
    # (1/1000) would round that offset.
    source = make_clip(ffmpeg_exe, tmp_path / "clip.ts", frames=8)
    assert packet_times(source)[0] > 1.0
    result = matte_video(source, tmp_path / "clip.matte.mp4", tiny_backend, progress=False)
    assert packet_times(result.output) == packet_times(source)


def test_raw_elementary_stream_without_timestamps(ffmpeg_exe, tiny_backend, tmp_path):
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", frames=10)
    raw = tmp_path / "clip.h264"
    subprocess.run([ffmpeg_exe, "-v", "error", "-i", str(clip), "-c", "copy", "-bsf:v", "h264_mp4toannexb",
                    str(raw)], check=True)
    result = matte_video(raw, None, tiny_backend, progress=False)
    assert len(decode_gray(ffmpeg_exe, result.output)) == 10
    assert np.diff(packet_times(result.output)) == pytest.approx([0.04] * 9, abs=1e-3)


def test_unsupported_output_suffix(ffmpeg_exe, tiny_backend, tmp_path):
    source = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", frames=2)
    with pytest.raises(MatteError, match="written as"):
        matte_video(source, tmp_path / "matte.avi", tiny_backend, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]


def audio_durations(path: Path) -> list[tuple[str, float]]:
    with av.open(str(path)) as container:
        return [(stream.codec_context.name, float(stream.duration * stream.time_base))
                for stream in container.streams.audio]


@pytest.mark.parametrize("codec,suffix,expected", [
    ("aac", ".mp4", "aac"), ("pcm_s16le", ".mp4", "pcm_s16le"),  # copied as they are
    ("libopus", ".mov", "aac"), ("flac", ".mov", "aac"),  # MOV cannot hold them: re-encoded
])
def test_source_audio_is_kept(ffmpeg_exe, tiny_backend, tmp_path, codec, suffix, expected):
    clip = make_clip(ffmpeg_exe, tmp_path / "video.mp4", frames=25)
    source = tmp_path / "with_audio.mkv"
    subprocess.run([ffmpeg_exe, "-v", "error", "-i", str(clip), "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
                    "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", codec, str(source)], check=True)
    result = matte_video(source, tmp_path / f"matte{suffix}", tiny_backend, progress=False)
    ((name, seconds),) = audio_durations(result.output)
    assert name == expected
    assert seconds == pytest.approx(1.0, abs=0.05)
    assert len(decode_gray(ffmpeg_exe, result.output)) == 25
    assert packet_times(result.output) == pytest.approx(packet_times(source), abs=1e-3)


def test_smoothing_keeps_every_frame_and_its_time(ffmpeg_exe, tiny_backend, tmp_path):
    source = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", frames=13)
    plain = matte_video(source, tmp_path / "plain.mp4", tiny_backend, batch_size=3, progress=False)
    smooth = matte_video(source, tmp_path / "smooth.mp4", tiny_backend, batch_size=3, progress=False, smooth=2)
    plain_matte, smooth_matte = decode_gray(ffmpeg_exe, plain.output), decode_gray(ffmpeg_exe, smooth.output)
    assert len(smooth_matte) == len(plain_matte) == 13
    assert packet_times(smooth.output) == packet_times(plain.output)
    assert not np.array_equal(smooth_matte, plain_matte)  # the filter really ran
    assert np.mean([mask_iou(a, b) for a, b in zip(smooth_matte, plain_matte)]) >= 0.9


@pytest.mark.parametrize("stalled_pipe,stage", [("pipe:0", "writing the outputs"), ("pipe:1", "reading frames")],
                         ids=["encoder-stops-reading", "decoder-stops-writing"])
def test_a_stalled_ffmpeg_ends_the_run_with_one_line_and_no_child_left(ffmpeg_exe, tiny_backend, tmp_path, monkeypatch,
                                                                        stalled_pipe, stage):
    """An ffmpeg child that stops (SIGSTOP: it neither reads nor writes its pipe) must not
    hang the run: after STALL_SECONDS the run ends with one line naming the stalled
    stage, both ffmpeg children are gone and no output or temporary file is left."""
    monkeypatch.setattr(stages, "STALL_SECONDS", 1.0)
    clip = make_clip(ffmpeg_exe, tmp_path / "in.mp4", size="320x240", frames=600)
    stopped: dict[str, int] = {}

    def stop_the_child() -> None:
        stopped["pid"] = wait_for_child(os.getpid(), stalled_pipe)
        os.kill(stopped["pid"], signal.SIGSTOP)

    stopper = threading.Thread(target=stop_the_child, daemon=True)
    stopper.start()
    started = time.monotonic()
    with pytest.raises(MatteError) as failure:
        matte_video(clip, tmp_path / "out.mp4", tiny_backend, progress=False)
    elapsed = time.monotonic() - started
    stopper.join(5)
    assert "pid" in stopped, "the scenario needs the ffmpeg child stopped before the run ended"
    assert str(failure.value).startswith(f"no progress for 1 s while {stage}")
    assert "\n" not in str(failure.value)
    assert elapsed < 1.0 + 5.0
    assert not alive(stopped["pid"])
    assert not [command for command in child_processes(os.getpid()).values() if "ffmpeg" in command]
    assert sorted(os.listdir(tmp_path)) == ["in.mp4"]


def test_a_bad_smoothing_strength_fails_before_any_process_starts(ffmpeg_exe, tiny_backend, tmp_path):
    source = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", frames=3)
    with pytest.raises(ValueError, match="smoothing strength"):
        matte_video(source, tmp_path / "out.mp4", tiny_backend, progress=False, smooth=-1)
    assert not [command for command in child_processes(os.getpid()).values() if "ffmpeg" in command]
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]


def test_frames_sharing_a_time_are_refused_for_mp4_before_any_work_and_kept_in_matroska(ffmpeg_exe, tiny_backend,
                                                                                          tmp_path):
    """An encoder left at its 1/25 time base rounds a 50 fps stretch onto shared times:
    MP4 cannot hold that (its muxer refuses), Matroska can."""
    retimed = "settb=1/1000,setpts='(if(lt(N,10),N*0.04,0.4+(N-10)*0.02))/TB'"
    source = make_clip(ffmpeg_exe, tmp_path / "shared.mp4", frames=30, extra_output=["-vf", retimed,
                                                                                     "-fps_mode", "passthrough"])
    times = packet_times(source)
    assert len(set(times)) < len(times) == 30
    with pytest.raises(MatteError, match=r"share their time with another, which \.mp4 cannot hold; write Matroska"):
        matte_video(source, tmp_path / "out.mp4", tiny_backend, progress=False)
    assert leftovers(tmp_path) == [] and not (tmp_path / "out.mp4").exists()
    kept = matte_video(source, tmp_path / "out.mkv", tiny_backend, progress=False)
    assert kept.frames == 30 and packet_times(kept.output) == pytest.approx(times, abs=1e-3)
