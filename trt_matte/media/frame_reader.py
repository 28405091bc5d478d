"""Video frames decoded by ffmpeg onto a pipe: every frame ffmpeg outputs, once, in order,
as uint8 RGB batches with their timestamps, at the model's 320x320 (the CPU path and
calibration) or at the displayed size."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

import av
import numpy as np

from ..errors import MatteError
from ..models import MODEL_SIZE
from .ffmpeg import FfmpegProcess, local_path
from .probe import VideoInfo

# rembg downsizes RGB pictures with an antialiased Lanczos; U²-Net's per-image min-max
# makes the mask sensitive to that choice (bilinear costs ~0.04 IoU against rembg).
DOWNSCALE_FILTER = f"format=rgb24,scale={MODEL_SIZE}:{MODEL_SIZE}:flags=lanczos"
# ffmpeg's warning for a frame its decoder concealed (5.1 and 9.0 word it alike).
CONCEALED = "corrupt decoded frame"


def _any_frame_of(numbers: Sequence[int]) -> str:
    """An ffmpeg expression true for those frame numbers: a balanced tree of max(), since
    ffmpeg's parser refuses a flat sum of more than 100 terms (nesting depth)."""
    if len(numbers) == 1:
        return f"eq(n,{numbers[0]})"
    middle = len(numbers) // 2
    return f"max({_any_frame_of(numbers[:middle])},{_any_frame_of(numbers[middle:])})"


class _PipeEnd:
    """ffmpeg's stdout as PyAV reads it: once ``kill`` has closed the pipe, a read finds
    its end, where the closed file's ValueError would be printed by PyAV as a traceback."""

    def __init__(self, pipe: BinaryIO):
        self._pipe = pipe

    def read(self, size: int) -> bytes:
        try:
            return self._pipe.read(size)
        except ValueError:
            return b""


