"""Masks on disk, losslessly, between the workers of a split video and the join that
encodes them (``batch --split``): gray FFV1 in Matroska, written and read with PyAV.

FFV1 keeps every level, so the joined masks are the ones the workers computed, bit for
bit, and it takes a fraction of raw size on mattes (flat regions, few edges). The
timestamps in these files mean nothing: the join times every frame from the source.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from ..errors import MatteError
from .ffmpeg import local_path

CODEC = "ffv1"
# Any rate: frames are counted, never timed, here.
NOMINAL_RATE = Fraction(25)


class MaskFile:
    """The encoder's interface (``write``, ``finish``, ``kill``) over an FFV1 file."""

    def __init__(self, path: Path, width: int, height: int):
        self.path = path
        self._container = av.open(local_path(path), "w", format="matroska")
        self._stream = self._container.add_stream(CODEC, rate=NOMINAL_RATE)
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "gray"
        self.frames_written = 0

    def write(self, masks: np.ndarray) -> None:
        for mask in masks:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(mask), format="gray")
            self._container.mux(self._stream.encode(frame))
        self.frames_written += len(masks)

    def finish(self) -> None:
        self._container.mux(self._stream.encode(None))
        self._container.close()

    def kill(self) -> None:
        """Close without flushing (idempotent): a failed run's file is discarded anyway."""
        try:
            self._container.close()
        except (av.error.FFmpegError, ValueError):
            pass


def read_masks(path: Path, batch_size: int) -> Iterator[np.ndarray]:
    """The masks of a ``MaskFile``, in order, as uint8 [n,H,W] batches."""
    try:
        with av.open(local_path(path)) as container:
            batch: list[np.ndarray] = []
            for frame in container.decode(video=0):
                batch.append(frame.to_ndarray(format="gray"))
                if len(batch) == batch_size:
                    yield np.stack(batch)
                    batch = []
            if batch:
                yield np.stack(batch)
    except av.error.FFmpegError as exc:
        raise MatteError(f"cannot read the masks in {path.name}: {exc.strerror or exc}") from None
