"""The final container: the matte's packets stamped with the source's frame times,
interleaved with the source's audio.

The encoder reads masks from a pipe, which carries no timestamps, so the matte is
encoded at a constant rate with B-frames off (decode order = display order) and every
packet here gets its source frame's exact time: variable frame rates and start offsets
survive. Audio streams are copied when the container can hold their codec, and
re-encoded otherwise: to AAC, or to Opus in WebM, which admits only Opus and Vorbis.
"""
from __future__ import annotations

import heapq
import io
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import av

from ..errors import MatteError
from .ffmpeg import local_path
from .probe import VideoInfo, open_container

QUICKTIME_SUFFIXES = (".mp4", ".m4v", ".mov")
FALLBACK_AUDIO_CODEC = "aac"
# Containers whose audio must be re-encoded to something other than AAC.
FALLBACK_AUDIO_CODECS = {"webm": "libopus"}
# Source seconds [from, to) of the audio kept; None: all of it.
AudioWindow = tuple[Fraction, Fraction] | None


def check_timing_fits(info: VideoInfo, targets: Iterable[Path]) -> None:
    """MP4 and MOV cannot hold two frames at one time, where Matroska can: a source with
    such frames is refused before any work when one of those is to be written."""
    repeated = info.frame_count - len(set(info.frame_pts))
    strict = [target for target in targets if target.suffix.lower() in QUICKTIME_SUFFIXES]
    if repeated and strict:
        raise MatteError(f"{repeated} of the source's {info.frame_count} frames share their time with another, "
                         f"which {strict[0].suffix} cannot hold; write Matroska instead "
                         f"(-o {strict[0].with_suffix('.mkv').name})")


def _container_options(target: Path, info: VideoInfo) -> dict[str, str]:
    # MP4/MOV store a start offset in the movie timescale (1/1000 s by default); the
    # stream's own timescale keeps it exact (a .ts source starting at 1.4667 s, say).
    if target.suffix.lower() in QUICKTIME_SUFFIXES:
        return {"movie_timescale": str(info.time_base.denominator)}
    return {}


def _stamped_matte(matte: av.container.InputContainer, output: av.container.OutputContainer,
                   info: VideoInfo, keep_codec_tag: bool) -> Iterator[tuple[Fraction, av.Packet]]:
    in_stream = matte.streams.video[0]
    out_stream = output.add_stream_from_template(in_stream)
    out_stream.time_base = info.time_base
    if keep_codec_tag:
        # The template leaves the tag out, and MOV names the ProRes flavour only there:
        # 4444 (ap4h) would be labelled 422 HQ (apch), which editors read without alpha.
        out_stream.codec_context.codec_tag = in_stream.codec_context.codec_tag

    def packets() -> Iterator[tuple[Fraction, av.Packet]]:
        count = 0
        for packet in matte.demux(in_stream):
            if packet.size == 0:
                continue  # the demuxer's end-of-stream marker
            if count >= info.frame_count:
                raise MatteError("the encoder produced more frames than the source has")
            packet.stream, packet.time_base = out_stream, info.time_base
            packet.pts = packet.dts = info.frame_pts[count]
            packet.duration = info.frame_durations[count]
            count += 1
            yield packet.pts * info.time_base, packet
        if count != info.frame_count:
            raise MatteError(f"the encoder produced {count} frames, the source has {info.frame_count}")
    return packets()


def _copied_audio(stream: av.AudioStream, source: av.container.InputContainer, output: av.container.OutputContainer,
                  window: AudioWindow) -> Iterator[tuple[Fraction, av.Packet]]:
    out_stream = output.add_stream_from_template(stream)
    shift = _seek_to_window(source, stream, window)

    def packets() -> Iterator[tuple[Fraction, av.Packet]]:
        for packet in source.demux(stream):
            if packet.size == 0 or packet.dts is None:
                continue
            if window is not None:
                starts = (packet.pts if packet.pts is not None else packet.dts) * stream.time_base
                if starts >= window[1]:
                    return
                if starts < window[0]:
                    continue
                packet.dts -= shift
                packet.pts = packet.pts - shift if packet.pts is not None else None
            packet.stream = out_stream
            yield packet.dts * stream.time_base, packet
    return packets()


