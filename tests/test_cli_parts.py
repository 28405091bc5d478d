"""A part of a clip (--start/--end) and a preview, from the command line: the outputs hold
exactly the source's frames in the range, timed from its start, with the audio cut to
match, and the same masks as a run over the whole clip."""
from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import decode_gray, make_clip, packet_times, with_damaged_frames
from trt_matte.runtime.video import matte_video

CLI = [sys.executable, "-m", "trt_matte"]
# 25 fps for 10 frames, 10 fps for 10, then 50 fps, starting 2 s in: 80 frames to 4.6 s.
VFR = "settb=1/1000,setpts='(if(lt(N,10),N*0.04,if(lt(N,20),0.4+(N-10)*0.1,1.4+(N-20)*0.02))+2)/TB'"


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, env=dict(os.environ), capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def vfr_take(ffmpeg_exe, tmp_path_factory) -> Path:
    """A VFR clip starting 2 s in, with a tone that starts with it and outlasts it."""
    folder = tmp_path_factory.mktemp("parts")
    video = make_clip(ffmpeg_exe, folder / "video.mp4", frames=80,
                      extra_output=["-vf", VFR, "-fps_mode", "passthrough", "-enc_time_base", "1:1000"])
    take = folder / "take.mp4"
    subprocess.run([ffmpeg_exe, "-v", "error", "-copyts", "-i", str(video), "-itsoffset", "2", "-f", "lavfi",
                    "-i", "sine=frequency=440:duration=4", "-map", "0:v", "-map", "1:a", "-c:v", "copy",
                    "-c:a", "aac", str(take)], check=True)
    return take


def audio_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        packets = [packet for packet in container.demux(stream) if packet.size]
        return float((packets[-1].pts + packets[-1].duration - packets[0].pts) * stream.time_base)


def test_start_and_end_keep_exactly_the_frames_in_the_range(vfr_take, tiny_model, ffmpeg_exe, tmp_path):
    result = run_cli(["video", str(vfr_take), "--model", str(tiny_model), "--start", "1.0", "--end", "0:00:02.5",
                      "--crf", "0", "--format", "matte,green", "-o", str(tmp_path), "-q"], tmp_path)
    assert result.returncode == 0, result.stderr
    source_times = packet_times(vfr_take)
    in_range = [time - source_times[0] - 1.0 for time in source_times if 1.0 <= time - source_times[0] < 2.5]
    assert len(in_range) == 59
    for output in (tmp_path / "take.matte.mp4", tmp_path / "take.green.mp4"):
        assert packet_times(output) == pytest.approx(in_range, abs=1e-3)
        assert audio_seconds(output) == pytest.approx(1.5, abs=1024 / 44100 + 1e-3)
    # The masks of those frames are the whole clip's.
    whole = tmp_path / "whole.mp4"
    assert run_cli(["video", str(vfr_take), "--model", str(tiny_model), "--crf", "0", "-o", str(whole), "-q"],
                   tmp_path).returncode == 0
    first = next(index for index, time in enumerate(source_times) if time - source_times[0] >= 1.0)
    whole_masks = decode_gray(ffmpeg_exe, whole)[first:first + 59]
    assert np.array_equal(decode_gray(ffmpeg_exe, tmp_path / "take.matte.mp4"), whole_masks)


def test_preview_mattes_seconds_from_the_middle_into_preview_names(ffmpeg_exe, tiny_model, tmp_path):
    clip = make_clip(ffmpeg_exe, tmp_path / "long.mp4", size="64x48", frames=250)  # 10 s at 25 fps
    result = run_cli(["video", str(clip), "--model", str(tiny_model), "--preview"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "preview: 3.00 to 7.00 s of long.mp4" in result.stderr
    preview = tmp_path / "long.preview.matte.mp4"
    assert len(packet_times(preview)) == 100 and not (tmp_path / "long.matte.mp4").exists()


@pytest.mark.parametrize("args, message", [
    (["--start", "2", "--end", "1"], "--end 1 is not after --start 2"),
    (["--start", "30"], "no frame lies from 30 s to the end"),
    (["--start", "soon"], "not a time: 'soon'"),
    (["--preview", "--start", "1"], "leave out --start and --end")])
def test_a_bad_range_is_one_line_and_writes_nothing(vfr_take, tiny_model, tmp_path, args, message):
    result = run_cli(["video", str(vfr_take), "--model", str(tiny_model), "-o", str(tmp_path), *args], tmp_path)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_part_of_an_mpeg_ts_is_chosen_by_timestamp(ffmpeg_exe, tiny_backend, tmp_path):
    """ffmpeg seeks MPEG-TS by byte estimates and may land past the time asked for: such a
    file is decoded from its start and the part chosen by timestamp, for the masks and for
    the composite's pictures alike."""
    source = make_clip(ffmpeg_exe, tmp_path / "take.ts", size="96x64", frames=150, extra_output=["-g", "12"])
    whole = matte_video(source, tmp_path / "whole", tiny_backend, progress=False, crf=0, outputs=["matte,green"])
    part = matte_video(source, tmp_path / "part", tiny_backend, progress=False, crf=0, outputs=["matte,green"],
                       start=Fraction("3.3"), end=Fraction(4))
    times = packet_times(source)
    inside = [index for index, time in enumerate(times) if 3.3 <= time - times[0] < 4]
    assert part.frames == len(inside) == 17  # 3.32 .. 3.96 s at 25 fps
    for kind in ("matte", "green"):
        expected = decode_gray(ffmpeg_exe, whole.outputs[kind])[inside[0]:inside[-1] + 1]
        assert np.array_equal(decode_gray(ffmpeg_exe, part.outputs[kind]), expected), kind
    assert packet_times(part.output) == pytest.approx([times[index] - times[0] - 3.3 for index in inside], abs=1e-3)


def test_damaged_frames_in_a_part_are_skipped_without_pulling_in_later_ones(ffmpeg_exe, tiny_backend, tmp_path):
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mkv", size="96x64", frames=100, extra_output=["-g", "100"])
    damaged = with_damaged_frames(clip, tmp_path / "damaged.mkv", packets=[55, 56])
    part = matte_video(damaged, tmp_path / "part.mp4", tiny_backend, progress=False, start=2, end=Fraction(12, 5))
    times = packet_times(part.output)
    assert part.frames == len(times) < 10 and max(times) < 0.4  # 2.0 .. 2.36 s, less what ffmpeg skipped


def test_a_part_into_webm_reencodes_just_its_audio(vfr_take, tiny_backend, tmp_path):
    result = matte_video(vfr_take, tmp_path / "part.webm", tiny_backend, progress=False, outputs=["webm"],
                         start=Fraction(1), end=Fraction(5, 2))
    assert result.frames == 59 and audio_seconds(result.output) == pytest.approx(1.5, abs=0.03)


def test_a_batch_records_its_options_as_before_unless_new_ones_are_used():
    from trt_matte.cli import _batch_options, build_parser
    plain = _batch_options(build_parser().parse_args(["batch", "x.mp4"]), "u2netp")
    assert plain == {"model": "u2netp", "precision": "auto", "stretch_floor": 0.0, "crf": 12, "audio": True,
                     "smooth": 0, "cutout": False}
    hard = _batch_options(build_parser().parse_args(["batch", "x.mp4", "--threshold", "128", "--erode", "2"]), "u2netp")
    assert (hard["crf"], hard["threshold"], hard["erode"], "dilate" in hard) == (0, 128, 2, False)
