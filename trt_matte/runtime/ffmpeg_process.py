"""An ffmpeg child process with its error output kept, its exit checked, and no way
to outlive the run that started it."""
from __future__ import annotations

import subprocess
import tempfile

from ..errors import MatteError
from .media import ffmpeg_exe


class FfmpegProcess:
    def __init__(self, args: list[str], purpose: str, *, pipe_stdin: bool = False,
                 pipe_stdout: bool = False):
        self.purpose = purpose
        # stderr goes to a file: an unread pipe fills at ~64 kB and stalls ffmpeg.
        self._stderr = tempfile.TemporaryFile()
        command = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", *args]
        try:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE if pipe_stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipe_stdout else subprocess.DEVNULL,
                stderr=self._stderr,
                # Own session: Ctrl-C reaches only us, and we stop ffmpeg ourselves.
                start_new_session=True,
            )
        except OSError as exc:
            self._stderr.close()
            raise MatteError(f"cannot start ffmpeg ({command[0]}): {exc.strerror}") from None

    def error_text(self) -> str:
        self._stderr.seek(0)
        lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
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
