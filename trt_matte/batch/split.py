"""One long video over many Ray workers (``batch --split --ray``): where it is cut, and
the jobs that matte its segments and join them.

The source is cut at keyframes into about ``SEGMENTS_PER_WORKER`` segments per worker
(none shorter than ``MIN_SEGMENT_FRAMES``); each is one task, and when the last is in,
one more task joins them into the output (``runtime.segments`` says why that output is
the unsplit run's, smoothing and audio included). The mask files go to a scratch folder
beside the output, which every node sees as it sees the output folder; it is removed
once the join is done or the video has failed.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..files import scratch_folder
from ..media.probe import VideoInfo, keyframe_pts
from .local import DONE, FAILED, Outcome, frames_in
from .plan import BatchItem

SEGMENTS_PER_WORKER = 2
# A segment costs a seek, a decoder and a mask file: shorter ones cost more than they save.
MIN_SEGMENT_FRAMES = 50

Outcomes = list[tuple[str, Outcome]]


def segment_bounds(info: VideoInfo, keyframes: frozenset[int], wanted: int) -> list[tuple[int, int]]:
    """(first frame, frame count) of each segment: cut at the keyframes nearest to
    ``wanted`` equal shares, at most one segment per ``MIN_SEGMENT_FRAMES`` frames."""
    cuts = [index for index, pts in enumerate(info.frame_pts) if pts in keyframes and index > 0]
    count = max(1, min(wanted, info.frame_count // MIN_SEGMENT_FRAMES))
    starts = {0}
    if cuts:
        starts |= {min(cuts, key=lambda index: abs(index - share * info.frame_count / count))
                   for share in range(1, count)}
    ordered = sorted(starts)
    return [(first, end - first) for first, end in zip(ordered, [*ordered[1:], info.frame_count])]


def plan_segments(source: Path, info: VideoInfo, workers: int) -> list[tuple[int, int]]:
    return segment_bounds(info, keyframe_pts(source), workers * SEGMENTS_PER_WORKER)


@dataclass
class Job:
    """One task for a worker: ``start(actor)`` submits it, ``finish(result)`` turns its
    result into the outcomes to record (and may queue more jobs), ``lost(reason)`` gives
    the outcomes when its worker died more often than Ray restarts it, and
    ``matted(result, outcomes)`` the frames it matted, for the batch's frames/s."""

    start: Callable[[Any], Any]
    finish: Callable[[Any], Outcomes]
    lost: Callable[[str], Outcomes]
    matted: Callable[[Any, Outcomes], int] = lambda result, outcomes: frames_in(outcomes)


class SplitVideo:
    """One video's segments and join, as jobs; ``queue`` takes the join when it is due."""

    def __init__(self, item: BatchItem, output_dir: Path, options: dict[str, Any], info: VideoInfo,
                 bounds: list[tuple[int, int]], queue: Callable[[Job], None]):
        self._item, self._options, self._info, self._bounds, self._queue = item, options, info, bounds, queue
        self._target = output_dir / item.target
        self._target.parent.mkdir(parents=True, exist_ok=True)
        self._scratch = scratch_folder(self._target)
        self._segments: list[Any] = [None] * len(bounds)
        self._remaining = len(bounds)
        self._error = ""
        self._started = time.monotonic()

    def segment_jobs(self) -> list[Job]:
        return [Job(lambda actor, index=index, first=first, count=count: actor.matte_segment.remote(
                        self._item.source, self._scratch / f"segment-{index:05d}.mkv", first, count, self._info),
                    lambda result, index=index: self._segment_done(index, result),
                    lambda reason, index=index: self._segment_done(index, reason),
                    lambda result, outcomes: 0 if isinstance(result, str) else len(result.frame_pts))
                for index, (first, count) in enumerate(self._bounds)]

    def segments(self) -> tuple[int, int]:
        """(segments matted or failed, segments in all), for the progress bar."""
        return len(self._bounds) - self._remaining, len(self._bounds)

    def _segment_done(self, index: int, result: Any) -> Outcomes:
        """A segment's result: its ``Segment``, or why it failed (a one-line reason)."""
        if isinstance(result, str):
            self._error = self._error or result
        else:
            self._segments[index] = result
        self._remaining -= 1
        if self._remaining:
            return []
        if self._error:
            return self._ended(FAILED, self._error)
        self._queue(Job(lambda actor: actor.join.remote(self._item.source, self._target, self._segments,
                                                         self._options, self._info),
                        self._joined, lambda reason: self._ended(FAILED, reason),
                        lambda result, outcomes: 0))  # its frames were counted as its segments came in
        return []

    def _joined(self, result: Any) -> Outcomes:
        """The join's result: the frame count written, or why it failed."""
        return self._ended(FAILED, result) if isinstance(result, str) else self._ended(DONE, "", result)

    def _ended(self, status: str, reason: str, frames: int = 0) -> Outcomes:
        shutil.rmtree(self._scratch, ignore_errors=True)
        done = status == DONE
        outcome = Outcome(str(self._item.source), self._item.kind, status, self._options, reason, frames=frames,
                          seconds=round(time.monotonic() - self._started, 2) if done else 0.0,
                          bytes=self._target.stat().st_size if done else 0)
        return [(self._item.name, outcome)]

    def abandon(self) -> None:
        """The batch stopped (a full disk, Ctrl-C): the scratch folder goes."""
        shutil.rmtree(self._scratch, ignore_errors=True)