class FrameReader:
    """ffmpeg decodes every frame it can (no duplicates; frames its decoder rejects are
    skipped, as ``ffmpeg -i IN -f null -`` skips them) to RGB, sent as NUT on a pipe so
    each frame keeps its presentation time.

    By default frames are resized to the model's 320x320; ``display_size`` (width,
    height, as ``probe_video`` reports it) keeps them whole, autorotated as players show
    them. ``frame_numbers`` keeps only those frames (0-based, in decode order), dropped
    before the resize so skipped frames cost only their decoding. ``time_base`` is the
    source stream's: ``frame_pts`` then holds every delivered frame's source timestamp.
    ``seek_seconds`` starts at that presentation time (ffmpeg seeks to the keyframe
    before it and decodes from there) and ``max_frames`` stops after that many: a few
    frames from the middle of a long clip without decoding all that comes before.
    ``pts_range`` (first, last; needs ``time_base``) keeps only the frames whose source
    timestamps lie in it, chosen here by timestamp, not by count: ffmpeg's seek, asked
    (with ``seek_seconds``) for the keyframe before, may deliver frames before the range,
    and a damaged frame it skips must not pull in one after the range.
    """

    def __init__(self, source: Path, frame_numbers: Sequence[int] | None = None,
                 display_size: tuple[int, int] | None = None, time_base: Fraction | None = None,
                 seek_seconds: float | None = None, max_frames: int | None = None,
                 pts_range: tuple[int, int] | None = None):
        filters = [DOWNSCALE_FILTER] if display_size is None else ["format=rgb24"]
        if frame_numbers is not None:
            filters.insert(0, f"select='{_any_frame_of(sorted(set(frame_numbers)))}'")
        width, height = display_size or (MODEL_SIZE, MODEL_SIZE)
        self._frame_shape = (height, width, 3)
        self._frame_bytes = width * height * 3
        self.source = Path(source)
        self._time_base = time_base
        # -copyts and the source's own time base: the pipe's timestamps are the source's.
        timing = ["-copyts", "-enc_time_base", str(time_base)] if time_base else []
        # For a range the frames before it are dropped here: ffmpeg starts at the keyframe.
        accuracy = ["-noaccurate_seek"] if pts_range is not None else []
        seek = [*accuracy, "-ss", f"{seek_seconds:.6f}"] if seek_seconds is not None else []
        self._pts_range = pts_range
        self.dropped_before = 0  # frames ffmpeg delivered before ``pts_range``'s first
        limit = ["-frames:v", str(max_frames)] if max_frames is not None else []
        self._ffmpeg = FfmpegProcess(
            [*seek, "-i", local_path(source), "-map", "0:v:0", "-fps_mode", "passthrough", *timing, *limit,
             "-vf", ",".join(filters), "-c:v", "rawvideo", "-f", "nut", "pipe:1"],
            f"decoding {self.source.name}", pipe_stdout=True, loglevel="warning")
        self.frames_read = 0
        self.frame_pts: list[int] = []
        # Frames ffmpeg's decoder reported as damaged but delivered concealed; known at the end.
        self.concealed = 0

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """uint8 [n,H,W,3] batches of up to ``batch_size`` frames; ffmpeg's exit is checked at the end."""
        batch, filled = np.empty((batch_size, *self._frame_shape), np.uint8), 0
        past_range = False
        for packet in self._packets():
            if packet.size != self._frame_bytes:
                raise MatteError(f"ffmpeg sent a {packet.size}-byte frame while {self._ffmpeg.purpose}, "
                                 f"expected {self._frame_bytes}")
            place = self._place_in_range(packet)
            if place < 0:
                self.dropped_before += 1
                continue
            if place > 0:
                past_range = True
                break
            batch[filled] = np.frombuffer(packet, np.uint8).reshape(self._frame_shape)
            self._note_time(packet)
            filled += 1
            if filled == batch_size:
                self.frames_read += filled
                yield batch
                batch, filled = np.empty_like(batch), 0
        if filled:
            self.frames_read += filled
            yield batch[:filled]
        if not past_range:
            self._finish()
        self.concealed = sum(CONCEALED in line for line in self._ffmpeg.error_lines())
        if past_range:
            self._ffmpeg.kill()  # the rest of the file is not needed

    def _packets(self) -> Iterator[av.Packet]:
        try:
            with av.open(_PipeEnd(self._ffmpeg.process.stdout), format="nut") as pipe:
                yield from (packet for packet in pipe.demux(pipe.streams.video[0]) if packet.size)
        except (av.error.FFmpegError, ValueError):
            # A pipe cut short: ffmpeg's own exit status and message say why.
            self._finish()
            raise MatteError(f"ffmpeg's output ended early while {self._ffmpeg.purpose}") from None

    def _finish(self) -> None:
        try:
            self._ffmpeg.finish()
        except MatteError:
            if self.frames_read:
                raise
            # ffmpeg words this as a filter error ("Error marking filters as finished").
            raise MatteError(f"{self.source}: ffmpeg decoded no frame of it ({self._ffmpeg.error_text()})") from None

    def _place_in_range(self, packet: av.Packet) -> int:
        """-1 before ``pts_range``, 0 in it (or no range), 1 after it."""
        if self._pts_range is None:
            return 0
        pts = round(packet.pts * packet.time_base / self._time_base)
        first, last = self._pts_range
        return -1 if pts < first else 1 if pts > last else 0

    def _note_time(self, packet: av.Packet) -> None:
        if self._time_base and packet.pts is not None:
            self.frame_pts.append(round(packet.pts * packet.time_base / self._time_base))

    def delivered_timing(self, listed: VideoInfo) -> VideoInfo:
        """After the last batch: ``listed`` (the source's ``probe_video``) cut down to
        the frames ffmpeg delivered; it skips those its decoder rejects."""
        if self._pts_range is not None:
            self._check_range_landing(listed)
        if self.frames_read == listed.frame_count:
            return listed
        if not self.frames_read:
            raise MatteError(f"{self.source}: ffmpeg decoded none of its {listed.frame_count} frames")
        if len(self.frame_pts) != self.frames_read:
            raise MatteError(f"{self.source}: decoded {self.frames_read} frames but the container lists "
                             f"{listed.frame_count}, and not every frame came with its time")
        try:
            return listed.keeping(self.frame_pts)
        except MatteError as mismatch:
            raise MatteError(f"{self.source}: {mismatch}") from None

    def _check_range_landing(self, listed: VideoInfo) -> None:
        """A range's frames are the listed ones, less any ffmpeg skipped as damaged; a seek
        that landed inside the range (some demuxers seek by byte estimates) is an error."""
        known = set(listed.frame_pts)
        if any(pts not in known for pts in self.frame_pts):
            raise MatteError(f"{self.source}: ffmpeg delivered frames whose timestamps the file does not list")
        if self.frame_pts and self.frame_pts[0] != listed.frame_pts[0] and not self.dropped_before:
            raise MatteError(f"{self.source}: ffmpeg's seek landed after the part's first frame; "
                             "copying the file into Matroska first (ffmpeg -i IN -c copy OUT.mkv) may help")

    def kill(self) -> None:
        """Stop ffmpeg now (idempotent): a pending ``batches`` read then ends."""
        self._ffmpeg.kill()
