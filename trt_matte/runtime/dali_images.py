"""Still images on the GPU path: DALI decodes and resizes, the engine mattes each image
at its own size.

    files --Pillow header check--> DALI file reader --image decoder (nvJPEG on the GPU
      for JPEG; EXIF orientation applied)--> RGB at the displayed size --Lanczos3,
      antialiased, to 320x320--> dense uint8 [B,320,320,3] on the GPU --engine.enqueue
      once per run of same-sized images--> uint8 masks at each image's size
      --one copy to pinned host memory--> PNG files (images.write_matte, atomic)

images.py keeps everything else: which files, output names, skip/overwrite, failure
messages. Files DALI must not or cannot decode go through its Pillow path instead,
which writes them or reports why not, with the messages of a run without DALI.

One bad file kills a DALI pipeline, with no option to skip it, so:
- Every file first gets a cheap Pillow check (header parsed; a PNG's chunk CRCs read to
  the end; no pixels decoded): 0.05 ms for a 12 MP JPEG and 7 ms for a 17 MB PNG,
  against 54 and 172 ms for Pillow's full decode. Empty files, non-images and cut-off
  PNGs never reach DALI.
- What still kills the pipeline (a JPEG cut off inside its scan data passes the check)
  is the file DALI's message names, or, when it names none, every file of the batch that
  failed. Those go to the Pillow path, and a new pipeline (4-10 ms to build on the
  CPU) resumes with the files not yet written. Each stop moves at least one file out,
  so the loop ends. A failure outside the reader and decoder aborts, as does one while
  building the pipeline (no file is read then).

Masks at each image's own size: the engine upsizes a whole batch to one size, so it
runs once per run of consecutive same-sized images (one run per batch when the
pictures share a size). At worst, all sizes mixed, that is one batch-1 network run per
image, expected to take a few ms on a GPU, while the host spends ~73 ms (measured)
encoding the PNG of one 12 MP mask: the network is not the bottleneck, so a second
DALI pipeline that batch-upsizes 320x320 masks would add code and buy little. The engine's limit on a frame side (TensorRT profiles) sends larger images to
the Pillow path, which upsizes on the host.

Cutouts need the full-size RGB: DALI's decoded picture is copied to the host (36 MB
for 12 MP, a few ms over PCIe) rather than decoded a second time by Pillow (54 ms for
a 12 MP JPEG), and the cutout shows the pixels the mask was computed from.

With a host backend (ONNX Runtime on the CPU, DALI with device_id=None) the masks come
from ``backend.run`` at 320x320 and are upsized with Pillow as in images.py; that is how
the tests run this module without a GPU.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
from PIL import Image

from ..build_engine.matte_graph import MODEL_SIZE
from ..engine import Backend
from ..engine.cuda import DeviceBuffer, PinnedBuffer, copy_async
from ..errors import MatteError
from .dali_video import DALI_ERRORS, _dali_error
from .images import DECODE_ERRORS, OutputWriters, _Job, _matte_jobs, mask_at_size, write_matte

if TYPE_CHECKING:
    from nvidia.dali.pipeline import Pipeline
    from nvidia.dali.tensors import TensorCPU, TensorGPU, TensorListCPU, TensorListGPU

RGB_BYTES = MODEL_SIZE * MODEL_SIZE * 3
# TensorRT takes only 256-byte aligned tensor addresses (a DALI batch's 320x320 slices are:
# RGB_BYTES is a multiple of 256; masks of other sizes are not).
ALIGNMENT = 256
# The operators whose failures are one file's fault (unreadable or undecodable data)...
FILE_OPERATORS = ("nvidia.dali.fn.readers.file", "nvidia.dali.fn.decoders.image")
# ...unless the message shows the GPU failed (CUDA's error names start with "cuda").
GPU_FAILURES = ("out of memory", "cudaError", "CUDA error", "CUDA_ERROR")
# DALI decodes up to two batches ahead of the engine, enough to overlap the two.
PIPELINE_PREFETCH = 2
MAX_THREADS = 4


class DaliStopped(Exception):
    """A file killed the pipeline: ``suspects`` are the file DALI named, or else every
    file of the batch that failed."""

    def __init__(self, suspects: list[Path]):
        super().__init__(f"DALI stopped on {', '.join(map(str, suspects))}")
        self.suspects = suspects


@dataclass(frozen=True)
class ImageBatch:
    """The real images of one DALI batch, in file order; the padded repeats are dropped.

    ``rgb`` is the whole padded batch, a dense contiguous uint8 [B,320,320,3] tensor
    (``TensorGPU`` on a GPU: hand ``rgb.data_ptr()`` to the engine). It is ready when
    the batch is yielded (DALI ran host-synchronously) and stays valid while this
    object is referenced.
    """

    sizes: list[tuple[int, int]]  # (height, width) of each image as displayed
    rgb: TensorCPU | TensorGPU
    full_size: TensorListCPU | None  # decoded pictures in host memory, for cutouts
    _owner: TensorListCPU | TensorListGPU = field(repr=False)

    def host_array(self) -> np.ndarray:
        """The real images as uint8 [n,320,320,3] in host memory (copied from a GPU)."""
        return np.from_dlpack(self.rgb.as_cpu())[:len(self.sizes)]

    def pictures(self) -> list[Image.Image | None]:
        """Each decoded picture as RGB, or Nones when the pipeline was not asked for them."""
        if self.full_size is None:
            return [None] * len(self.sizes)
        return [Image.fromarray(np.asarray(self.full_size[index])) for index in range(len(self.sizes))]


def matte_jobs_with_dali(jobs: list[_Job], backend: Backend, cutout: bool, failed: list[tuple[Path, str]],
                         writers: OutputWriters) -> None:
    """images.py's GPU hook, in its Pillow path's terms: hand every job's output to
    ``writers`` or report it in ``failed``."""
    for_dali, for_pillow = _screen(jobs, backend.max_frame_side)
    _matte_jobs(for_pillow, backend, cutout, failed, writers)
    on_gpu = backend.takes_device_batches
    masks = _DeviceMasks(backend) if on_gpu else _HostMasks(backend)
    try:
        while for_dali:
            handed_over, suspects = _matte_until_stopped(for_dali, backend.preferred_batch, 0 if on_gpu else None,
                                                         masks, cutout, writers)
            rest = for_dali[handed_over:]
            # The Pillow path writes what DALI could not decode, or reports why nothing can.
            _matte_jobs([job for job in rest if job.source in suspects], backend, cutout, failed, writers)
            for_dali = [job for job in rest if job.source not in suspects]
    finally:
        masks.close()


def _screen(jobs: list[_Job], max_side: int | None) -> tuple[list[_Job], list[_Job]]:
    """Split ``jobs`` into those for DALI and those for the Pillow path."""
    for_dali: list[_Job] = []
    for_pillow: list[_Job] = []
    for job in jobs:
        (for_dali if _fits_dali(job.source, max_side) else for_pillow).append(job)
    return for_dali, for_pillow


def _fits_dali(path: Path, max_side: int | None) -> bool:
    """Whether the file looks decodable (without decoding it) and within the engine's size limit."""
    try:
        with Image.open(path) as image:
            size, is_jpeg = image.size, image.format in ("JPEG", "MPO")
            # PNG: every chunk read and CRC-checked; JPEG and others: the header only.
            image.verify()
        if is_jpeg and not _ends_like_a_jpeg(path):
            return False
    except DECODE_ERRORS:
        return False
    return max_side is None or max(size) <= max_side


