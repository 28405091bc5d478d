"""Which ffmpeg runs, and an ffmpeg child whose failures are one line and whose end is
always waited for."""
from __future__ import annotations

import os
import stat

import pytest

from trt_matte.errors import MatteError
from trt_matte.media import ffmpeg
from trt_matte.media.ffmpeg import FfmpegProcess, local_path


def fake_ffmpeg(folder, version: str):
    """An executable named ffmpeg that reports ``version``, as a too-old system one would."""
    path = folder / "ffmpeg"
    path.write_text(f"#!/bin/sh\necho 'ffmpeg version {version} Copyright (c) the FFmpeg developers'\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture
def fresh_choice(monkeypatch):
    """ffmpeg_exe() decides once per process; each test decides anew, with no override set."""
    monkeypatch.delenv("TRT_MATTE_FFMPEG", raising=False)
    ffmpeg._ffmpeg_choice.cache_clear()
    yield
    ffmpeg._ffmpeg_choice.cache_clear()


def test_an_old_ffmpeg_on_path_is_passed_over_for_the_bundled_one_with_a_note(tmp_path, monkeypatch, fresh_choice):
    old = fake_ffmpeg(tmp_path, "4.4.2-0ubuntu0.22.04.1")
    monkeypatch.setenv("PATH", str(tmp_path))
    import imageio_ffmpeg
    assert ffmpeg.ffmpeg_exe() == imageio_ffmpeg.get_ffmpeg_exe()
    assert ffmpeg.ffmpeg_note() == (f"note: {old} is ffmpeg 4.4, older than 5.1, which trt-matte needs: using "
                                    "the ffmpeg that came with imageio-ffmpeg")


def test_a_version_measured_to_drop_frames_is_passed_over_too(tmp_path, monkeypatch, fresh_choice):
    broken = fake_ffmpeg(tmp_path, "7.0.2-static")
    monkeypatch.setenv("PATH", str(tmp_path))
    import imageio_ffmpeg
    assert ffmpeg.ffmpeg_exe() == imageio_ffmpeg.get_ffmpeg_exe()
    assert "ffmpeg 7.0, which drops the last frame" in ffmpeg.ffmpeg_note()
    monkeypatch.setenv("TRT_MATTE_FFMPEG", str(broken))
    ffmpeg._ffmpeg_choice.cache_clear()
    with pytest.raises(MatteError, match="TRT_MATTE_FFMPEG names ffmpeg 7.0, which drops the last frame"):
        ffmpeg.ffmpeg_exe()


def test_an_override_older_than_the_minimum_is_refused_in_one_line(tmp_path, monkeypatch, fresh_choice):
    old = fake_ffmpeg(tmp_path, "4.2.2-static")
    monkeypatch.setenv("TRT_MATTE_FFMPEG", str(old))
    with pytest.raises(MatteError, match=r"TRT_MATTE_FFMPEG names ffmpeg 4.2, older than 5.1"):
        ffmpeg.ffmpeg_exe()


def test_a_recent_enough_ffmpeg_on_path_is_used(tmp_path, monkeypatch, fresh_choice):
    fake = fake_ffmpeg(tmp_path, "n7.1")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert ffmpeg.ffmpeg_exe() == str(fake) and ffmpeg.ffmpeg_note() is None


def test_the_override_wins(tmp_path, monkeypatch, fresh_choice):
    monkeypatch.setenv("TRT_MATTE_FFMPEG", "/opt/ffmpeg/bin/ffmpeg")
    assert ffmpeg.ffmpeg_exe() == "/opt/ffmpeg/bin/ffmpeg"


def test_a_failing_ffmpeg_is_one_line_with_its_last_message(tmp_path):
    process = FfmpegProcess(["-i", str(tmp_path / "missing.mp4"), "-f", "null", "-"], "reading the clip")
    with pytest.raises(MatteError) as failure:
        process.finish()
    message = str(failure.value)
    assert message.startswith("ffmpeg failed while reading the clip: ") and "No such file" in message
    assert "\n" not in message
    process.kill()  # after finish: nothing left to stop, no error
    process.kill()


def test_kill_stops_a_running_process_and_can_be_repeated():
    process = FfmpegProcess(["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25", "-f", "rawvideo", "pipe:1"],
                            "making test frames", pipe_stdout=True)
    assert process.process.stdout.read(64 * 48 * 3)  # running and writing
    process.kill()
    process.kill()
    assert process.process.returncode is not None


def test_a_missing_ffmpeg_binary_is_one_line(monkeypatch, fresh_choice):
    monkeypatch.setenv("TRT_MATTE_FFMPEG", "/nonexistent/ffmpeg")
    with pytest.raises(MatteError, match=r"cannot start ffmpeg \(/nonexistent/ffmpeg\)"):
        FfmpegProcess(["-version"], "checking")


def test_local_path_never_reads_as_a_protocol(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert local_path("pipe:1 take.mp4") == os.path.join(str(tmp_path), "pipe:1 take.mp4")
