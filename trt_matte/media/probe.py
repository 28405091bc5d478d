"""What a video file holds: display size, pixel shape and every frame's time, read with
PyAV (the imageio-ffmpeg binary ships no ffprobe)."""
from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av

from ..errors import MatteError
from .ffmpeg import local_path

# libavformat's demuxers for still pictures: image2 and the "<codec>_pipe" family.
STILL_IMAGE_DEMUXER = "image2"
# Demuxers with a frame index (MP4/MOV's sample tables, Matroska's cues), which ffmpeg
# seeks exactly.
INDEXED_FORMATS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"})


@dataclass(frozen=True)
class VideoInfo:
    """What the matte must reproduce: display size, pixel shape and every frame's time."""

    width: int
    height: int
    # Presentation timestamps of every frame, ascending, in ``time_base`` units.
    frame_pts: tuple[int, ...]
    frame_durations: tuple[int, ...]
    time_base: Fraction
    average_rate: Fraction
    sample_aspect_ratio: Fraction | None
    # The container's start time in seconds: ffmpeg counts an input -ss from it.
    container_start: Fraction = Fraction(0)
    # ffmpeg seeks this container to a frame exactly (it has an index); else it may land
    # past the time asked for (MPEG-TS seeks by byte estimates).
    exact_seek: bool = True

    @property
    def frame_count(self) -> int:
        return len(self.frame_pts)

    def keeping(self, delivered_pts: list[int]) -> VideoInfo:
        """This timing for only the frames a decoder delivered (ffmpeg skips frames it
        cannot decode): each lasts until the next delivered one."""
        indices = [self._nearest_frame(pts) for pts in delivered_pts]
        if len(set(indices)) != len(indices) or indices != sorted(indices):
            raise MatteError("the decoded frames' timestamps do not match the file's frames")
        kept_pts = tuple(self.frame_pts[index] for index in indices)
        durations = _frame_durations(kept_pts, self.frame_durations[indices[-1]], self.time_base,
                                     self.average_rate)
        return replace(self, frame_pts=kept_pts, frame_durations=tuple(durations))

    def seek_seconds(self, index: int) -> float:
        """ffmpeg's input ``-ss`` that starts decoding at frame ``index``: half-way from the
        frame before, so rounding never lands on a neighbour (ffmpeg decodes from the
        keyframe before and drops what precedes the position)."""
        before = self.frame_pts[index - 1] if index else self.frame_pts[0] - self.frame_durations[0]
        return max(0.0, float((before + self.frame_pts[index]) / 2 * self.time_base - self.container_start))

    def _nearest_frame(self, pts: int) -> int:
        after = bisect.bisect_left(self.frame_pts, pts)
        candidates = [index for index in (after - 1, after) if 0 <= index < self.frame_count]
        return min(candidates, key=lambda index: abs(self.frame_pts[index] - pts))


