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
    ffmpeg.ffmpeg_exe.cache_clear()
    yield
    ffmpeg.ffmpeg_exe.cache_clear()


def test_an_old_ffmpeg_on_path_is_passed_over_for_the_bundled_one(tmp_path, monkeypatch, fresh_choice):
    fake_ffmpeg(tmp_path, "4.4.2-0ubuntu0.22.04.1")
    monkeypatch.setenv("PATH", str(tmp_path))
    import imageio_ffmpeg
    assert ffmpeg.ffmpeg_exe() == imageio_ffmpeg.get_ffmpeg_exe()


def test_a_recent_enough_ffmpeg_on_path_is_used(tmp_path, monkeypatch, fresh_choice):
    fake = fake_ffmpeg(tmp_path, "n7.1")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert ffmpeg.ffmpeg_exe() == str(fake)


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
