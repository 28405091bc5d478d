"""Video in, matte video (and other deliverables) out, on ONNX Runtime (the portable path).

    ffmpeg (decode, RGB at source size, Lanczos to 320x320) --pipe--> batches
      --backend--> uint8 masks --pipe--> ffmpeg (Lanczos up to display size, H.264)
      --> constant-rate intermediate --PyAV remux with the source's own timestamps--> OUT

The encoder sees frames on a pipe, which carries no timestamps, so the matte is first
encoded at a constant rate with B-frames off and ``mux.write_container`` then stamps
every packet with its source frame's exact time (variable frame rates and start
offsets survive) and adds the source's audio. The frame count is checked at every step.
The same encoder process writes the composites and alpha videos (``outputs``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

import numpy as np
from tqdm import tqdm

from ..build_engine.matte_graph import MODEL_SIZE
from ..engine import Backend
from ..errors import MatteError
from .ffmpeg_process import FfmpegProcess
from .media import VideoInfo, local_path, probe_video
from .outputs import (DEFAULT_OUTPUTS, MATTE, Background, check_output_paths, encoder_arguments,
                      encoding_purpose, output_paths, parse_background, parse_outputs, publish, staged_outputs)
from .smoothing import MaskSmoother
from .stages import run_overlapped

RGB_FRAME_BYTES = MODEL_SIZE * MODEL_SIZE * 3
MASK_SIZE = f"{MODEL_SIZE}x{MODEL_SIZE}"
# rembg downsizes RGB pictures with an antialiased Lanczos; U²-Net's per-image min-max
# makes the mask sensitive to that choice (bilinear costs ~0.04 IoU against rembg).
DOWNSCALE_FILTER = f"format=rgb24,scale={MODEL_SIZE}:{MODEL_SIZE}:flags=lanczos"
DEFAULT_CRF = 12


def _any_frame_of(numbers: Sequence[int]) -> str:
    """An ffmpeg expression true for those frame numbers: a balanced tree of max(), since
    ffmpeg's parser refuses a flat sum of more than 100 terms (nesting depth)."""
    if len(numbers) == 1:
        return f"eq(n,{numbers[0]})"
    middle = len(numbers) // 2
    return f"max({_any_frame_of(numbers[:middle])},{_any_frame_of(numbers[middle:])})"


class FrameReader:
    """ffmpeg decodes every frame (no duplicates, no drops) to 320x320 RGB on a pipe.

    ``frame_numbers`` keeps only those frames (0-based, in decode order), dropped before
    the resize so skipped frames cost only their decoding.
    """

    def __init__(self, source: Path, frame_numbers: Sequence[int] | None = None):
        chain = DOWNSCALE_FILTER
        if frame_numbers is not None:
            chain = f"select='{_any_frame_of(sorted(set(frame_numbers)))}',{DOWNSCALE_FILTER}"
        self._ffmpeg = FfmpegProcess(
            ["-i", local_path(source), "-map", "0:v:0", "-fps_mode", "passthrough",
             "-vf", chain, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
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


class MatteEncoder:
    """One ffmpeg process brings masks to the displayed picture and encodes every
    deliverable from them: the matte (H.264, B-frames off) and, given the source,
    composites and alpha videos (see ``outputs``).

    ``targets`` is where the matte goes, or a mapping from deliverable to where the
    encoder writes it. By default masks arrive at 320x320 and ffmpeg upsizes them; with
    ``full_size`` they arrive finished (upsized on the GPU) at the displayed size. Both
    readers hand over frames already turned to the display orientation, as ffmpeg's
    autorotated decode of the source is, so masks and pictures line up unturned.
    """

    def __init__(self, targets: Path | Mapping[str, Path], info: VideoInfo, crf: int = DEFAULT_CRF,
                 full_size: bool = False, *, source: Path | None = None, background: Background | None = None):
        destinations = {MATTE: Path(targets)} if isinstance(targets, (str, os.PathLike)) else dict(targets)
        mask_size = f"{info.width}x{info.height}" if full_size else MASK_SIZE
        self._purpose = encoding_purpose(destinations)
        self._ffmpeg = FfmpegProcess(
            encoder_arguments(destinations, info, mask_size=mask_size, crf=crf, source=source,
                              background=background),
            self._purpose, pipe_stdin=True)
        self.frames_written = 0

    def write(self, masks: np.ndarray) -> None:
        try:
            self._ffmpeg.process.stdin.write(np.ascontiguousarray(masks).reshape(-1).data)
        except (BrokenPipeError, OSError):
            raise MatteError(f"ffmpeg stopped while {self._purpose}: {self._ffmpeg.error_text()}") from None
        self.frames_written += len(masks)

    def finish(self) -> None:
        self._ffmpeg.finish()

    def kill(self) -> None:
        self._ffmpeg.kill()


@dataclass(frozen=True)
class VideoResult:
    output: Path  # the first deliverable asked for
    frames: int
    info: VideoInfo
    outputs: dict[str, Path] = field(default_factory=dict)  # every deliverable: kind -> path


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
                outputs: Sequence[str] = DEFAULT_OUTPUTS, background: str | Background | None = None,
                smooth: int = 0, probed: VideoInfo | None = None,
                announce: Callable[[str], None] = lambda message: None) -> VideoResult:
    """Write the matte of ``source`` (and/or the other ``outputs``: green, prores, webm,
    png) beside it or to ``output`` (a file for one deliverable, else a folder), with the
    source's audio unless ``audio`` is False. ``background`` is the green output's:
    a colour name, ``#RRGGBB`` or an image or video file (default green). ``smooth`` K > 0
    applies a centred K-frame temporal median against flicker (``runtime.smoothing``).
    ``probed`` is the source's ``probe_video`` result when the caller already has it:
    probing walks every packet of the file."""
    source = Path(source)
    kinds = parse_outputs(outputs)
    if not isinstance(background, Background):
        background = parse_background(background, kinds)
    targets = output_paths(source, output, kinds)
    info = probed or probe_video(source)
    check_output_paths(source, targets)
    with staged_outputs(targets) as staging:
        stages = _stages_for(source, info, backend, batch_size or backend.preferred_batch, announce)
        try:
            _encode(source, staging.encoded, info, stages, progress, crf, background, MaskSmoother(smooth))
        finally:
            stages.close()
        publish(staging, info, source if audio else None)
    return VideoResult(targets[kinds[0]], info.frame_count, info, targets)


def _encode(source: Path, destinations: Mapping[str, Path], info: VideoInfo, stages: MatteStages, progress: bool,
            crf: int, background: Background | None, smoother: MaskSmoother) -> None:
    encoder = MatteEncoder(destinations, info, crf, full_size=stages.full_size, source=source, background=background)
    bar = tqdm(total=info.frame_count, unit="frame", desc=source.name, disable=True if not progress else None,
               dynamic_ncols=True)

    def write_ready(masks: np.ndarray) -> None:
        # The smoother holds back its lookahead frames, so a push may release none.
        if len(masks):
            encoder.write(masks)
            bar.update(len(masks))

    try:
        run_overlapped(stages.batches(), stages.compute,
                       lambda computed: write_ready(smoother.push(stages.masks(computed))))
        write_ready(smoother.flush())
        encoder.finish()
    finally:
        bar.close()
        encoder.kill()
    if stages.frames_read() != info.frame_count:
        raise MatteError(f"{source}: decoded {stages.frames_read()} frames but the container lists "
                         f"{info.frame_count}; the file is damaged or truncated")