def _ends_like_a_jpeg(path: Path) -> bool:
    """Whether the JPEG's last scan is followed by an end-of-image marker. nvJPEG may
    decode a file cut off in its scan data into a half-grey picture, where Pillow reports
    it truncated. Neither marker can occur inside scan data (a 0xFF there is always
    followed by 0x00 or a restart marker), and the last scan is the main picture's, after
    any EXIF thumbnail's own scan and end marker. DALI reads the file next, from the cache."""
    data = path.read_bytes()
    return data.rfind(b"\xff\xd9") > data.rfind(b"\xff\xda")


def _matte_until_stopped(jobs: list[_Job], batch_size: int, device_id: int | None, masks: _HostMasks | _DeviceMasks,
                         cutout: bool, writers: OutputWriters) -> tuple[int, list[Path]]:
    """Hand outputs to ``writers`` in order until DALI is done or stops on a file:
    (count handed over, suspects)."""
    handed_over = 0
    try:
        for batch in image_batches([job.source for job in jobs], batch_size, device_id, cutout):
            for job, mask, picture in zip(jobs[handed_over:], masks(batch), batch.pictures()):
                writers.submit(write_matte, job.target, mask, picture)
                handed_over += 1
    except DaliStopped as stopped:
        return handed_over, stopped.suspects
    return handed_over, []


