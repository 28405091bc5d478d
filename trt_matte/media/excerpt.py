"""A part of a video (``--start``/``--end``, ``--preview``): which source frames it holds,
where ffmpeg seeks to reach the first, and how the outputs' times relate to the source's.

Times are counted from the first video frame, as players show them. The part holds the
frames whose time t satisfies start <= t < end, each with its own timestamp less the
part's start, so variable frame rates survive and the first output frame sits where it
sat after the cut point. The network's frames are chosen by timestamp from where ffmpeg
lands (the keyframe before the part, in a file with an index; else the file's start),
and checked against the ones listed here; the encoder's own decoding of the pictures
for the composites seeks exactly to the first frame, or skips to it by count. The audio
kept is what plays from the start to the end of the part (copied packets, so to within
one audio packet, ~21 ms for AAC).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

from ..errors import MatteError
from .frame_reader import FrameReader
from .probe import VideoInfo

# --preview: this many seconds from the middle of the clip.
PREVIEW_SECONDS = Fraction(4)
_CLOCK = re.compile(r"^(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d*)?|\.\d+)$")


def parse_time(text: str) -> Fraction:
    """Seconds (``90``, ``1.5``) or a clock time (``01:30``, ``1:02:03.500``), exactly."""
    match = _CLOCK.match(text.strip())
    if not match:
        raise MatteError(f"not a time: {text!r} (seconds, or HH:MM:SS.mmm)")
    first, second, seconds = match.groups()
    hours, minutes = (first, second) if second is not None else (None, first)
    return Fraction(int(hours or 0) * 3600 + int(minutes or 0) * 60) + Fraction(seconds)


@dataclass(frozen=True)
class Excerpt:
    frames: VideoInfo  # the frames of the part, with the source's own timestamps
    seek_seconds: float | None  # ffmpeg's input -ss reaching its first frame; None: from the file's start
    shift: int  # subtracted from every video timestamp in the outputs (time_base units)
    # Source seconds [from, to) of audio kept, shifted alike; None: all of it, unshifted.
    audio_window: tuple[Fraction, Fraction] | None
    partial: bool = True  # False: every frame of the file
    first_index: int = 0  # the part's first frame among the file's

    def frame_reader(self, source: Path) -> FrameReader:
        """ffmpeg decoding the part's frames at 320x320, each with its source timestamp,
        chosen by timestamp (``FrameReader``'s ``pts_range``)."""
        pts_range = (self.frames.frame_pts[0], self.frames.frame_pts[-1]) if self.partial else None
        return FrameReader(source, time_base=self.frames.time_base, seek_seconds=self.seek_seconds,
                           pts_range=pts_range)

    def source_part(self) -> tuple[float | None, int] | None:
        """For the encoder's own decoding of the pictures: (its input -ss, frames to skip
        after it), or None for the whole file. Seeking exactly lands on the first frame;
        a file ffmpeg cannot seek exactly is decoded from its start."""
        if not self.partial:
            return None
        return self.seek_seconds, 0 if self.seek_seconds is not None else self.first_index

    def output_timing(self, delivered: VideoInfo) -> VideoInfo:
        """The outputs' timing for the frames delivered (``frames`` less any skipped)."""
        return replace(delivered, frame_pts=tuple(pts - self.shift for pts in delivered.frame_pts))


def whole(info: VideoInfo) -> Excerpt:
    return Excerpt(info, None, 0, None, partial=False)


def frames_excerpt(info: VideoInfo, first: int, count: int) -> Excerpt:
    """Frames ``first`` to ``first + count - 1`` (in presentation order) with their source
    times, for a split run's segment: its masks are joined, never published alone."""
    if not (0 <= first and 0 < count and first + count <= info.frame_count):
        raise ValueError(f"frames {first}..{first + count - 1} of {info.frame_count}")
    return Excerpt(_frames(info, first, first + count), _seek(info, first), 0, None, partial=count < info.frame_count, first_index=first)


def _frames(info: VideoInfo, first: int, stop: int) -> VideoInfo:
    """``info`` for its frames ``first`` to ``stop - 1`` alone."""
    return replace(info, frame_pts=info.frame_pts[first:stop], frame_durations=info.frame_durations[first:stop])


def _seek(info: VideoInfo, first: int) -> float | None:
    return info.seek_seconds(first) if first and info.exact_seek else None


def excerpt(info: VideoInfo, start: Fraction | None, end: Fraction | None) -> Excerpt:
    """The frames of ``info`` from ``start`` to ``end`` seconds (None: the clip's own ends);
    a one-line MatteError when the range is empty or holds no frame."""
    if start is None and end is None:
        return whole(info)
    first_time = info.frame_pts[0] * info.time_base
    start = start or Fraction(0)
    if end is not None and end <= start:
        raise MatteError(f"--end {float(end):g} is not after --start {float(start):g}")
    kept = [index for index, pts in enumerate(info.frame_pts)
            if start <= pts * info.time_base - first_time and (end is None or pts * info.time_base - first_time < end)]
    if not kept:
        raise MatteError(f"no frame lies from {float(start):g} s to {_seconds(end)}: the clip's frames run from 0 to "
                         f"{float(_duration(info)):.3f} s")
    frames = _frames(info, kept[0], kept[-1] + 1)
    last_end = (frames.frame_pts[-1] + frames.frame_durations[-1]) * info.time_base
    audio_end = last_end if end is None else min(first_time + end, last_end)
    return Excerpt(frames, _seek(info, kept[0]), shift=round((first_time + start) / info.time_base),
                   audio_window=(first_time + start, audio_end), partial=len(kept) < info.frame_count,
                   first_index=kept[0])


def preview_range(info: VideoInfo) -> tuple[Fraction, Fraction]:
    """``PREVIEW_SECONDS`` from the middle of the clip (all of a shorter one)."""
    duration = _duration(info)
    start = max(Fraction(0), (duration - PREVIEW_SECONDS) / 2)
    return start, start + PREVIEW_SECONDS


def _duration(info: VideoInfo) -> Fraction:
    return (info.frame_pts[-1] + info.frame_durations[-1] - info.frame_pts[0]) * info.time_base


def _seconds(end: Fraction | None) -> str:
    return "the end" if end is None else f"{float(end):g} s"
