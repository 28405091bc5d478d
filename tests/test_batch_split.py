"""Where --split cuts a video: at keyframes, near equal shares, never into slivers."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from trt_matte.batch.local import DONE
from trt_matte.batch.plan import VIDEO, BatchItem
from trt_matte.batch.split import MIN_SEGMENT_FRAMES, SplitVideo, segment_bounds
from trt_matte.media.probe import VideoInfo
from trt_matte.runtime.segments import Segment


def clip(frames: int) -> VideoInfo:
    return VideoInfo(64, 48, tuple(range(0, 40 * frames, 40)), (40,) * frames, Fraction(1, 1000), Fraction(25), None)


def keyframes_every(step: int, frames: int) -> frozenset[int]:
    return frozenset(40 * index for index in range(0, frames, step))


@pytest.mark.parametrize("frames, step, wanted, starts", [
    (300, 25, 4, [0, 75, 150, 225]),  # equal shares fall on keyframes
    (300, 40, 4, [0, 80, 160, 240]),  # the nearest keyframe to 75, 150, 225
    (300, 25, 10, [0, 50, 100, 150, 200, 250]),  # no segment under MIN_SEGMENT_FRAMES on average
    (300, 1000, 4, [0]),  # one keyframe: nowhere to cut
    (2 * MIN_SEGMENT_FRAMES - 1, 10, 4, [0]),  # too short to be worth cutting
    (300, 150, 4, [0, 150]),  # sparse keyframes: fewer, longer segments
])
def test_cuts_at_keyframes_near_equal_shares(frames, step, wanted, starts):
    bounds = segment_bounds(clip(frames), keyframes_every(step, frames), wanted)
    assert [first for first, _ in bounds] == starts
    assert sum(count for _, count in bounds) == frames  # every frame once, in order
    assert all(first + count == later for (first, count), (later, _) in zip(bounds, bounds[1:]))


def test_split_without_ray_is_one_line(tmp_path, capsys, tiny_model):
    from trt_matte import cli
    (tmp_path / "clip.mp4").write_bytes(b"")
    assert cli.main(["batch", str(tmp_path / "clip.mp4"), "--split", "--model", str(tiny_model),
                     "-o", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "trt-matte: error: --split spreads each video over Ray workers: add --ray (or --ray-address)"]


def test_a_split_video_counts_its_frames_as_segments_come_in_and_once_only(tmp_path):
    """The batch's frames/s and segment count move with each segment (the file itself is
    done only at the join), and the join adds no frames of its own."""
    info = clip(300)
    bounds = segment_bounds(info, keyframes_every(25, 300), 4)
    queued = []
    video = SplitVideo(BatchItem(tmp_path / "clip.mp4", Path("clip.matte.mp4"), VIDEO), tmp_path / "out", {}, info,
                       bounds, queued.append)
    matted = []
    for job, (first, count) in zip(video.segment_jobs(), bounds):
        segment = Segment(tmp_path / f"{first}.mkv", info.frame_pts[first:first + count], False)
        outcomes = job.finish(segment)
        assert outcomes == []
        matted.append(job.matted(segment, outcomes))
        assert video.segments() == (len(matted), len(bounds))
    assert matted == [count for _, count in bounds] and sum(matted) == 300
    (join,) = queued
    (tmp_path / "out" / "clip.matte.mp4").write_bytes(b"joined")
    ((name, outcome),) = join.finish(300)
    assert (name, outcome.status, outcome.frames) == ("clip.matte.mp4", DONE, 300)
    assert join.matted(300, [(name, outcome)]) == 0
