"""Which ffmpeg runs, and an ffmpeg child process with its error output kept and its
exit checked."""
from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Callable

from ..errors import MatteError

# -fps_mode, which keeps variable-frame-rate sources frame-exact, appeared in ffmpeg 5.1.
MIN_FFMPEG = (5, 1)
# Versions measured to give wrong outputs, with why. 7.0.2 (the build imageio-ffmpeg 0.6
# and 0.7 ship) delivered one frame too few wherever the encoder pairs masks with the
# source (green, prores, webm, png) and failed to decode an MPEG-TS clip; 5.1 and 9.0
# give every frame.
BROKEN_FFMPEG = {(7, 0): "drops the last frame when it pairs masks with the source"}


def _ffmpeg_version(executable: str) -> tuple[int, int] | None:
    try:
        banner = subprocess.run([executable, "-version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.match(r"ffmpeg version n?(\d+)\.(\d+)", banner)
    return (int(found.group(1)), int(found.group(2))) if found else None


def ffmpeg_exe() -> str:
    """$TRT_MATTE_FFMPEG, else a recent enough ffmpeg on PATH, else imageio-ffmpeg's binary."""
    return _ffmpeg_choice()[0]


def ffmpeg_note() -> str | None:
    """A line for the user when the ffmpeg on PATH was passed over for being too old."""
    return _ffmpeg_choice()[1]


@lru_cache(maxsize=1)
def _ffmpeg_choice() -> tuple[str, str | None]:
    configured = os.environ.get("TRT_MATTE_FFMPEG")
    if configured:
        unusable = _why_unusable(_ffmpeg_version(configured))
        if unusable:
            raise MatteError(f"TRT_MATTE_FFMPEG names {unusable} ({configured})")
        return configured, None
    import imageio_ffmpeg
    on_path = shutil.which("ffmpeg")
    if not on_path:
        return imageio_ffmpeg.get_ffmpeg_exe(), None
    unusable = _why_unusable(_ffmpeg_version(on_path) or (0, 0))
    if not unusable:
        return on_path, None
    note = f"note: {on_path} is {unusable}: using the ffmpeg that came with imageio-ffmpeg"
    return imageio_ffmpeg.get_ffmpeg_exe(), note


def _why_unusable(version: tuple[int, int] | None) -> str | None:
    """Why this ffmpeg version cannot serve (None: it can, or its version is unknown)."""
    if version is None:
        return None
    name = f"ffmpeg {version[0]}.{version[1]}" if version > (0, 0) else "an ffmpeg of unknown version"
    if version < MIN_FFMPEG:
        return f"{name}, older than {MIN_FFMPEG[0]}.{MIN_FFMPEG[1]}, which trt-matte needs"
    if version in BROKEN_FFMPEG:
        return f"{name}, which {BROKEN_FFMPEG[version]}"
    return None


def local_path(path: Path) -> str:
    """A path libav reads as a file: an absolute one, since a relative name such as
    ``pipe:1 take.mp4`` or ``cache:x`` would otherwise be taken for a protocol."""
    return os.path.abspath(path)


# ffmpeg's note that it folded repeats of the line before: never the cause itself.
REPEATED = re.compile(r"^Last message repeated \d+ times?$")
# prctl's option that sends the child a signal when the thread that started it exits.
PR_SET_PDEATHSIG = 1


@lru_cache(maxsize=1)
def _prctl() -> Callable[..., int] | None:
    return ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


@lru_cache(maxsize=1)
def _setpriv() -> str | None:
    return shutil.which("setpriv") if sys.platform.startswith("linux") else None


def _launch_prefix() -> tuple[list[str], Callable[[], None] | None]:
    """How an ffmpeg child is started so the kernel kills it when trt-matte dies: through
    util-linux's ``setpriv --pdeathsig KILL``, which sets the parent-death signal and
    execs ffmpeg, so Popen needs no Python in the child (with a preexec function it
    forks in Python, and a Ctrl-C landing in the fork handlers was measured to be lost,
    2 in 108); without setpriv, the same prctl from a preexec function."""
    setpriv = _setpriv()
    if setpriv:
        return [setpriv, "--pdeathsig", "KILL", "--"], None
    return [], _die_with_parent()


def _die_with_parent() -> Callable[[], None] | None:
    """What an ffmpeg child runs before exec so the kernel kills it when trt-matte dies,
    however it dies (SIGKILL, the OOM killer): Linux's parent-death signal. None elsewhere."""
    prctl, parent = _prctl(), os.getpid()  # looked up here: the child only calls it
    if prctl is None:
        return None

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)
    return arm


class FfmpegProcess:
    def __init__(self, args: list[str], purpose: str, *, pipe_stdin: bool = False,
                 pipe_stdout: bool = False, loglevel: str = "error"):
        self.purpose = purpose
        # stderr goes to a file: an unread pipe fills at ~64 kB and stalls ffmpeg.
        self._stderr = tempfile.TemporaryFile()
        command = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", loglevel, *args]
        prefix, preexec = _launch_prefix()
        if prefix and shutil.which(command[0]) is None:  # setpriv would start, then fail to exec it
            self._stderr.close()
            missing = errno.ENOENT if not os.path.exists(command[0]) else errno.EACCES
            raise MatteError(f"cannot start ffmpeg ({command[0]}): {os.strerror(missing)}")
        try:
            self.process = subprocess.Popen(
                [*prefix, *command],
                stdin=subprocess.PIPE if pipe_stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipe_stdout else subprocess.DEVNULL,
                stderr=self._stderr,
                # Own session: Ctrl-C reaches only us, and we stop ffmpeg ourselves; and
                # if we die without stopping it, the kernel does. (The signal follows the
                # thread that starts ffmpeg: the pipelines start it from the calling thread,
                # which lives until the run ends.)
                start_new_session=True, preexec_fn=preexec,
            )
        except OSError as exc:
            self._stderr.close()
            raise MatteError(f"cannot start ffmpeg ({command[0]}): {exc.strerror}") from None

    def error_lines(self) -> list[str]:
        """What ffmpeg said on stderr, without its "Last message repeated" bookkeeping."""
        if self._stderr.closed:
            return []
        self._stderr.seek(0)
        lines = self._stderr.read().decode("utf-8", "replace").splitlines()
        return [line.strip() for line in lines if line.strip() and not REPEATED.match(line.strip())]

    def error_text(self) -> str:
        if self._stderr.closed:
            return "it was stopped"
        lines = self.error_lines()
        return lines[-1] if lines else "no message"

    def finish(self) -> None:
        """Wait for a clean exit; a non-zero status becomes a one-line MatteError."""
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe:
                pipe.close()
        code = self.process.wait()
        if code != 0:
            raise MatteError(f"ffmpeg failed while {self.purpose}: {self.error_text()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe:
                try:
                    pipe.close()
                except OSError:
                    pass
        self._stderr.close()
