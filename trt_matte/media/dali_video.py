"""Video in, 320x320 RGB batches out, with NVIDIA DALI (the GPU path's reader).

    file --DALI reader (NVDEC on a GPU, libavcodec with device_id=None)--> RGB frames at
      the stored size --Lanczos, antialiased, to 320x320--> quarter turns to the display
      orientation --> one dense uint8 [B,1,320,320,3] tensor per batch

On a GPU every step runs there and the batch is handed to TensorRT by device pointer.
The CPU variant runs the same pipeline (VP8, VP9 and MJPEG only: DALI's CPU decoder
has no H.264), which is how the tests exercise it without a GPU.

DALI's reader never says when a file ends: it pads the last batch and then wraps into
the next epoch. So this module runs exactly ceil(frames / B) iterations, counts a frame
as real only when its number is the next one due, and fails on any disagreement with the
frame count probed from the container, since DALI silently drops what it cannot index
(packets before time zero, files it cannot open) and caches each file's index by path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import av
import numpy as np

from ..errors import MatteError
from .dali import DALI_ERRORS, dali_error, host_frames, pipeline_options, resized_for_model
from .ffmpeg import local_path
from .probe import VideoInfo, open_container

if TYPE_CHECKING:
    from nvidia.dali.data_node import DataNode
    from nvidia.dali.pipeline import Pipeline
    from nvidia.dali.tensors import TensorCPU, TensorGPU, TensorListCPU, TensorListGPU

READER = "Reader"
# NVDEC on data-centre Hopper/Ampere GPUs (H100, A100) has no AV1, and DALI's MJPEG
# path on NVDEC is unverified; ffmpeg decodes those on the CPU instead.
NVDEC_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "mpeg4"})
CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
# DALI converts NVDEC output as 8-bit NV12 and 4:2:2/4:4:4 decodes fail on NVDEC, so the
# GPU only takes 8-bit 4:2:0; the CPU decoder converts any format through libavcodec.
NVDEC_PIXEL_FORMATS = frozenset({"yuv420p", "yuvj420p", "nv12"})
# The reader queues one batch of full-size frames (32 x 4K RGB = 800 MB).
READER_PREFETCH = 1
# DALI turns YUV into RGB with BT.601's matrix whatever the stream says, while ffmpeg
# (and so the CPU path and rembg's usual feeds) follows the stream's tag. The (Kr, Kb)
# of the other matrices ffmpeg knows, by FFmpeg's AVColorSpace number; untagged streams
# (2) get BT.601 from both. Streams tagged with anything else go to the ffmpeg reader.
BT601_KR_KB = (0.299, 0.114)
KR_KB_BY_COLORSPACE = {1: (0.2126, 0.0722), 2: BT601_KR_KB, 4: (0.30, 0.11), 5: BT601_KR_KB, 6: BT601_KR_KB,
                       7: (0.212, 0.087), 9: (0.2627, 0.0593)}


@dataclass(frozen=True)
class _StreamFormat:
    """What decides whether DALI can decode the first video stream, and how to turn it."""

    codec: str
    pixel_format: str
    # Degrees counter-clockwise that players turn the stored picture (the display matrix,
    # as PyAV's VideoFrame.rotation reports it); DALI returns the stored picture.
    rotation: int
    # The display matrix also flips the picture (PyAV reports a flip as a turn).
    mirrored: bool = False
    colorspace: int = 2  # FFmpeg's AVColorSpace; 2 is "unspecified"


def _stream_format(source: Path) -> _StreamFormat:
    with open_container(source) as container:
        if not container.streams.video:
            raise MatteError(f"{source} has no video stream")
        stream = container.streams.video[0]
        try:
            # The display matrix arrives as frame side data, so one frame is decoded.
            first_frame = next(container.decode(stream))
        except (StopIteration, av.error.FFmpegError):
            raise MatteError(f"{source}: the video stream has no decodable frame") from None
        return _StreamFormat(stream.codec_context.codec.canonical_name, first_frame.format.name,
                             round(first_frame.rotation), _is_mirrored(first_frame), int(first_frame.colorspace))


def _is_mirrored(frame: av.VideoFrame) -> bool:
    """Whether the frame's display matrix flips the picture: its 2x2 part has a negative determinant."""
    for side_data in frame.side_data:
        if side_data.type == av.sidedata.sidedata.Type.DISPLAYMATRIX:
            matrix = np.frombuffer(bytes(side_data), np.int32).reshape(3, 3)
            return int(matrix[0, 0]) * int(matrix[1, 1]) - int(matrix[0, 1]) * int(matrix[1, 0]) < 0
    return False


def _ycbcr_to_rgb(kr: float, kb: float) -> np.ndarray:
    """The matrix from (Y, Cb, Cr) to RGB for luma weights ``kr``, ``kb`` (same units in and out)."""
    kg = 1 - kr - kb
    return np.array([[1, 0, 2 * (1 - kr)],
                     [1, -2 * kb * (1 - kb) / kg, -2 * kr * (1 - kr) / kg],
                     [1, 2 * (1 - kb), 0]])


