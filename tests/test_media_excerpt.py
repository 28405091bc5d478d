"""Parts of a clip: times as users type them, which frames a range holds, the seek that
reaches the first, and the outputs' timing."""
from __future__ import annotations

from fractions import Fraction

import pytest

from trt_matte.errors import MatteError
from trt_matte.media.excerpt import PREVIEW_SECONDS, excerpt, parse_time, preview_range, whole
from trt_matte.media.probe import VideoInfo

# 25 fps for 10 frames, then 10 fps for 10, then 50 fps for 20, starting 2 s in (ms).
PTS = tuple([2000 + 40 * n for n in range(10)] + [2400 + 100 * n for n in range(10)]
            + [3400 + 20 * n for n in range(20)])
VFR = VideoInfo(160, 120, PTS, tuple(later - earlier for earlier, later in zip(PTS, PTS[1:])) + (20,),
                Fraction(1, 1000), Fraction(25), None, container_start=Fraction(1))


@pytest.mark.parametrize("text, seconds", [("90", 90), ("1.5", Fraction(3, 2)), (".25", Fraction(1, 4)),
                                           ("01:30", 90), ("1:02:03.500", Fraction(7447, 2))])
def test_times_in_seconds_or_on_a_clock(text, seconds):
    assert parse_time(text) == seconds


@pytest.mark.parametrize("text", ["", "a", "-1", "1e3", "1:2:3:4", "1.5.2"])
def test_what_is_not_a_time_is_one_line(text):
    with pytest.raises(MatteError, match="not a time"):
        parse_time(text)


def test_a_range_holds_the_frames_from_its_start_up_to_its_end():
    part = excerpt(VFR, Fraction(1), Fraction(5, 2))
    relative = [pts - PTS[0] for pts in part.frames.frame_pts]
    assert relative == [ms for ms in (pts - PTS[0] for pts in PTS) if 1000 <= ms < 2500]
    # Timed from the range's start; the last frame keeps its length.
    assert part.output_timing(part.frames).frame_pts[:6] == (0, 100, 200, 300, 400, 420)
    assert part.frames.frame_durations[-1] == 20
    # The clip ends before the range does: the audio stops with its last frame.
    assert part.audio_window == (Fraction(3), Fraction(3800, 1000))
    # ffmpeg counts -ss from the container's start (1 s): half-way from the frame before.
    assert part.seek_seconds == pytest.approx((2900 + 3000) / 2 / 1000 - 1)


def test_a_range_from_the_first_frame_needs_no_seek_and_the_whole_clip_keeps_its_times():
    part = excerpt(VFR, None, Fraction(1, 10))
    assert part.seek_seconds is None and part.frames.frame_pts == PTS[:3]
    assert part.output_timing(part.frames).frame_pts == (0, 40, 80)
    assert whole(VFR).output_timing(VFR) == VFR and excerpt(VFR, None, None) == whole(VFR)


@pytest.mark.parametrize("start, end, message", [(Fraction(2), Fraction(1), "not after"),
                                                 (Fraction(30), None, "no frame lies"),
                                                 (Fraction(41, 100), Fraction(49, 100), "no frame lies")])
def test_an_empty_range_is_one_line(start, end, message):
    with pytest.raises(MatteError, match=message):
        excerpt(VFR, start, end)


def test_a_preview_is_taken_from_the_middle():
    long = VideoInfo(64, 48, tuple(range(0, 60000, 40)), (40,) * 1500, Fraction(1, 1000), Fraction(25), None)
    start, end = preview_range(long)
    assert (start, end) == (28, 28 + PREVIEW_SECONDS) and excerpt(long, start, end).frames.frame_count == 100
    short_start, _ = preview_range(VFR)
    assert short_start == 0 and excerpt(VFR, *preview_range(VFR)).frames.frame_count == len(PTS)
