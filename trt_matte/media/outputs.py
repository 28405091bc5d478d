"""What a video run writes: the matte, and deliverables made from it and the source.

    matte   <stem>.matte.mp4    the matte itself (H.264, full range)
    green   <stem>.green.mp4    the source over a colour, picture or video (H.264)
    prores  <stem>.alpha.mov    ProRes 4444, the matte as alpha
    webm    <stem>.alpha.webm   VP9 with alpha
    png     <stem>.png/         RGBA PNGs 000001.png... (+ timestamps.txt)

The masks are computed once and every deliverable comes from them, in ONE ffmpeg
process: masks arrive on stdin, and when a deliverable needs the picture that process
decodes the source a second time itself (on its own cores, in parallel with inference)
and splits both streams inside its filter graph.

Masks and source frames are paired by frame INDEX: both streams are re-timed to
0, 1, 2... on one common clock before ``alphamerge``/``overlay``, which pair by
timestamp. Pairing on the source's own (possibly variable-rate) clock against the masks'
constant-rate one would drift. The encoders then write constant-rate streams with no
frame reordering (B-frames off; no hidden alt-ref frames in VP9; ProRes is intra-only),
and ``mux.write_container`` stamps each packet with its source frame's exact time and
adds the source's audio, as for the matte.
"""
from __future__ import annotations

import contextlib
import errno
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import av

from ..errors import MatteError
from ..files import atomic_folder, atomic_output, disk_full_error, outputs_together, scratch_path
from .ffmpeg import local_path
from .probe import STILL_IMAGE_DEMUXER, VideoInfo, decoded_format, open_container
from .mux import QUICKTIME_SUFFIXES, AudioWindow, write_container

MATTE, GREEN, PRORES, WEBM, PNG = "matte", "green", "prores", "webm", "png"
DEFAULT_OUTPUTS = (MATTE,)
PREVIEW_NAME = ".preview"
MATTE_SUFFIXES = (*QUICKTIME_SUFFIXES, ".mkv")
# x264 shares the CPU with inference (and is the GPU path's CPU-bound stage): superfast
# costs about half of veryfast's CPU per 1080p frame, for files ~1.7x larger at the same
# quality. The matte, flat grey, takes ultrafast: 16 instead of 40 ms of CPU per 1080p
# frame (2 cores), files +16%, and the decoded matte as close (mean 0.07 vs 0.06/255).
X264_PRESETS = {GREEN: "superfast", MATTE: "ultrafast"}
# VP9 quality for the WebM deliverable (alpha is coded with the same settings); crf 30
# kept the alpha within 0.16/255 mean of a smooth 720p matte, 1.3/255 of a detailed one.
VP9_CRF = 30
# x264 quality of the matte and green outputs (--crf), lower is closer.
DEFAULT_CRF = 12
PRORES_QUANTISER = 2  # prores_ks -q:v: 1 is finest
SEQUENCE_PATTERN = "%06d.png"
TIMESTAMPS_NAME = "timestamps.txt"


@dataclass(frozen=True)
class Deliverable:
    kind: str
    description: str
    name_suffix: str  # appended to the source's stem for the default name
    suffixes: tuple[str, ...]  # what an explicit output file may end in; () for a folder
    scratch_suffix: str | None  # the encoder's constant-rate intermediate; None: written in place


DELIVERABLES = {
    MATTE: Deliverable(MATTE, "the matte", ".matte.mp4", MATTE_SUFFIXES, ".mkv"),
    GREEN: Deliverable(GREEN, "the composite", ".green.mp4", MATTE_SUFFIXES, ".mkv"),
    PRORES: Deliverable(PRORES, "ProRes with alpha", ".alpha.mov", (".mov",), ".mov"),
    WEBM: Deliverable(WEBM, "VP9 with alpha", ".alpha.webm", (".webm",), ".webm"),
    PNG: Deliverable(PNG, "the PNG sequence", ".png", (), None),
}


# ---------------------------------------------------------------------------------------
# what the user asked for


def is_format_list(value: str) -> bool:
    """Whether ``value`` names output kinds only (``matte,prores``), rather than a path."""
    words = [word.strip().lower() for word in value.split(",")]
    return all(words) and all(word in DELIVERABLES for word in words)