def image_batches(paths: list[Path], batch_size: int, device_id: int | None,
                  keep_full_size: bool = False) -> Iterator[ImageBatch]:
    """Every file of ``paths`` exactly once, in order, decoded, oriented and resized.

    ``device_id=None`` runs DALI on the CPU. Raises DaliStopped when a file kills the
    pipeline (the batches before it were yielded) and MatteError on other DALI failures.
    """
    names = [str(path) for path in paths]
    pipe = _images_pipeline(names, batch_size, device_id, keep_full_size)
    try:
        pipe.build()
    except DALI_ERRORS as exc:
        # Building reads no file: a failure here is DALI's or the GPU's, and would recur.
        raise _dali_error(paths[0], exc) from exc
    # readers.file pads the last batch with repeats of the last file and then wraps into
    # the next epoch: run exactly ceil(n / B) times and keep the real samples only.
    for start in range(0, len(paths), batch_size):
        try:
            outputs = pipe.run()
        except DALI_ERRORS as exc:
            raise _stopped(exc, paths, start, batch_size) from exc
        yield _real_images(outputs, names[start:start + batch_size])


def _images_pipeline(names: list[str], batch_size: int, device_id: int | None, keep_full_size: bool) -> Pipeline:
    from nvidia.dali import fn, pipeline_def, types

    # The dynamic executor allocates every output afresh (a yielded batch is never
    # overwritten while the engine reads it) and lets the shapes of GPU data reach the host.
    @pipeline_def(batch_size=batch_size, num_threads=min(MAX_THREADS, os.cpu_count() or 1),
                  device_id=device_id, prefetch_queue_depth=PIPELINE_PREFETCH, exec_dynamic=True)
    def images_pipeline():
        encoded, _ = fn.readers.file(files=names, random_shuffle=False, pad_last_batch=True)
        # "mixed": nvJPEG on the GPU for JPEG; DALI decodes other formats on the CPU inside the
        # same operator. Gray, palette and RGBA pictures come out as 3-channel RGB, as Pillow's
        # convert("RGB") gives them (alpha dropped).
        picture = fn.decoders.image(encoded, device="cpu" if device_id is None else "mixed",
                                    output_type=types.RGB, adjust_orientation=True)
        # U²-Net's per-image min-max makes masks sensitive to the downscale filter: DALI's
        # default linear filter is far from rembg's antialiased Lanczos (see DESIGN.md).
        model_input = fn.resize(picture, size=[MODEL_SIZE, MODEL_SIZE], interp_type=types.INTERP_LANCZOS3,
                                antialias=True)
        outputs = (model_input, picture.shape(), fn.get_property(encoded, key="source_info"))
        return (*outputs, picture.cpu()) if keep_full_size else outputs

    return images_pipeline()


