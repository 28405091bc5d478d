"""A split video's pieces without Ray: segments matted apart and joined give the unsplit
run's outputs, frame for frame, with the source's timing and audio, smoothing included."""
from __future__ import annotations

import subprocess

import av
import numpy as np
import pytest

from conftest import decode_gray, make_clip, packet_times
from trt_matte.media.probe import probe_video
from trt_matte.runtime.segments import join_segments, matte_segment
from trt_matte.runtime.video import matte_video

# 25 fps for 10 frames, 10 fps for 10, then 50 fps: 60 frames, a keyframe every 10.
VFR = "settb=1/1000,setpts='(if(lt(N,10),N*0.04,if(lt(N,20),0.4+(N-10)*0.1,1.4+(N-20)*0.02)))/TB'"


@pytest.fixture(scope="module")
def take(ffmpeg_exe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("segments")
    video = make_clip(ffmpeg_exe, folder / "video.mp4", frames=60,
                      extra_output=["-vf", VFR, "-fps_mode", "passthrough", "-enc_time_base", "1:1000", "-g", "10"])
    source = folder / "take.mkv"
    subprocess.run([ffmpeg_exe, "-v", "error", "-i", str(video), "-f", "lavfi", "-i", "sine=duration=2.2",
                    "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", str(source)], check=True)
    return source


def audio_packets(path):
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return [(packet.pts, packet.size) for packet in container.demux(stream) if packet.size]


@pytest.mark.parametrize("smooth", [0, 1])
def test_segments_joined_equal_the_unsplit_run(take, tiny_backend, ffmpeg_exe, tmp_path, smooth):
    whole = matte_video(take, tmp_path / "whole.mp4", tiny_backend, progress=False, crf=0, smooth=smooth)
    info = probe_video(take)
    cuts = [(0, 20), (20, 10), (30, 20), (50, 10)]  # at keyframes, and first and last
    segments = [matte_segment(take, tmp_path / f"segment{index}.mkv", tiny_backend, first, count, info=info)
                for index, (first, count) in enumerate(cuts)]
    assert [len(segment.frame_pts) for segment in segments] == [20, 10, 20, 10]
    joined = join_segments(take, tmp_path / "joined.mp4", segments, crf=0, smooth=smooth)
    assert joined.frame_count == whole.frames == 60
    assert np.array_equal(decode_gray(ffmpeg_exe, tmp_path / "joined.mp4"), decode_gray(ffmpeg_exe, whole.output))
    assert packet_times(tmp_path / "joined.mp4") == packet_times(whole.output) == packet_times(take)
    assert audio_packets(tmp_path / "joined.mp4") == audio_packets(whole.output)
