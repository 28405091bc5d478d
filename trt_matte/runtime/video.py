"""Video in, matte video out, on ONNX Runtime (the portable path).

    ffmpeg (decode, RGB at source size, Lanczos to 320x320) --pipe--> batches
      --backend--> uint8 masks --pipe--> ffmpeg (Lanczos up to display size, H.264)
      --> constant-rate intermediate --PyAV remux with the source's own timestamps--> OUT

The encoder sees frames on a pipe, which carries no timestamps, so the matte is first
encoded at a constant rate with B-frames off and ``mux.write_container`` then stamps
every packet with its source frame's exact time (variable frame rates and start
offsets survive) and adds the source's audio. The frame count is checked at every step.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np
from tqdm import tqdm

from ..build_engine.matte_graph import MODEL_SIZE
from ..engine import Backend
from ..errors import MatteError
from ..files import atomic_output, scratch_path
from .ffmpeg_process import FfmpegProcess
from .media import VideoInfo, local_path, probe_video
from .mux import QUICKTIME_SUFFIXES, write_container
from .stages import run_overlapped

RGB_FRAME_BYTES = MODEL_SIZE * MODEL_SIZE * 3
MASK_SIZE = f"{MODEL_SIZE}x{MODEL_SIZE}"
# rembg downsizes RGB pictures with an antialiased Lanczos; U²-Net's per-image min-max
# makes the mask sensitive to that choice (bilinear costs ~0.04 IoU against rembg).
DOWNSCALE_FILTER = f"format=rgb24,scale={MODEL_SIZE}:{MODEL_SIZE}:flags=lanczos"
DEFAULT_CRF = 12
# The encoder shares the CPU with inference on the portable path: superfast costs about
# half of veryfast's CPU per 1080p frame, for mattes ~1.7x larger at the same quality.
ENCODER_PRESET = "superfast"
OUTPUT_SUFFIXES = (*QUICKTIME_SUFFIXES, ".mkv")


class FrameReader:
    """ffmpeg decodes every frame (no duplicates, no drops) to 320x320 RGB on a pipe."""

    def __init__(self, source: Path):
        self._ffmpeg = FfmpegProcess(
            ["-i", local_path(source), "-map", "0:v:0", "-fps_mode", "passthrough",
             "-vf", DOWNSCALE_FILTER, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
            f"decoding {source.name}", pipe_stdout=True)
        self.frames_read = 0

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        stream = self._ffmpeg.process.stdout
        while chunk := stream.read(RGB_FRAME_BYTES * batch_size):
            whole_frames = len(chunk) // RGB_FRAME_BYTES
            if whole_frames == 0:
                break
            self.frames_read += whole_frames
            yield np.frombuffer(chunk, np.uint8, whole_frames * RGB_FRAME_BYTES).reshape(
                whole_frames, MODEL_SIZE, MODEL_SIZE, 3)
        self._ffmpeg.finish()

    def kill(self) -> None:
        self._ffmpeg.kill()


def _encoder_filter(info: VideoInfo) -> str:
    """Masks (320x320, or already full size) to the displayed picture's size, full range."""
    # Full range keeps all 256 matte levels; 4:2:0 needs even sizes, so odd ones use 4:4:4.
    chroma = "yuv420p" if info.width % 2 == 0 and info.height % 2 == 0 else "yuv444p"
    # accurate_rnd: without it swscale's Lanczos biased the matte by ~0.5/255. On
    # full-size masks the scale step only converts gray to full-range YUV.
    steps = [f"scale={info.width}:{info.height}:flags=lanczos+accurate_rnd:out_range=pc", f"format={chroma}"]
    if info.sample_aspect_ratio:
        sar = info.sample_aspect_ratio
        # setsar evaluates the ratio as a float; a large max brings the exact fraction back.
        steps.append(f"setsar={sar.numerator}/{sar.denominator}:max={max(sar.numerator, sar.denominator)}")
    return ",".join(steps)


class MatteEncoder:
    """ffmpeg brings masks to the displayed picture and encodes H.264, B-frames off.

    By default masks arrive at 320x320 and ffmpeg upsizes them; with ``full_size``
    they arrive finished (upsized on the GPU) at the displayed size. Both readers hand
    over frames already turned to the display orientation, so the matte needs no turn.
    """

    def __init__(self, target: Path, info: VideoInfo, crf: int = DEFAULT_CRF, full_size: bool = False):
        mask_size = f"{info.width}x{info.height}" if full_size else MASK_SIZE
        self._ffmpeg = FfmpegProcess(
            ["-f", "rawvideo", "-pix_fmt", "gray", "-s", mask_size,
             "-framerate", str(info.average_rate), "-i", "pipe:0",
             "-vf", _encoder_filter(info), "-c:v", "libx264", "-preset", ENCODER_PRESET,
             "-crf", str(crf), "-bf", "0", "-color_range", "pc", "-y", local_path(target)],
            "encoding the matte", pipe_stdin=True)
        self.frames_written = 0

    def write(self, masks: np.ndarray) -> None:
        try:
            self._ffmpeg.process.stdin.write(np.ascontiguousarray(masks).reshape(-1).data)
        except (BrokenPipeError, OSError):
            raise MatteError(f"ffmpeg stopped while encoding the matte: {self._ffmpeg.error_text()}") from None
        self.frames_written += len(masks)

    def finish(self) -> None:
        self._ffmpeg.finish()

    def kill(self) -> None:
        self._ffmpeg.kill()


