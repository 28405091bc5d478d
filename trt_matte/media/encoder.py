"""The encoder: one ffmpeg process that takes uint8 masks on its stdin and writes every
deliverable from them (see ``outputs``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import MatteError
from ..files import NO_SPACE, disk_full_error
from ..models import MODEL_SIZE
from .ffmpeg import FfmpegProcess
from .outputs import DEFAULT_CRF, MATTE, Background, encoder_arguments, encoding_purpose
from .probe import VideoInfo

MASK_SIZE = f"{MODEL_SIZE}x{MODEL_SIZE}"


class MatteEncoder:
    """One ffmpeg process brings masks to the displayed picture and encodes every
    deliverable from them: the matte (H.264, B-frames off) and, given the source,
    composites and alpha videos (see ``outputs``).

    ``targets`` is where the matte goes, or a mapping from deliverable to where the
    encoder writes it. By default masks arrive at 320x320 and ffmpeg upsizes them; with
    ``full_size`` they arrive finished (upsized on the GPU) at the displayed size. Both
    readers hand over frames already turned to the display orientation, as ffmpeg's
    autorotated decode of the source is, so masks and pictures line up unturned.
    ``source_part`` is (input -ss, frames to skip) for a part of the source
    (``media.excerpt.Excerpt.source_part``): the pictures start at its first frame too.
    """

    def __init__(self, targets: Path | Mapping[str, Path], info: VideoInfo, crf: int = DEFAULT_CRF,
                 full_size: bool = False, *, source: Path | None = None, background: Background | None = None,
                 source_part: tuple[float | None, int] | None = None):
        destinations = {MATTE: Path(targets)} if isinstance(targets, (str, os.PathLike)) else dict(targets)
        self._destinations = destinations
        mask_size = f"{info.width}x{info.height}" if full_size else MASK_SIZE
        self._purpose = encoding_purpose(destinations)
        self._ffmpeg = FfmpegProcess(
            encoder_arguments(destinations, info, mask_size=mask_size, crf=crf, source=source,
                              background=background, source_part=source_part),
            self._purpose, pipe_stdin=True)
        self.frames_written = 0

    def write(self, masks: np.ndarray) -> None:
        try:
            self._ffmpeg.process.stdin.write(np.ascontiguousarray(masks).reshape(-1).data)
        except (BrokenPipeError, OSError):
            raise self._failure(f"ffmpeg stopped while {self._purpose}: {self._ffmpeg.error_text()}") from None
        self.frames_written += len(masks)

    def finish(self) -> None:
        try:
            self._ffmpeg.finish()
        except MatteError as failed:
            raise self._failure(str(failed)) from None

    def _failure(self, message: str) -> MatteError:
        """The error to report: a full disk named as such (folder, space left, bytes written)."""
        if any(NO_SPACE in line for line in self._ffmpeg.error_lines()):
            return disk_full_error(self._destinations.values())
        return MatteError(message)

    def kill(self) -> None:
        self._ffmpeg.kill()