def _seek_to_window(source: av.container.InputContainer, stream: av.AudioStream, window: AudioWindow) -> int:
    """Seek the audio's demuxer to just before ``window``; returns the timestamp shift (in
    the stream's time base) that puts the window's start at 0."""
    if window is None:
        return 0
    source.seek(int(window[0] / stream.time_base), stream=stream, backward=True)
    return round(window[0] / stream.time_base)


def _encodable_rate(codec_name: str, rate: int) -> int:
    """``rate`` if the encoder takes it, else the nearest higher rate it takes (Opus
    runs at 48 kHz and below only: 44.1 kHz becomes 48 kHz)."""
    rates = av.codec.Codec(codec_name, "w").audio_rates
    if not rates or rate in rates:
        return rate
    return min((higher for higher in rates if higher > rate), default=max(rates))


def _reencoded_audio(stream: av.AudioStream, source: av.container.InputContainer, output: av.container.OutputContainer,
                     window: AudioWindow) -> Iterator[tuple[Fraction, av.Packet]]:
    codec_name = FALLBACK_AUDIO_CODECS.get(output.format.name, FALLBACK_AUDIO_CODEC)
    rate = _encodable_rate(codec_name, stream.rate)
    out_stream = output.add_stream(codec_name, rate=rate, layout=stream.layout.name)
    resampler = av.AudioResampler(format=out_stream.format.name, layout=stream.layout.name, rate=rate)
    shift = _seek_to_window(source, stream, window)

    def decoded() -> Iterator[av.AudioFrame]:
        for frame in source.decode(stream):
            if window is not None:
                if frame.pts is None or frame.pts * stream.time_base >= window[1]:
                    return
                if frame.pts * stream.time_base < window[0]:
                    continue
                frame.pts -= shift
            yield frame

    def packets() -> Iterator[tuple[Fraction, av.Packet]]:
        frames = (resampled for frame in decoded() for resampled in resampler.resample(frame))
        for frame in [*frames, None]:  # None flushes the encoder
            for packet in out_stream.encode(frame):
                yield packet.dts * packet.time_base, packet
    return packets()


def _audio_streams(audio_from: Path, output: av.container.OutputContainer, readers: list[av.container.InputContainer],
                   window: AudioWindow) -> list[Iterator[tuple[Fraction, av.Packet]]]:
    """One packet iterator per audio stream, each on a demuxer of its own so the
    streams can be read in step with the matte."""
    with open_container(audio_from) as probe:
        audio_count = len(probe.streams.audio)
    iterators = []
    for position in range(audio_count):
        readers.append(open_container(audio_from))
        stream = readers[-1].streams.audio[position]
        copyable = _container_takes(output.format.name, stream)
        iterators.append((_copied_audio if copyable else _reencoded_audio)(stream, readers[-1], output, window))
    return iterators


def _container_takes(format_name: str, stream: av.AudioStream) -> bool:
    """Whether a ``format_name`` file can carry ``stream`` as it is. The muxer only
    says so when it writes a header (MOV refuses Opus and FLAC that MP4 takes), so
    try one in memory."""
    trial = av.open(io.BytesIO(), "w", format=format_name)
    try:
        trial.add_stream_from_template(stream)
        trial.start_encoding()
        return True
    except (av.error.FFmpegError, ValueError):
        return False
    finally:
        try:
            trial.close()
        except av.error.FFmpegError:
            pass


def write_container(encoded: Path, target: Path, info: VideoInfo, audio_from: Path | None,
                    audio_window: AudioWindow = None) -> None:
    """Mux the encoded matte (and the audio of ``audio_from``, if given) into ``target``.
    With ``audio_window`` (source seconds [from, to)) only the audio that starts in it is
    kept, moved so that ``from`` is 0: a part of the source (``media.excerpt``)."""
    readers: list[av.container.InputContainer] = []
    try:
        with open_container(encoded) as matte, \
                av.open(local_path(target), "w", options=_container_options(target, info)) as output:
            same_family = encoded.suffix.lower() in QUICKTIME_SUFFIXES and target.suffix.lower() in QUICKTIME_SUFFIXES
            streams = [_stamped_matte(matte, output, info, keep_codec_tag=same_family)]
            if audio_from:
                streams += _audio_streams(audio_from, output, readers, audio_window)
            # Interleaved by time, so the muxer never buffers a whole stream.
            for _, packet in heapq.merge(*streams, key=lambda timed: timed[0]):
                output.mux(packet)
    finally:
        for reader in readers:
            reader.close()