@dataclass(frozen=True)
class VideoResult:
    output: Path
    frames: int
    info: VideoInfo


def default_output(source: Path) -> Path:
    return source.with_name(f"{source.stem}.matte.mp4")


class MatteStages(Protocol):
    """How frames become masks on one device; ``matte_video`` overlaps the stages."""

    # True when masks arrive finished at the stored frame size (upsized on the GPU).
    full_size: bool

    def batches(self) -> Iterator[Any]:
        """Decoded batches; runs in the reader thread."""

    def compute(self, batch: Any) -> Any:
        """Inference on one batch; runs in the calling thread."""

    def masks(self, computed: Any) -> np.ndarray:
        """uint8 [n,H,W] masks of a computed batch; runs in the writer thread."""

    def frames_read(self) -> int: ...

    def close(self) -> None: ...


class HostStages:
    """The portable path: ffmpeg decodes on the host, the backend takes host arrays."""

    full_size = False

    def __init__(self, source: Path, backend: Backend, batch_size: int):
        self._reader = FrameReader(source)
        self._backend = backend
        self._batch_size = batch_size

    def batches(self) -> Iterator[np.ndarray]:
        return self._reader.batches(self._batch_size)

    def compute(self, batch: np.ndarray) -> np.ndarray:
        return self._backend.run(batch)

    def masks(self, computed: np.ndarray) -> np.ndarray:
        return computed

    def frames_read(self) -> int:
        return self._reader.frames_read

    def close(self) -> None:
        self._reader.kill()


def _stages_for(source: Path, info: VideoInfo, backend: Backend, batch_size: int,
                announce: Callable[[str], None]) -> MatteStages:
    if backend.takes_device_batches:
        from .gpu_video import DeviceStages  # CUDA imports only where a GPU backend runs
        return DeviceStages(source, info, backend, min(batch_size, backend.preferred_batch), announce)
    return HostStages(source, backend, batch_size)


def matte_video(source: Path, output: Path | None, backend: Backend, *, batch_size: int | None = None,
                progress: bool = True, crf: int = DEFAULT_CRF, audio: bool = True,
                announce: Callable[[str], None] = lambda message: None) -> VideoResult:
    """Write the matte of ``source`` to ``output`` (default ``<stem>.matte.mp4`` beside it),
    with the source's audio unless ``audio`` is False."""
    source = Path(source)
    output = _output_path(source, output)
    info = probe_video(source)
    _check_output(source, output)
    with atomic_output(output) as partial, scratch_path(output, ".mkv") as encoded:
        stages = _stages_for(source, info, backend, batch_size or backend.preferred_batch, announce)
        try:
            _encode(source, encoded, info, stages, progress, crf)
        finally:
            stages.close()
        write_container(encoded, partial, info, source if audio else None)
    return VideoResult(output, info.frame_count, info)


def _encode(source: Path, encoded: Path, info: VideoInfo, stages: MatteStages, progress: bool, crf: int) -> None:
    encoder = MatteEncoder(encoded, info, crf, full_size=stages.full_size)
    bar = tqdm(total=info.frame_count, unit="frame", desc=source.name, disable=True if not progress else None,
               dynamic_ncols=True)

    def write(computed: Any) -> None:
        masks = stages.masks(computed)
        encoder.write(masks)
        bar.update(len(masks))

    try:
        run_overlapped(stages.batches(), stages.compute, write)
        encoder.finish()
    finally:
        bar.close()
        encoder.kill()
    if stages.frames_read() != info.frame_count:
        raise MatteError(f"{source}: decoded {stages.frames_read()} frames but the container lists "
                         f"{info.frame_count}; the file is damaged or truncated")


def _output_path(source: Path, output: Path | None) -> Path:
    if output is None:
        return default_output(source)
    output = Path(output)
    return output / default_output(source).name if output.is_dir() else output


def _check_output(source: Path, output: Path) -> None:
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise MatteError(f"cannot write {output.name}: the matte is written as {', '.join(OUTPUT_SUFFIXES)}")
    if output.resolve() == source.resolve():
        raise MatteError(f"the output would overwrite the input: {output}")
    parent = output.parent
    if parent.exists() and not parent.is_dir():
        raise MatteError(f"cannot write {output}: {parent} is not a directory")