def rgb_correction(colorspace: int) -> np.ndarray | None:
    """The 3x3 matrix that turns DALI's BT.601 RGB into the RGB of the stream's own matrix,
    or None when none is needed. YUV -> RGB is linear with the same offsets and range
    scaling for every matrix, so the correction is a product of two matrices.

    What DALI clipped to 0 or 255 stays wrong: BT.709 colours decoded as BT.601 leave
    the RGB cube for about a sixth of all colours, the most saturated (pure green comes
    back 35 levels off). Measured on ffmpeg's testsrc2 at full saturation, 320x320
    frames against ffmpeg's: 9.0 levels corrected, 7.6 uncorrected; at 60% saturation
    1.9 against 10.2, and masks of a person clip improve (IoU 0.974 -> 0.989). Reading
    YCbCr from NVDEC and converting after the resize would avoid the clipping on the
    GPU, but DALI's CPU decoder cannot output YCbCr, so that path could not be tested."""
    kr_kb = KR_KB_BY_COLORSPACE.get(colorspace)
    if kr_kb is None or kr_kb == BT601_KR_KB:
        return None
    return _ycbcr_to_rgb(*kr_kb) @ np.linalg.inv(_ycbcr_to_rgb(*BT601_KR_KB))


def unsupported_reason(source: Path, device_id: int | None) -> str | None:
    """Why DALI cannot decode ``source`` on ``device_id`` (NVDEC; None: its CPU decoder),
    or None when it can: for a one-line notice before falling back to the ffmpeg reader
    instead of failing inside DALI."""
    return _unsupported_reason(_stream_format(source), device_id)


def _unsupported_reason(found: _StreamFormat, device_id: int | None) -> str | None:
    on_gpu = device_id is not None
    codecs = NVDEC_CODECS if on_gpu else CPU_CODECS
    decoder = "NVDEC" if on_gpu else "DALI's CPU decoder"
    if found.codec not in codecs:
        return f"{decoder} does not decode {found.codec} (only {', '.join(sorted(codecs))})"
    if on_gpu and found.pixel_format not in NVDEC_PIXEL_FORMATS:
        return f"NVDEC via DALI takes 8-bit 4:2:0 video, not {found.pixel_format}"
    if found.rotation % 90:
        return f"the picture is displayed turned by {found.rotation} degrees, not a multiple of 90"
    if found.mirrored:
        return "the picture is displayed mirrored"
    if KR_KB_BY_COLORSPACE.get(found.colorspace) is None:
        return f"DALI cannot convert this stream's colour matrix (FFmpeg colorspace {found.colorspace})"
    return None


@dataclass(frozen=True)
class DaliBatch:
    """One batch as DALI produced it; only the first ``frames`` samples are real frames.

    ``rgb`` is the whole padded batch, a dense contiguous uint8 [B,1,320,320,3] tensor
    (``TensorGPU`` on a GPU: hand ``rgb.data_ptr()`` to TensorRT). It is ready to read
    when the batch is yielded (DALI ran host-synchronously), or, with the reader's
    ``cuda_stream``, for work queued on that stream; it stays valid while this object is
    referenced.
    """

    frames: int
    rgb: TensorCPU | TensorGPU
    # rgb is a view into this list; holding it keeps DALI from releasing the memory.
    _owner: TensorListCPU | TensorListGPU = field(repr=False)

    def host_array(self) -> np.ndarray:
        """The real frames as uint8 [frames,320,320,3] in host memory (copied from a GPU)."""
        return host_frames(self.rgb, self.frames)


