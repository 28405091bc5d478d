"""A split video (``batch --split``): the masks of one segment of a source, written by a
worker, and the join of every segment into the outputs.

A worker mattes frames [first, first + count) of the source (ffmpeg seeks to the first)
and writes their masks, before any smoothing or encoding, losslessly to a mask file
(``media.mask_file``). The join reads the segments' masks in order and runs them
through the smoothing and the encoder of an unsplit run, timed from the source's own
frame list (variable frame rates included), with the source's audio once. So the
outputs are the unsplit run's: the same masks reach the same encoder, and smoothing,
done on the joined masks, sees across every cut.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..engine.backend import Backend
from ..errors import MatteError
from ..files import atomic_output
from ..media.excerpt import frames_excerpt, whole
from ..media.mask_file import MaskFile, read_masks
from ..media.mux import check_timing_fits
from ..media.outputs import DEFAULT_CRF, MATTE, Background
from ..media.probe import VideoInfo, probe_video
from ..models import MODEL_SIZE
from .guard import GuardTripped, PrecisionGuard
from .smoothing import MaskSmoother
from .video import run_stages, spread_frames, stages_for, write_outputs

# Masks read back per batch at the join.
JOIN_BATCH = 16


@dataclass(frozen=True)
class Segment:
    """What a worker made of its share: the mask file, the source timestamps of the frames
    it holds (ffmpeg skips frames it cannot decode), and whether the masks are at the
    frame's size (upsized on a GPU, or shaped) rather than 320x320."""

    masks: Path
    frame_pts: tuple[int, ...]
    full_size: bool


def matte_segment(source: Path, target: Path, backend: Backend, first: int, count: int, *,
                  info: VideoInfo | None = None, guard: PrecisionGuard | None = None,
                  announce: Callable[[str], None] = lambda message: None) -> Segment:
    """The masks of frames ``first`` to ``first + count - 1`` of ``source`` into the mask
    file ``target`` (written under a temporary name, so a retried task leaves no half
    file). A reduced precision is guarded as in a whole run, on the segment's frames."""
    info = info or probe_video(source)
    part = frames_excerpt(info, first, count)
    if guard is not None and not guard.holds_before_writing(backend, spread_frames(source, part.frames)):
        backend, guard = guard.reference, None
    try:
        with atomic_output(target) as temporary:
            stages = stages_for(source, part, backend, backend.preferred_batch, announce, guard)
            size = (info.width, info.height) if stages.full_size else (MODEL_SIZE, MODEL_SIZE)
            delivered = run_stages(stages, lambda full_size: MaskFile(temporary, *size), part.frames,
                                   source.name, False, MaskSmoother(0))
    except GuardTripped as tripped:
        announce(f"{tripped}: matting frames {first}-{first + count - 1} again in FP32")
        return matte_segment(source, target, guard.reference, first, count, info=info, announce=announce)
    return Segment(target, delivered.frame_pts, stages.full_size)


class _JoinedStages:
    """``video.MatteStages`` over the segments' mask files: the masks as they were made,
    in order, with nothing left to compute."""

    def __init__(self, segments: list[Segment]):
        self._segments = segments
        self.full_size = segments[0].full_size
        self.concealed = 0
        self._stopped = False

    def batches(self) -> Iterator[np.ndarray]:
        for segment in self._segments:
            for batch in read_masks(segment.masks, JOIN_BATCH):
                if self._stopped:
                    return
                yield batch

    def compute(self, batch: np.ndarray) -> np.ndarray:
        return batch

    def masks(self, computed: np.ndarray) -> np.ndarray:
        return computed

    def done(self, computed: np.ndarray) -> None:
        pass

    def delivered_timing(self, listed: VideoInfo) -> VideoInfo:
        delivered = [pts for segment in self._segments for pts in segment.frame_pts]
        return listed if len(delivered) == listed.frame_count else listed.keeping(delivered)

    def stop(self) -> None:
        self._stopped = True

    def release(self) -> None:
        pass


def join_segments(source: Path, target: Path, segments: list[Segment], *, crf: int = DEFAULT_CRF,
                  audio: bool = True, smooth: int = 0, background: Background | None = None,
                  info: VideoInfo | None = None) -> VideoInfo:
    """Write the matte of ``source`` to ``target`` from its segments' masks, as an unsplit
    run writes it; returns the timing of the frames written."""
    if len({segment.full_size for segment in segments}) != 1:
        raise MatteError(f"{source.name}: the accuracy guard sent some segments to FP32 on the CPU and not others, "
                         "so their masks differ in size; run it without --split")
    info = info or probe_video(source)
    check_timing_fits(info, [target])
    delivered, _ = write_outputs(source, {MATTE: target}, whole(info), lambda: _JoinedStages(segments),
                                 progress=False, crf=crf, background=background, smoother=MaskSmoother(smooth),
                                 audio=audio)
    return delivered