def parse_outputs(values: Iterable[str] | None) -> tuple[str, ...]:
    """``["matte,prores", "png"]`` -> ``("matte", "prores", "png")``, in order, once each."""
    kinds: list[str] = []
    for value in values or ():
        for word in (part.strip().lower() for part in value.split(",")):
            if word and word not in DELIVERABLES:
                hint = "; name the output file or folder with -o" if re.search(r"[./\\]", word) else ""
                raise MatteError(f"unknown --format {word!r}: choose from {', '.join(DELIVERABLES)}{hint}")
            if word and word not in kinds:
                kinds.append(word)
    return tuple(kinds) or DEFAULT_OUTPUTS


@dataclass(frozen=True)
class Background:
    """What the green output puts behind the subject: a colour, or a picture or video
    file scaled to cover the frame (centre-cropped; a shorter video loops)."""

    colour: str | None = None  # ffmpeg's 0xRRGGBB
    file: Path | None = None
    still: bool = False  # a picture: decoded once and repeated


NAMED_COLOURS = {"green": "00FF00", "blue": "0000FF", "black": "000000", "white": "FFFFFF"}
DEFAULT_BACKGROUND = Background(colour="0x00FF00")


def parse_background(value: str | None, kinds: Iterable[str]) -> Background | None:
    """The green output's background from ``--background``: a colour name, ``#RRGGBB``,
    or an image or video file (checked here, so a bad one fails before any work)."""
    if GREEN not in kinds:
        if value is not None:
            raise MatteError("--background applies to --format green only")
        return None
    if value is None:
        return DEFAULT_BACKGROUND
    if value.lower() in NAMED_COLOURS:
        return Background(colour="0x" + NAMED_COLOURS[value.lower()])
    if value.startswith("#"):
        if not re.fullmatch(r"#[0-9A-Fa-f]{6}", value):
            raise MatteError(f"--background {value}: a colour is written #RRGGBB, e.g. #00FF00")
        return Background(colour="0x" + value[1:].upper())
    return _background_file(Path(value))


def _background_file(path: Path) -> Background:
    if not path.exists():
        raise MatteError(f"--background {path}: no such file (colours: {', '.join(NAMED_COLOURS)} or #RRGGBB)")
    with open_container(path) as container:
        if not container.streams.video:
            raise MatteError(f"--background {path}: has no picture")
        try:
            next(container.decode(container.streams.video[0]))
        except (StopIteration, av.error.FFmpegError):
            raise MatteError(f"--background {path}: no picture could be decoded") from None
        name = container.format.name
    return Background(file=path, still=name == STILL_IMAGE_DEMUXER or name.endswith("_pipe"))


# ---------------------------------------------------------------------------------------
# where each deliverable goes


def default_path(source: Path, kind: str, preview: bool = False) -> Path:
    return source.with_name(source.stem + PREVIEW_NAME * preview + DELIVERABLES[kind].name_suffix)


def output_paths(source: Path, output: Path | None, kinds: tuple[str, ...], preview: bool = False) -> dict[str, Path]:
    """Each deliverable's final path: beside the source by default; in ``output`` when
    it is a folder (or when several deliverables were asked for); else ``output`` itself.
    A ``preview``'s default names say so: ``clip.preview.matte.mp4``."""
    if output is None:
        return {kind: default_path(source, kind, preview) for kind in kinds}
    output = Path(output)
    if not output.is_dir():
        if len(kinds) == 1:
            return {kinds[0]: output}
        if output.suffix.lower() in {suffix for kind in kinds for suffix in DELIVERABLES[kind].suffixes}:
            raise MatteError(f"-o {output} names one file, but {len(kinds)} outputs were asked for "
                             f"({', '.join(kinds)}): give a folder")
    return {kind: output / default_path(source, kind, preview).name for kind in kinds}


def existing_outputs(targets: Mapping[str, Path], overwrite: bool) -> dict[str, Path]:
    """The targets that exist and are to be kept (none with ``overwrite``)."""
    return {} if overwrite else {kind: path for kind, path in targets.items() if path.exists()}


def kept_note(path: Path) -> str:
    return f"kept {path}: it exists already (--overwrite replaces it)"