class DaliFrameReader:
    """Every frame of ``source`` exactly once, in order, as 320x320 RGB batches.

    ``frame_count`` is the count probed from the container (``probe_video``); DALI's own
    count must agree. ``device_id=None`` runs DALI on the CPU. With ``cuda_stream`` (a
    GPU pipeline) each batch is handed over on that stream: work queued there after
    ``batches`` yields sees the finished batch, and the host does not wait for it.

    Frames come out in display orientation, as ffmpeg's autorotation delivers them:
    DALI ignores the display matrix, so the pipeline turns the 320x320 frames by the
    stream's quarter turns (exact pixel moves). Turning the masks afterwards instead
    would show U²-Net sideways people: on carphone turned 90 degrees, those masks turned
    back reach IoU 0.54 against the upright frames' masks.
    """

    def __init__(self, source: Path, frame_count: int, batch_size: int, device_id: int | None,
                 cuda_stream: int | None = None):
        self.source = Path(source)
        self._run_arguments = () if cuda_stream is None else (cuda_stream,)
        self.frame_count = frame_count
        self.batch_size = batch_size
        self.frames_read = 0
        found = _stream_format(self.source)
        reason = _unsupported_reason(found, device_id)
        if reason:
            raise MatteError(f"{self.source}: {reason}")
        self._pipe: Pipeline | None = self._build(found, device_id)
        # NVDEC checks what it can decode (codec profile, size limits) only when the first
        # frames are decoded: run once now, so a refusal comes from the constructor, where
        # the caller can still choose the ffmpeg reader.
        try:
            self._first_outputs: tuple | None = self._run()
        except MatteError:
            self.close()  # release the decoder now: the caller may go on with ffmpeg
            raise

    def _build(self, found: _StreamFormat, device_id: int | None) -> Pipeline:
        try:
            pipe = _frames_pipeline(local_path(self.source), self.batch_size, device_id,
                                    _quarter_turns(found.rotation), rgb_correction(found.colorspace))
            pipe.build()
            indexed = pipe.epoch_size(READER)
        except DALI_ERRORS as exc:
            raise dali_error(self.source, exc) from exc
        if indexed != self.frame_count:
            raise MatteError(f"{self.source}: DALI indexes {indexed} frames but the container lists "
                             f"{self.frame_count}; it has frames before time zero, or changed since it was probed")
        return pipe

    def _run(self) -> tuple:
        if self._pipe is None:
            raise MatteError(f"{self.source}: the DALI reader was stopped")
        try:
            return self._pipe.run(*self._run_arguments)
        except DALI_ERRORS as exc:
            raise dali_error(self.source, exc) from exc

    def batches(self) -> Iterator[DaliBatch]:
        """One pass over the file; the last batch is padded to the full batch size."""
        for _ in range(math.ceil(self.frame_count / self.batch_size)):
            outputs, self._first_outputs = self._first_outputs or self._run(), None
            rgb, frame_numbers = outputs
            numbers = np.asarray(frame_numbers.as_cpu().as_tensor()).ravel().tolist()
            real = _leading_real_frames(numbers, self.frames_read, self.source)
            self.frames_read += real
            yield DaliBatch(real, rgb.as_tensor(), rgb)
        self.check_frame_count(self.frame_count)

    # DALI names no damaged frame; one it cannot decode fails the frame count instead.
    concealed = 0

    def delivered_timing(self, listed: VideoInfo) -> VideoInfo:
        """After the last batch: every listed frame came (checked at the end of ``batches``)."""
        self.check_frame_count(listed.frame_count)
        return listed

    def check_frame_count(self, expected: int) -> None:
        """After the last batch: DALI delivered every frame the container lists."""
        if self.frames_read != expected:
            raise MatteError(f"{self.source}: DALI delivered {self.frames_read} frames, the container lists "
                             f"{expected}")

    def close(self) -> None:
        """Release DALI's threads and decoder now, not at garbage collection; batches
        already yielded stay valid."""
        self._pipe = None
        self._first_outputs = None


def _quarter_turns(rotation: int) -> int:
    # np.rot90's k: counter-clockwise quarter turns, e.g. -90 degrees -> 3.
    return (rotation // 90) % 4


def _frames_pipeline(path: str, batch_size: int, device_id: int | None, quarter_turns: int,
                     correction: np.ndarray | None) -> Pipeline:
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(**pipeline_options(batch_size, device_id))
    def frames_pipeline():
        video, frame_numbers = fn.experimental.readers.video(
            device="cpu" if device_id is None else "gpu", filenames=[path], sequence_length=1,
            random_shuffle=False, pad_mode="constant", pad_last_batch=True, enable_frame_num="sequence",
            prefetch_queue_depth=READER_PREFETCH, name=READER)
        # The colour correction is linear, so it may follow the resize, on 320x320 float
        # pixels (rounded once), instead of on every full-size pixel.
        model_input = resized_for_model(video, dtype=None if correction is None else types.FLOAT)
        if correction is not None:
            # Cast rounds to nearest and saturates.
            model_input = fn.cast(fn.coord_transform(model_input, M=correction.ravel().tolist()), dtype=types.UINT8)
        return _turned(model_input, quarter_turns), frame_numbers

    return frames_pipeline()


def _turned(frames: DataNode, quarter_turns: int) -> DataNode:
    """``np.rot90(frames, quarter_turns, axes=(1, 2))`` on square FHWC frames, in DALI."""
    from nvidia.dali import fn

    if quarter_turns == 1:
        return fn.transpose(fn.flip(frames, horizontal=1), perm=[0, 2, 1, 3], output_layout="FHWC")
    if quarter_turns == 2:
        return fn.flip(frames, horizontal=1, vertical=1)
    if quarter_turns == 3:
        return fn.transpose(fn.flip(frames, horizontal=0, vertical=1), perm=[0, 2, 1, 3], output_layout="FHWC")
    return frames


def _leading_real_frames(numbers: list[int], next_frame: int, source: Path) -> int:
    """How many samples open the batch with frames ``next_frame``, ``next_frame + 1``, ...

    A frame is real iff its number is >= 0 and seen for the first time; in order, that
    means it is the one due. The rest is padding: -1 (pad_mode="constant"), repeats
    of the last frame (pad_last_batch) or frames 0, 1, ... of the next epoch.
    """
    due = next_frame
    padding = False
    for number in numbers:
        if number < due:
            padding = True
        elif padding:
            raise MatteError(f"{source}: DALI returned frame {number} after padding")
        elif number == due:
            due += 1
        else:
            raise MatteError(f"{source}: DALI returned frame {number} where frame {due} was due")
    return due - next_frame
