"""What probe_video reads from a file: the displayed size (rotation applied), the pixel
shape, and every frame's presentation time, without decoding the whole stream."""
from __future__ import annotations

import subprocess
from fractions import Fraction

import pytest

from conftest import make_clip, packet_times, with_damaged_frames, with_display_rotation
from trt_matte.errors import MatteError
from trt_matte.media.probe import decoded_format, probe_video


def test_frame_times_follow_the_packets(ffmpeg_exe, tmp_path):
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", size="160x120", frames=12)
    info = probe_video(clip)
    assert (info.width, info.height, info.frame_count) == (160, 120, 12)
    assert [float(pts * info.time_base) for pts in info.frame_pts] == pytest.approx(packet_times(clip))
    assert info.average_rate == 25
    assert set(info.frame_durations) == {round(1 / (25 * info.time_base))}
    assert decoded_format(clip) == "yuv420p"


def test_a_quarter_turn_swaps_the_displayed_size(ffmpeg_exe, tmp_path):
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", size="160x120", frames=3)
    turned = with_display_rotation(ffmpeg_exe, clip, tmp_path / "turned.mp4", 90)
    assert (probe_video(turned).width, probe_video(turned).height) == (120, 160)


def test_non_square_pixels_are_reported(ffmpeg_exe, tmp_path):
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", frames=3, extra_output=["-vf", "setsar=4/3"])
    assert probe_video(clip).sample_aspect_ratio == Fraction(4, 3)


def test_an_elementary_stream_without_timestamps_is_timed_by_the_rate(ffmpeg_exe, tmp_path):
    raw = make_clip(ffmpeg_exe, tmp_path / "clip.h264", frames=5, extra_output=["-f", "h264"])
    info = probe_video(raw)
    assert info.frame_count == 5
    assert [later - earlier for earlier, later in zip(info.frame_pts, info.frame_pts[1:])] == [info.frame_durations[0]] * 4


def test_a_first_frame_that_does_not_decode_does_not_hide_the_others(ffmpeg_exe, tmp_path):
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mkv", size="96x64", frames=6, extra_output=["-g", "1"])
    info = probe_video(with_damaged_frames(clip, tmp_path / "damaged.mkv", [0]))
    assert (info.width, info.height, info.frame_count) == (96, 64, 6)


def test_an_index_that_lists_frames_the_file_lacks_is_truncation(ffmpeg_exe, tmp_path):
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", frames=30, extra_output=["-movflags", "+faststart"])
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[:int(clip.stat().st_size * 0.6)])
    with pytest.raises(MatteError, match=r"cut.mp4 is truncated: its index lists 30 frames, the file holds \d+$"):
        probe_video(cut)


def test_the_timing_of_a_subset_of_frames_leaves_no_holes(ffmpeg_exe, tmp_path):
    info = probe_video(make_clip(ffmpeg_exe, tmp_path / "clip.mkv", frames=6))
    kept = info.keeping([info.frame_pts[index] for index in (1, 2, 4)])
    assert kept.frame_pts == tuple(info.frame_pts[index] for index in (1, 2, 4))
    step = info.frame_durations[0]
    assert kept.frame_durations == (step, 2 * step, step)
    with pytest.raises(MatteError, match="do not match"):
        info.keeping([info.frame_pts[2], info.frame_pts[1]])


@pytest.mark.parametrize("make, message", [
    (lambda folder, ffmpeg: folder / "missing.mp4", "no such file"),
    (lambda folder, ffmpeg: folder, "is a folder, not a video; for a folder of pictures: trt-matte images"),
    (lambda folder, ffmpeg: _write(folder / "notes.mp4", b"not a video" * 50), "not a readable video"),
    (lambda folder, ffmpeg: _still(ffmpeg, folder / "still.png"), "still image"),
    (lambda folder, ffmpeg: _tone(ffmpeg, folder / "tone.m4a"), "no video stream"),
], ids=["missing", "directory", "text", "still-image", "audio-only"])
def test_what_is_not_a_video_is_one_line(tmp_path, ffmpeg_exe, make, message):
    with pytest.raises(MatteError, match=message) as failure:
        probe_video(make(tmp_path, ffmpeg_exe))
    assert "\n" not in str(failure.value)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _still(ffmpeg: str, path):
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "1", str(path)],
                   check=True)
    return path


def _tone(ffmpeg: str, path):
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "sine=duration=0.5", "-c:a", "aac", str(path)],
                   check=True)
    return path
