"""Video frames decoded by ffmpeg onto a pipe: every frame once, in order, as uint8 RGB
batches, at the model's 320x320 (the CPU path and calibration) or at the displayed size."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import MatteError
from ..models import MODEL_SIZE
from .ffmpeg import FfmpegProcess, local_path

# rembg downsizes RGB pictures with an antialiased Lanczos; U²-Net's per-image min-max
# makes the mask sensitive to that choice (bilinear costs ~0.04 IoU against rembg).
DOWNSCALE_FILTER = f"format=rgb24,scale={MODEL_SIZE}:{MODEL_SIZE}:flags=lanczos"


def _any_frame_of(numbers: Sequence[int]) -> str:
    """An ffmpeg expression true for those frame numbers: a balanced tree of max(), since
    ffmpeg's parser refuses a flat sum of more than 100 terms (nesting depth)."""
    if len(numbers) == 1:
        return f"eq(n,{numbers[0]})"
    middle = len(numbers) // 2
    return f"max({_any_frame_of(numbers[:middle])},{_any_frame_of(numbers[middle:])})"


class FrameReader:
    """ffmpeg decodes every frame (no duplicates, no drops) to RGB on a pipe.

    By default frames are resized to the model's 320x320; ``display_size`` (width,
    height, as ``probe_video`` reports it) keeps them whole, autorotated as players show
    them. ``frame_numbers`` keeps only those frames (0-based, in decode order), dropped
    before the resize so skipped frames cost only their decoding.
    """

    def __init__(self, source: Path, frame_numbers: Sequence[int] | None = None,
                 display_size: tuple[int, int] | None = None):
        filters = [DOWNSCALE_FILTER] if display_size is None else []
        if frame_numbers is not None:
            filters.insert(0, f"select='{_any_frame_of(sorted(set(frame_numbers)))}'")
        width, height = display_size or (MODEL_SIZE, MODEL_SIZE)
        self._frame_shape = (height, width, 3)
        self._frame_bytes = width * height * 3
        self.source = Path(source)
        self._ffmpeg = FfmpegProcess(
            ["-i", local_path(source), "-map", "0:v:0", "-fps_mode", "passthrough",
             *(["-vf", ",".join(filters)] if filters else []), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
            f"decoding {self.source.name}", pipe_stdout=True)
        self.frames_read = 0

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """uint8 [n,H,W,3] batches of up to ``batch_size`` frames; ffmpeg's exit is checked at the end."""
        stream = self._ffmpeg.process.stdout
        while chunk := stream.read(self._frame_bytes * batch_size):
            whole_frames = len(chunk) // self._frame_bytes
            if whole_frames == 0:
                break
            self.frames_read += whole_frames
            yield np.frombuffer(chunk, np.uint8, whole_frames * self._frame_bytes).reshape(
                whole_frames, *self._frame_shape)
        self._ffmpeg.finish()

    def check_frame_count(self, expected: int) -> None:
        """After the last batch: every frame the container lists was decoded."""
        if self.frames_read != expected:
            raise MatteError(f"{self.source}: decoded {self.frames_read} frames but the container lists "
                             f"{expected}; the file is damaged or truncated")

    def kill(self) -> None:
        """Stop ffmpeg now (idempotent): a pending ``batches`` read then ends."""
        self._ffmpeg.kill()