def check_output_paths(source: Path, targets: Mapping[str, Path]) -> None:
    for kind, target in targets.items():
        deliverable = DELIVERABLES[kind]
        if deliverable.suffixes and target.suffix.lower() not in deliverable.suffixes:
            raise MatteError(f"cannot write {target.name}: {deliverable.description} is written as "
                             f"{', '.join(deliverable.suffixes)}")
        if target.resolve() == source.resolve() or target.resolve() in source.resolve().parents:
            raise MatteError(f"the output would overwrite the input: {target}")
        if not deliverable.suffixes and target.exists() and not target.is_dir():
            raise MatteError(f"cannot write the PNG sequence to {target}: it is a file, not a folder")
        parent = target.parent
        if parent.exists() and not parent.is_dir():
            raise MatteError(f"cannot write {target}: {parent} is not a directory")


# ---------------------------------------------------------------------------------------
# the encoder's filter graph: inputs 0 = masks on stdin, 1 = source, 2 = background file


def chroma_format(info: VideoInfo) -> str:
    # 4:2:0 needs even sizes, so odd ones use 4:4:4 (libx264 refuses odd 4:2:0).
    return "yuv420p" if info.width % 2 == 0 and info.height % 2 == 0 else "yuv444p"


def _index_timing(info: VideoInfo) -> str:
    """Frame i gets timestamp i on a clock common to all streams: pairing by index."""
    rate = info.average_rate
    return f"settb={rate.denominator}/{rate.numerator},setpts=N"


def _sample_aspect(info: VideoInfo) -> list[str]:
    sar = info.sample_aspect_ratio
    if not sar:
        return []
    # setsar evaluates the ratio as a float; a large max brings the exact fraction back.
    return [f"setsar={sar.numerator}/{sar.denominator}:max={max(sar.numerator, sar.denominator)}"]


def _mask_chain(info: VideoInfo) -> str:
    """Masks (320x320, or already full size) to the displayed picture's size, 8-bit gray:
    full range, so alpha and matte keep all 256 levels."""
    # accurate_rnd: without it swscale's Lanczos biased the matte by ~0.5/255. On
    # full-size masks this step does nothing.
    steps = [_index_timing(info), f"scale={info.width}:{info.height}:flags=lanczos+accurate_rnd", "format=gray"]
    return ",".join(steps + _sample_aspect(info))


def _background_chain(background: Background, info: VideoInfo, file_input: str) -> str:
    size = f"{info.width}x{info.height}"
    if background.colour:
        steps = [f"color=c={background.colour}:s={size}:r={info.average_rate}"]
    else:
        # Cover the displayed frame (no bars, no distortion), centred; non-square
        # pixels: cover the display width, then squeeze to the stored width.
        sar = info.sample_aspect_ratio or 1
        display_width = max(1, round(info.width * sar))
        steps = [f"[{file_input}]scale={display_width}:{info.height}:force_original_aspect_ratio=increase",
                 f"crop={display_width}:{info.height}"]
        if display_width != info.width:
            steps.append(f"scale={info.width}:{info.height}")
        if background.still:
            steps.append("loop=loop=-1:size=1")  # decoded once, repeated from memory
    return ",".join([*steps, "format=gbrp", *_sample_aspect(info), _index_timing(info)])


def _branch(kind: str, mask: str, picture: str, info: VideoInfo, background: Background | None) -> str:
    """One deliverable from its copy of the masks (and of the source pictures).

    Every picture is brought to an 8-bit format with alpha BEFORE alphamerge, which then
    copies the matte into the alpha plane bit for bit. Left to negotiation, ffmpeg may
    pick one format for all branches (packed RGB when a rotated source feeds a
    composite) and convert the alpha afterwards, which moved levels 224..245 up by one.
    """
    if kind == MATTE:
        return f"[{mask}]scale=out_range=pc,format={chroma_format(info)}[{kind}]"
    if kind == PRORES:
        return (f"[{picture}]format=yuva444p[{kind}_opaque];"
                f"[{kind}_opaque][{mask}]alphamerge,format=yuva444p10le[{kind}]")
    if kind == WEBM:
        return f"[{picture}]format=yuva420p[{kind}_opaque];[{kind}_opaque][{mask}]alphamerge[{kind}]"
    if kind == PNG:
        return f"[{picture}]format=rgba[{kind}_opaque];[{kind}_opaque][{mask}]alphamerge[{kind}]"
    # Blended in the output's own YUV layout with the matte as straight alpha; the
    # backdrop is converted with the source's colour matrix (ffmpeg negotiates it), and
    # the output keeps the source's colour tags.
    assert background is not None
    chroma = chroma_format(info)
    with_alpha, blend = {"yuv420p": ("yuva420p", "yuv420"), "yuv444p": ("yuva444p", "yuv444")}[chroma]
    return (f"{_background_chain(background, info, '2:v')}[backdrop];"
            f"[{picture}]format={with_alpha}[{kind}_opaque];"
            f"[{kind}_opaque][{mask}]alphamerge[cutout];"
            f"[backdrop][cutout]overlay=format={blend}:shortest=1,format={chroma}[{kind}]")


