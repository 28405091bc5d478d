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

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

import numpy as np
from tqdm import tqdm

from ..accuracy import Accuracy
from ..engine.backend import Backend
from ..errors import MatteError
from ..files import remove_stale_temporaries
from ..media.encoder import MatteEncoder
from ..media.excerpt import Excerpt, excerpt, preview_range
from ..media.frame_reader import FrameReader
from ..media.mux import check_timing_fits
from ..media.outputs import (DEFAULT_CRF, DEFAULT_OUTPUTS, Background, check_output_paths, existing_outputs,
                             kept_note, output_paths, parse_background, parse_outputs, publish, staged_outputs)
from ..media.probe import VideoInfo, probe_video
from ..models import MODEL_SIZE
from .guard import GuardTripped, PrecisionGuard, spread_frame_numbers
from .smoothing import MaskSmoother
from .stages import run_overlapped


@dataclass(frozen=True)
class VideoResult:
    output: Path  # the first deliverable asked for
    frames: int  # frames written: 0 when every output existed and was kept
    info: VideoInfo | None  # None when nothing was written (the source was not probed)
    outputs: dict[str, Path] = field(default_factory=dict)  # what this run wrote: kind -> path
    kept: dict[str, Path] = field(default_factory=dict)  # outputs that existed and were kept
    # Damaged source frames: ``skipped`` ones ffmpeg could not decode (the matte skips them
    # as ffmpeg does), ``concealed`` ones its decoder patched up and delivered.
    skipped: int = 0
    concealed: int = 0
    # The precision the outputs were written in, and for a reduced one the guard's
    # measure of it against FP32 over the frames it checked (None: no guard ran).
    precision: str = "fp32"
    precision_check: Accuracy | None = None
    checked_frames: int = 0
    low_confidence_frames: int = 0  # of the checked frames (``guard.LOW_CONFIDENCE_PEAK``)

    def damage_note(self) -> str:
        """What the end report says of damaged frames ("" for none)."""
        parts = [f"{self.skipped} skipped, as ffmpeg skips them"] if self.skipped else []
        parts += [f"{self.concealed} concealed by the decoder"] if self.concealed else []
        damaged = self.skipped + self.concealed
        return f"; ffmpeg reported {damaged} damaged frame{'s' * (damaged != 1)}: {', '.join(parts)}" if parts else ""


class MatteStages(Protocol):
    """How frames become masks on one device; ``run_overlapped`` runs the three stages
    in threads of their own and owns the teardown (see stages.py)."""

    # True when masks arrive finished at the stored frame size (upsized on the GPU).
    full_size: bool

    def batches(self) -> Iterator[Any]:
        """Decoded batches; runs in the reader thread."""

    def compute(self, batch: Any) -> Any:
        """Inference on one batch; runs in the inference thread."""

    def masks(self, computed: Any) -> np.ndarray:
        """uint8 [n,H,W] masks of a computed batch; runs in the writer thread."""

    def done(self, computed: Any) -> None:
        """The writer is through with a computed batch's masks."""

    # Frames the decoder reported damaged but delivered; known after the run.
    concealed: int

    def delivered_timing(self, listed: VideoInfo) -> VideoInfo:
        """After the run: the source's timing for the frames the decoder delivered."""

    def stop(self) -> None:
        """Stop decoding now, so a blocked read ends; idempotent."""

    def release(self) -> None:
        """Free the stages' memory; called once no thread uses it. Idempotent."""


