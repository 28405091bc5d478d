"""ffmpeg's frames on a pipe: every frame once, in order, resized as rembg resizes
(RGB at the source size, then an antialiased Lanczos to 320x320) or whole."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import decode_rgb, decoded_times, make_clip, mean_abs_error, with_damaged_frames
from trt_matte.errors import MatteError
from trt_matte.media.frame_reader import FrameReader, _any_frame_of
from trt_matte.media.probe import probe_video


def test_model_frames_are_the_lanczos_resize_of_the_rgb_frames(ffmpeg_exe, tmp_path):
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", size="176x144", frames=7)
    reader = FrameReader(clip)
    batches = list(reader.batches(3))
    assert [len(batch) for batch in batches] == [3, 3, 1]
    frames = np.concatenate(batches)
    assert reader.frames_read == 7
    pillow = np.stack([np.asarray(Image.fromarray(frame).resize((320, 320), Image.Resampling.LANCZOS))
                       for frame in decode_rgb(ffmpeg_exe, clip)])
    assert frames.shape == (7, 320, 320, 3)
    # swscale's and Pillow's Lanczos differ in rounding and edge handling only.
    assert mean_abs_error(frames, pillow) < 1.5


def test_display_size_gives_whole_frames_as_ffmpeg_decodes_them(ffmpeg_exe, tmp_path):
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", size="98x54", frames=4)
    frames = np.concatenate(list(FrameReader(clip, display_size=(98, 54)).batches(8)))
    np.testing.assert_array_equal(frames, decode_rgb(ffmpeg_exe, clip))


def test_chosen_frames_only_in_their_order(ffmpeg_exe, tmp_path):
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", size="64x48", frames=150)
    every = np.concatenate(list(FrameReader(clip).batches(16)))
    wanted = sorted({0, 3, 77, 149, *range(10, 130, 1)})  # more than ffmpeg takes in a flat sum
    chosen = np.concatenate(list(FrameReader(clip, wanted).batches(16)))
    np.testing.assert_array_equal(chosen, every[wanted])


def test_frames_keep_the_source_timestamps_start_offset_included(ffmpeg_exe, tmp_path):
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mkv", frames=9, extra_output=["-output_ts_offset", "2.023"])
    info = probe_video(clip)
    reader = FrameReader(clip, time_base=info.time_base)
    assert sum(len(batch) for batch in reader.batches(4)) == 9
    assert reader.frame_pts == list(info.frame_pts) and info.frame_pts[0] * info.time_base > 2
    assert reader.delivered_timing(info) is info and reader.concealed == 0


def test_frames_ffmpeg_cannot_decode_are_skipped_as_ffmpeg_skips_them(ffmpeg_exe, tmp_path):
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mkv", frames=20, extra_output=["-g", "1"])
    damaged = with_damaged_frames(clip, tmp_path / "damaged.mkv", [0, 6, 7, 13])
    info = probe_video(damaged)
    reader = FrameReader(damaged, time_base=info.time_base)
    frames = np.concatenate(list(reader.batches(8)))
    timing = reader.delivered_timing(info)
    assert info.frame_count == 20
    expected = decoded_times(ffmpeg_exe, damaged)
    assert len(frames) == timing.frame_count == len(expected) == 16
    assert [float(pts * timing.time_base) for pts in timing.frame_pts] == pytest.approx(expected)
    # Each kept frame lasts until the next one: the timeline has no holes.
    assert all(pts + duration == later for pts, duration, later in
               zip(timing.frame_pts, timing.frame_durations, timing.frame_pts[1:]))
    whole = np.concatenate(list(FrameReader(clip).batches(8)))
    kept = [index for index in range(20) if index not in (0, 6, 7, 13)]
    assert mean_abs_error(frames, whole[kept]) == 0


def test_a_file_ffmpeg_decodes_nothing_of_is_one_line(ffmpeg_exe, tmp_path):
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mkv", frames=3, extra_output=["-g", "1"])
    info = probe_video(clip)
    ruined = with_damaged_frames(clip, tmp_path / "ruined.mkv", [0, 1, 2])
    reader = FrameReader(ruined, time_base=info.time_base)
    with pytest.raises(MatteError, match=r"ruined.mkv: ffmpeg decoded no frame of it \(") as failure:
        list(reader.batches(4))
    assert "\n" not in str(failure.value)


def test_the_select_expression_nests_instead_of_a_flat_sum():
    assert _any_frame_of([4]) == "eq(n,4)"
    assert _any_frame_of([1, 2, 3]) == "max(eq(n,1),max(eq(n,2),eq(n,3)))"


def test_a_seek_reads_the_frame_at_that_time_without_decoding_from_the_start(ffmpeg_exe, tmp_path):
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", size="64x48", frames=60, extra_output=["-g", "12"])
    every = np.concatenate(list(FrameReader(clip).batches(16)))
    info = probe_video(clip)
    for number in (0, 12, 17, 59):
        seconds = float((info.frame_pts[number] - info.frame_pts[0]) * info.time_base)
        reader = FrameReader(clip, seek_seconds=seconds, max_frames=1)
        frames = np.concatenate(list(reader.batches(4)))
        assert len(frames) == 1
        np.testing.assert_array_equal(frames[0], every[number])