def _stopped(exc: Exception, paths: list[Path], start: int, batch_size: int) -> Exception:
    """The DaliStopped to raise for a pipeline failure in the batch at ``start``, or a
    MatteError when the failure is not a file's fault."""
    message = str(exc)
    if isinstance(exc, MemoryError) or any(sign in message for sign in GPU_FAILURES):
        # Not the file's fault: moving files to the Pillow path would only repeat it.
        return _dali_error(paths[start], exc)
    # Readers run ahead, so the named file may lie beyond this batch; the longest match
    # wins because "a.jpg" is also in a message naming "a.jpg.jpg".
    named = [path for path in paths[start:] if str(path) in message]
    if named:
        return DaliStopped([max(named, key=lambda path: len(str(path)))])
    if any(operator in message for operator in FILE_OPERATORS):
        return DaliStopped(paths[start:start + batch_size])
    return _dali_error(paths[start], exc)


def _real_images(outputs: tuple, names: list[str]) -> ImageBatch:
    """The batch's first ``len(names)`` samples, checked to be those files: a slip in
    DALI's order would otherwise put masks in the wrong files, silently."""
    rgb, shapes, sources, *full_size = outputs
    sizes = []
    for index, name in enumerate(names):
        delivered = np.asarray(sources[index]).tobytes().decode()
        if delivered != name:
            raise MatteError(f"DALI returned {delivered} where {name} was due")
        height, width, _ = np.asarray(shapes[index]).tolist()
        sizes.append((height, width))
    return ImageBatch(sizes, rgb.as_tensor(), full_size[0] if full_size else None, rgb)


class _HostMasks:
    """Masks from a host backend: 320x320 from ``run``, upsized with Pillow as in images.py."""

    def __init__(self, backend: Backend):
        self._backend = backend

    def __call__(self, batch: ImageBatch) -> list[Image.Image]:
        masks = self._backend.run(batch.host_array())
        return [mask_at_size(mask, (width, height)) for mask, (height, width) in zip(masks, batch.sizes)]

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class _Run:
    """Consecutive images of one size in a batch: one engine call."""

    first: int  # index of its first image in the batch
    count: int
    height: int
    width: int
    offset: int  # where its masks start in the mask buffer, aligned for TensorRT


def _runs(sizes: list[tuple[int, int]]) -> tuple[list[_Run], int]:
    """Lay out the masks of a batch run by run; returns the runs and the bytes they span."""
    runs = []
    first = offset = 0
    for (height, width), group in itertools.groupby(sizes):
        count = len(list(group))
        runs.append(_Run(first, count, height, width, offset))
        first += count
        offset = -(-(offset + count * height * width) // ALIGNMENT) * ALIGNMENT
    return runs, offset


class _DeviceMasks:
    """Masks from the engine on the GPU, made at each image's size there, then copied to
    the host in one piece; each returned image owns a copy, so writers may keep it."""

    def __init__(self, backend: Backend):
        self._backend = backend
        self._device: DeviceBuffer | None = None
        self._host: PinnedBuffer | None = None

    def __call__(self, batch: ImageBatch) -> list[Image.Image]:
        runs, nbytes = _runs(batch.sizes)
        self._reserve(nbytes)
        for run in runs:
            self._backend.enqueue(batch.rgb.data_ptr() + run.first * RGB_BYTES, run.count, run.height, run.width,
                                  self._device.address + run.offset)
        stream = self._backend.stream
        copy_async(self._host.address, self._device.address, nbytes, "cudaMemcpyDeviceToHost", stream)
        stream.synchronize()
        return [Image.fromarray(mask.copy()) for run in runs for mask in _host_masks(self._host.array, run)]

    def _reserve(self, nbytes: int) -> None:
        """Grow the device and pinned buffers to ``nbytes``; a folder of one size allocates once."""
        if self._device is None or self._device.nbytes < nbytes:
            self.close()
            self._device = DeviceBuffer(nbytes)
            self._host = PinnedBuffer(nbytes)

    def close(self) -> None:
        for buffer in (self._device, self._host):
            if buffer is not None:
                buffer.close()


def _host_masks(buffer: np.ndarray, run: _Run) -> np.ndarray:
    """A run's masks as uint8 [count, height, width], a view into the flat ``buffer``."""
    end = run.offset + run.count * run.height * run.width
    return buffer[run.offset:end].reshape(run.count, run.height, run.width)