def _split(stream: str, copies: list[str]) -> str:
    return f"[{stream}]split={len(copies)}" + "".join(f"[{copy}]" for copy in copies)


def _source_chain(info: VideoInfo, source_format: str | None, skip: int | None) -> str:
    # Rotated sources pass through ffmpeg's autorotate filter, which takes any format:
    # left open, negotiation turned 4:2:0 pictures to 4:4:4 before it, and the 4:2:0
    # branches then went 4:2:0 -> 4:4:4 -> 4:2:0. Pinning the decoded format avoids that.
    # A part of the source starts ``skip`` frames in and ends with its last frame, where
    # the file goes on (trimmed before the frames are numbered from 0).
    part = [] if skip is None else [f"trim=start_frame={skip}:end_frame={skip + info.frame_count}"]
    steps = [*part, _index_timing(info), *([f"format={source_format}"] if source_format else [])]
    return ",".join(steps)


def filter_graph(kinds: list[str], info: VideoInfo, background: Background | None,
                 source_format: str | None = None, skip: int | None = None) -> str:
    """``skip``: ``info`` lists a part of the source's frames, which starts that many
    frames after where the encoder's decoding of the source starts (None: the whole file)."""
    pictured = [kind for kind in kinds if kind != MATTE]
    chains = [f"[0:v]{_mask_chain(info)}[masks]", _split("masks", [f"mask_{kind}" for kind in kinds])]
    if pictured:
        chains += [f"[1:v]{_source_chain(info, source_format, skip)}[source]",
                   _split("source", [f"picture_{kind}" for kind in pictured])]
    chains += [_branch(kind, f"mask_{kind}", f"picture_{kind}", info, background) for kind in kinds]
    return ";".join(chains)


def _codec_arguments(kind: str, crf: int) -> list[str]:
    if kind in (MATTE, GREEN):
        range_tag = ["-color_range", "pc"] if kind == MATTE else []
        return ["-c:v", "libx264", "-preset", X264_PRESETS[kind], "-crf", str(crf), "-bf", "0", *range_tag]
    if kind == PRORES:
        # 8-bit alpha holds the 8-bit matte exactly (RDD 36 alpha_channel_type 1). With
        # 16-bit alpha, ffmpeg's 8->10->16-bit widening returned some levels 1 lower.
        # A fixed quantiser: prores_ks's default per-slice rate search ran 3.7x slower
        # (720p, 2 vCPUs: 13 vs 48 fps) for 1.1 dB more PSNR (54.8 vs 53.7 dB).
        return ["-c:v", "prores_ks", "-profile:v", "4444", "-pix_fmt", "yuva444p10le", "-alpha_bits", "8",
                "-q:v", str(PRORES_QUANTISER), "-vendor", "apl0"]
    if kind == WEBM:
        # No alt-ref frames: each packet is one shown frame, in order.
        return ["-c:v", "libvpx-vp9", "-pix_fmt", "yuva420p", "-b:v", "0", "-crf", str(VP9_CRF),
                "-deadline", "good", "-cpu-used", "4", "-row-mt", "1", "-auto-alt-ref", "0"]
    return ["-c:v", "png", "-f", "image2", "-start_number", "1"]


def _destination(kind: str, path: Path) -> str:
    if kind == PNG:  # the image2 muxer expands % in the whole path
        return local_path(path).replace("%", "%%") + "/" + SEQUENCE_PATTERN
    return local_path(path)