class HostStages:
    """The portable path: ffmpeg decodes on the host, the backend takes host arrays.
    Masks go to the encoder at 320x320 (ffmpeg upsizes them), or finished at the frame's
    size from a backend that shapes masks (shaping counts output pixels)."""

    def __init__(self, source: Path, part: Excerpt, backend: Backend, batch_size: int,
                 guard: PrecisionGuard | None):
        self._reader = part.frame_reader(source)
        self._backend = backend
        self._batch_size = batch_size
        self._guard = guard
        self.full_size = backend.shapes_masks
        self._frame_size = (part.frames.height, part.frames.width)

    def batches(self) -> Iterator[np.ndarray]:
        return self._reader.batches(self._batch_size)

    def compute(self, batch: np.ndarray) -> np.ndarray:
        if not self.full_size:
            masks = self._backend.run(batch)
            if self._guard is not None:
                self._guard.spot_check(batch, masks)
            return masks
        if self._guard is not None:  # the guard compares 320x320 masks: the due frames are matted again
            self._guard.spot_check_again(batch, self._backend)
        return self._backend.run_at_size(batch, *self._frame_size)

    def masks(self, computed: np.ndarray) -> np.ndarray:
        return computed

    def done(self, computed: np.ndarray) -> None:
        pass

    @property
    def concealed(self) -> int:
        return self._reader.concealed

    def delivered_timing(self, listed: VideoInfo) -> VideoInfo:
        return self._reader.delivered_timing(listed)

    def stop(self) -> None:
        self._reader.kill()

    def release(self) -> None:
        pass  # host arrays only: the garbage collector frees them


class MaskWriter(Protocol):
    """Where the stages' masks go: the encoder (``media.encoder.MatteEncoder``), or a split
    run's lossless mask file (``media.mask_file.MaskFile``)."""

    def write(self, masks: np.ndarray) -> None:
        """Take uint8 [n,H,W] masks, in order."""

    def finish(self) -> None:
        """After the last masks: complete the output."""

    def kill(self) -> None:
        """Stop now (idempotent); the output is discarded."""


def stages_for(source: Path, part: Excerpt, backend: Backend, batch_size: int,
               announce: Callable[[str], None], guard: PrecisionGuard | None) -> MatteStages:
    if backend.takes_device_batches:
        from .gpu_video import DeviceStages  # CUDA imports only where a GPU backend runs
        return DeviceStages(source, part, backend, min(batch_size, backend.preferred_batch), announce, guard)
    return HostStages(source, part, backend, batch_size, guard)


def matte_video(source: Path, output: Path | None, backend: Backend, *, batch_size: int | None = None,
                progress: bool = True, crf: int = DEFAULT_CRF, audio: bool = True,
                outputs: Sequence[str] = DEFAULT_OUTPUTS, background: str | Background | None = None,
                smooth: int = 0, probed: VideoInfo | None = None, overwrite: bool = False,
                guard: PrecisionGuard | None = None, start: Fraction | None = None, end: Fraction | None = None,
                preview: bool = False, announce: Callable[[str], None] = lambda message: None) -> VideoResult:
    """Write the matte of ``source`` (and/or the other ``outputs``: green, prores, webm,
    png) beside it or to ``output`` (a file for one deliverable, else a folder), with the
    source's audio unless ``audio`` is False. ``background`` is the green output's:
    a colour name, ``#RRGGBB`` or an image or video file (default green). ``smooth`` K > 0
    applies a centred K-frame temporal median against flicker (``runtime.smoothing``).
    ``probed`` is the source's ``probe_video`` result when the caller already has it:
    probing walks every packet of the file. An output that exists already is kept (and
    said so) unless ``overwrite``. ``guard`` checks a reduced-precision ``backend``
    against FP32 before and during the run, and falls back to FP32 below the gate
    (``runtime.guard``). ``start`` and ``end`` (seconds from the first frame) matte only
    the frames from ``start`` up to ``end``, timed from ``start`` (``media.excerpt``);
    ``preview`` mattes a few seconds from the middle instead, into outputs named as previews."""
    if preview and (start is not None or end is not None):
        raise MatteError("a preview picks its own seconds from the middle: leave out --start and --end")
    source = Path(source)
    kinds = parse_outputs(outputs)
    if not isinstance(background, Background):
        background = parse_background(background, kinds)
    targets = output_paths(source, output, kinds, preview)
    check_output_paths(source, targets)
    kept = existing_outputs(targets, overwrite)
    for path in kept.values():
        announce(kept_note(path))
    written = {kind: path for kind, path in targets.items() if kind not in kept}
    if not written:
        return VideoResult(targets[kinds[0]], 0, None, {}, kept)
    info = probed or probe_video(source)
    part = excerpt(info, *(preview_range(info) if preview else (start, end)))
    check_timing_fits(part.frames, written.values())
    remove_stale_temporaries((target.parent for target in written.values()), announce)
    smoother = MaskSmoother(smooth)  # checks the strength before any process or buffer exists
    if guard is not None and not guard.holds_before_writing(backend, spread_frames(source, part.frames)):
        backend, guard = guard.reference, None
    try:
        delivered, concealed = write_outputs(
            source, written, part,
            lambda: stages_for(source, part, backend, batch_size or backend.preferred_batch, announce, guard),
            progress=progress, crf=crf, background=background, smoother=smoother, audio=audio)
    except GuardTripped as tripped:
        announce(f"{tripped}: writing the outputs again in FP32")
        return matte_video(source, output, guard.reference, batch_size=batch_size, progress=progress, crf=crf,
                           audio=audio, outputs=outputs, background=background, smooth=smooth, probed=info,
                           overwrite=overwrite, start=start, end=end, preview=preview, announce=announce)
    check = guard.accuracy() if guard is not None else None
    return VideoResult(targets[kinds[0]], delivered.frame_count, part.output_timing(delivered), written, kept,
                       skipped=part.frames.frame_count - delivered.frame_count, concealed=concealed,
                       precision=backend.precision, precision_check=check,
                       checked_frames=guard.checked_frames if guard is not None else 0,
                       low_confidence_frames=guard.low_confidence_frames if guard is not None else 0)