def open_container(path: Path) -> av.container.InputContainer:
    if not path.exists():
        raise MatteError(f"no such file: {path}")
    if path.is_dir():
        raise MatteError(f"{path} is a folder, not a video file")
    try:
        return av.open(local_path(path), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise MatteError(f"{path} is not a readable video ({exc.strerror or exc})") from None


def _display_geometry(container: av.container.InputContainer, stream: av.VideoStream,
                      path: Path) -> tuple[int, int, Fraction | None]:
    """Width, height and sample aspect ratio of the picture players show.

    ffmpeg's decoder applies the display matrix (autorotate), so a source stored
    landscape with a 90-degree matrix is decoded, and matted, in portrait.
    """
    first_frame = _first_decodable_frame(container, stream)
    if first_frame is None:
        raise MatteError(f"{path}: the video stream has no decodable frame")
    sar = stream.sample_aspect_ratio
    sar = Fraction(sar.numerator, sar.denominator) if sar and sar.numerator else None
    if round(first_frame.rotation) % 180:
        return first_frame.height, first_frame.width, (1 / sar if sar else None)
    return first_frame.width, first_frame.height, sar


def _first_decodable_frame(container: av.container.InputContainer,
                           stream: av.VideoStream) -> av.VideoFrame | None:
    """The first frame the decoder delivers, past packets it rejects, as ffmpeg goes on."""
    decoder = stream.codec_context
    try:
        for packet in container.demux(stream):
            try:
                frames = decoder.decode(packet)  # the final, empty packet flushes the decoder
            except av.error.FFmpegError:
                continue
            if frames:
                return frames[0]
    except av.error.FFmpegError:
        pass  # a demuxing error: no frame reached the decoder
    return None


def _packet_times(container: av.container.InputContainer, stream: av.VideoStream,
                  path: Path) -> list[tuple[int | None, int]]:
    """(pts, duration) of every video packet, in file order."""
    try:
        return [(packet.pts, packet.duration or 0) for packet in container.demux(stream) if packet.size]
    except av.error.FFmpegError as exc:
        raise MatteError(f"{path}: the video is damaged ({exc.strerror or exc})") from None


def _presentation_times(packets: list[tuple[int | None, int]], time_base: Fraction,
                        rate: Fraction) -> list[tuple[int, int]]:
    """Packets' (pts, duration) in presentation order.

    Elementary streams (a raw .h264 file) carry no timestamps; their frames are
    timed by the packet durations, or failing those by the nominal rate, as ffmpeg does.
    """
    if all(pts is not None for pts, _ in packets):
        return sorted(packets)
    step = round(1 / (rate * time_base)) or 1
    durations = [duration or step for _, duration in packets]
    starts = itertools.accumulate([0] + durations[:-1])
    return list(zip(starts, durations))


def probe_video(path: Path) -> VideoInfo:
    """Read the first video stream's geometry and frame timestamps without decoding it all."""
    if path.is_dir():
        raise MatteError(f"{path} is a folder, not a video; for a folder of pictures: trt-matte images {path}")
    with open_container(path) as container:
        if not container.streams.video:
            raise MatteError(f"{path} has no video stream")
        if container.format.name == STILL_IMAGE_DEMUXER or container.format.name.endswith("_pipe"):
            raise MatteError(f"{path} is a still image ({container.format.name}), not a video; "
                             "use 'trt-matte images' for pictures")
        stream = container.streams.video[0]
        width, height, sar = _display_geometry(container, stream, path)
    # A fresh open for the packet walk: seeking back is not reliable on every format.
    with open_container(path) as container:
        stream = container.streams.video[0]
        time_base = Fraction(stream.time_base.numerator, stream.time_base.denominator)
        average_rate = Fraction(stream.average_rate or stream.guessed_rate or 25)
        times = _presentation_times(_packet_times(container, stream, path), time_base, average_rate)
        indexed = stream.frames
        container_start = Fraction(container.start_time or 0, av.time_base)
        exact_seek = container.format.name in INDEXED_FORMATS
    if not times:
        raise MatteError(f"{path}: the video stream has no frames")
    if indexed > len(times):
        raise MatteError(f"{path} is truncated: its index lists {indexed} frames, the file holds "
                         f"{len(times)}")
    pts = tuple(frame_pts for frame_pts, _ in times)
    durations = tuple(_frame_durations(pts, times[-1][1], time_base, average_rate))
    return VideoInfo(width, height, pts, durations, time_base, average_rate, sar, container_start, exact_seek)


def keyframe_pts(path: Path) -> frozenset[int]:
    """The presentation timestamps of the video's keyframes, where a split may cut."""
    with open_container(path) as container:
        stream = container.streams.video[0]
        try:
            return frozenset(packet.pts for packet in container.demux(stream)
                             if packet.size and packet.is_keyframe and packet.pts is not None)
        except av.error.FFmpegError as exc:
            raise MatteError(f"{path}: the video is damaged ({exc.strerror or exc})") from None


def _frame_durations(pts: tuple[int, ...], last_duration: int, time_base: Fraction,
                     average_rate: Fraction) -> list[int]:
    """Each frame lasts until the next one; the last keeps its own duration when known."""
    gaps = [later - earlier for earlier, later in zip(pts, pts[1:])]
    fallback = round(1 / (average_rate * time_base)) if average_rate else 1
    return gaps + [last_duration or (gaps[-1] if gaps else fallback)]


def decoded_format(source: Path) -> str | None:
    """The pixel format ffmpeg decodes ``source`` to (None when it cannot say)."""
    with open_container(source) as container:
        stream_format = container.streams.video[0].codec_context.format
        return stream_format.name if stream_format else None