def encoder_arguments(destinations: Mapping[str, Path], info: VideoInfo, *, mask_size: str, crf: int,
                      source: Path | None, background: Background | None,
                      source_part: tuple[float | None, int] | None = None) -> list[str]:
    """ffmpeg arguments that read uint8 masks of ``mask_size`` on stdin and write every
    deliverable in ``destinations`` (kind -> where the encoder writes it); for a part of
    the source, ``source_part`` is (input -ss or None, frames to skip after it)."""
    kinds = list(destinations)
    inputs = ["-f", "rawvideo", "-pix_fmt", "gray", "-s", mask_size, "-framerate", str(info.average_rate),
              "-i", "pipe:0"]
    source_format = None
    if any(kind != MATTE for kind in kinds):
        if source is None:
            raise ValueError("composites need the source video")
        seek = ["-ss", f"{source_part[0]:.6f}"] if source_part and source_part[0] is not None else []
        inputs += [*seek, "-i", local_path(source)]  # autorotated, like the masks
        source_format = decoded_format(source)
    if GREEN in kinds and background and background.file:
        # A shorter background video loops; a picture is decoded once (the loop filter repeats it).
        inputs += [*([] if background.still else ["-stream_loop", "-1"]), "-i", local_path(background.file)]
    outputs: list[str] = []
    for kind, path in destinations.items():
        outputs += ["-map", f"[{kind}]", *_codec_arguments(kind, crf), "-fps_mode", "passthrough",
                    _destination(kind, path)]
    graph = filter_graph(kinds, info, background, source_format, skip=source_part[1] if source_part else None)
    return [*inputs, "-filter_complex", graph, "-y", *outputs]


def encoding_purpose(kinds: Iterable[str]) -> str:
    return "encoding " + " and ".join(DELIVERABLES[kind].description for kind in kinds)


# ---------------------------------------------------------------------------------------
# temporary names while encoding, published together at the end


@dataclass(frozen=True)
class Staging:
    encoded: dict[str, Path]  # kind -> where the encoder writes it
    partial: dict[str, Path]  # kind -> temporary final file, for the stamped container


@contextlib.contextmanager
def staged_outputs(targets: Mapping[str, Path]) -> Iterator[Staging]:
    """Temporary names beside every target; all take their final names on success, and
    none is left behind on failure (or Ctrl-C)."""
    with outputs_together() as stack:
        encoded, partial = {}, {}
        for kind, target in targets.items():
            scratch_suffix = DELIVERABLES[kind].scratch_suffix
            if scratch_suffix is None:
                encoded[kind] = stack.enter_context(atomic_folder(target, deliverable=True))
            else:
                partial[kind] = stack.enter_context(atomic_output(target, deliverable=True))
                encoded[kind] = stack.enter_context(scratch_path(target, scratch_suffix))
        yield Staging(encoded, partial)


def publish(staging: Staging, info: VideoInfo, audio_from: Path | None,
            audio_window: AudioWindow = None) -> None:
    """Stamp every encoded video with the source's frame times (plus audio, only that of
    ``audio_window`` when given: see ``mux.write_container``) and check the PNG sequence;
    the renames follow when ``staged_outputs`` closes."""
    for kind, partial in staging.partial.items():
        try:
            write_container(staging.encoded[kind], partial, info, audio_from, audio_window)
        except OSError as exc:  # PyAV's errors are OSErrors with the C library's errno
            if exc.errno != errno.ENOSPC:
                raise
            raise disk_full_error([*staging.encoded.values(), *staging.partial.values()]) from None
    if PNG in staging.encoded:
        _finish_sequence(staging.encoded[PNG], info)


def _finish_sequence(folder: Path, info: VideoInfo) -> None:
    written = sum(1 for name in folder.iterdir() if name.suffix == ".png")
    if written != info.frame_count:
        raise MatteError(f"the encoder wrote {written} PNG frames, the source has {info.frame_count}")
    # Frame times in mkvmerge's "timestamp format v2" (milliseconds), one line per PNG.
    lines = ["# timestamp format v2"]
    lines += [f"{float(pts * info.time_base * 1000):.6f}".rstrip("0").rstrip(".") for pts in info.frame_pts]
    (folder / TIMESTAMPS_NAME).write_text("\n".join(lines) + "\n")