def spread_frames(source: Path, info: VideoInfo) -> np.ndarray:
    """The guard's frames, decoded and resized as the run decodes them: each read by
    seeking to its time (exact frames: keyframes alone may be one frame for a short
    clip), so a long clip is not decoded twice."""
    frames = []
    for number in spread_frame_numbers(info.frame_count):
        reader = FrameReader(source, seek_seconds=info.seek_seconds(number), max_frames=1)
        try:
            frames.extend(reader.batches(1))
        except MatteError:
            continue  # a damaged stretch: the run itself decodes past it, the guard checks the others
        finally:
            reader.kill()
    return np.concatenate(frames) if frames else np.empty((0, MODEL_SIZE, MODEL_SIZE, 3), np.uint8)


def write_outputs(source: Path, written: Mapping[str, Path], part: Excerpt, make_stages: Callable[[], MatteStages], *,
                  progress: bool, crf: int, background: Background | None, smoother: MaskSmoother,
                  audio: bool) -> tuple[VideoInfo, int]:
    """Every output in ``written`` (kind -> path) from the masks of the stages
    ``make_stages`` makes, published only when all are complete: (the source timing of
    the frames written, how many of them the decoder concealed)."""
    with staged_outputs(written) as staging:
        stages = make_stages()
        delivered = run_stages(stages, lambda full_size: MatteEncoder(
            staging.encoded, part.frames, crf, full_size=full_size, source=source, background=background,
            source_part=part.source_part()), part.frames, source.name, progress, smoother)
        publish(staging, part.output_timing(delivered), source if audio else None, part.audio_window)
    return delivered, stages.concealed


def run_stages(stages: MatteStages, open_writer: Callable[[bool], MaskWriter], listed: VideoInfo, label: str,
               progress: bool, smoother: MaskSmoother) -> VideoInfo:
    """Run the stages into the writer ``open_writer(stages.full_size)`` makes; this function
    owns ``stages`` from here on. Returns the source timing of the frames written:
    ``listed``'s, less those ffmpeg skipped as damaged."""
    try:
        encoder = open_writer(stages.full_size)
    except BaseException:
        stages.stop()
        stages.release()  # no thread was started: nothing else holds the memory
        raise
    bar = tqdm(total=listed.frame_count, unit="frame", desc=label, disable=True if not progress else None,
               dynamic_ncols=True)

    def write_ready(masks: np.ndarray) -> None:
        # The smoother holds back its lookahead frames, so a push may release none.
        if len(masks):
            encoder.write(masks)
            bar.update(len(masks))

    def write(computed: Any) -> None:
        write_ready(smoother.push(stages.masks(computed)))  # the smoother keeps copies, not views
        stages.done(computed)

    def stop() -> None:
        stages.stop()
        encoder.kill()

    try:
        run_overlapped(stages.batches(), stages.compute, write, stop=stop, release=stages.release)
        write_ready(smoother.flush())
        encoder.finish()
    finally:
        bar.close()
        stop()
    return stages.delivered_timing(listed)
