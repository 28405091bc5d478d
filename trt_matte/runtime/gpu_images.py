"""Still images on the GPU path: DALI decodes and resizes (``media.dali_images``), the
engine mattes each image at its own size.

    DALI batch on the GPU --engine.enqueue once per run of same-sized images--> uint8
      masks at each image's size --one copy to pinned host memory--> PNG files
      (pictures.write_matte, atomic, on the writer threads)

images.py keeps everything else: which files, output names, skip/overwrite, failure
messages. Files DALI must not or cannot decode go through the Pillow path
(``image_jobs.matte_jobs``) instead, which writes them or reports why not, with the
messages of a run without DALI. When a file kills the pipeline, the files DALI blames go
to the Pillow path and a new pipeline (4-10 ms to build on the CPU) resumes with the
files not yet written. Each stop moves at least one file out, so the loop ends. A
failure outside the reader and decoder aborts, as does one while building the pipeline
(no file is read then).

Masks at each image's own size: the engine upsizes a whole batch to one size, so it
runs once per run of consecutive same-sized images (one run per batch when the
pictures share a size). At worst, all sizes mixed, that is one batch-1 network run per
image, expected to take a few ms on a GPU, while the host spends ~73 ms (measured)
encoding the PNG of one 12 MP mask: the network is not the bottleneck, so a second
DALI pipeline that batch-upsizes 320x320 masks would add code and buy little. The
engine's limit on a frame side (TensorRT profiles) sends larger images to the Pillow
path, which upsizes on the host.

Cutouts need the full-size RGB: DALI's decoded picture is copied to the host (36 MB
for 12 MP, a few ms over PCIe) rather than decoded a second time by Pillow (54 ms for
a 12 MP JPEG), and the cutout shows the pixels the mask was computed from.

With a host backend (ONNX Runtime on the CPU, DALI with device_id=None) the masks come
from ``backend.run`` at 320x320 and are upsized with Pillow as on the Pillow path; that
is how the tests run this module without a GPU.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..engine.backend import ALIGNMENT, Backend
from ..media.dali_images import DaliStopped, ImageBatch, dali_can_take, image_batches
from ..media.pictures import write_matte
from ..models import MODEL_RGB_BYTES
from .image_jobs import ImageJob, OutputWriters, finished_mask, host_masks, matte_jobs

def matte_jobs_with_dali(jobs: list[ImageJob], backend: Backend, cutout: bool, failed: list[tuple[Path, str]],
                         writers: OutputWriters) -> None:
    """The GPU variant of ``image_jobs.matte_jobs``, in its terms: hand every job's output to
    ``writers`` or report it in ``failed``."""
    for_dali, for_pillow = _screen(jobs, backend.max_frame_side)
    matte_jobs(for_pillow, backend, cutout, failed, writers)
    on_gpu = backend.takes_device_batches
    masks = _DeviceMasks(backend) if on_gpu else _HostMasks(backend)
    device_id = backend.cuda.dali_device_id(backend.gpu_index) if on_gpu else None
    try:
        while for_dali:
            handed_over, suspects = _matte_until_stopped(for_dali, backend.preferred_batch, device_id,
                                                         masks, cutout, writers)
            rest = for_dali[handed_over:]
            # The Pillow path writes what DALI could not decode, or reports why nothing can.
            matte_jobs([job for job in rest if job.source in suspects], backend, cutout, failed, writers)
            for_dali = [job for job in rest if job.source not in suspects]
    finally:
        masks.close()


def _screen(jobs: list[ImageJob], max_side: int | None) -> tuple[list[ImageJob], list[ImageJob]]:
    """Split ``jobs`` into those for DALI and those for the Pillow path."""
    for_dali: list[ImageJob] = []
    for_pillow: list[ImageJob] = []
    for job in jobs:
        (for_dali if dali_can_take(job.source, max_side) else for_pillow).append(job)
    return for_dali, for_pillow


def _matte_until_stopped(jobs: list[ImageJob], batch_size: int, device_id: int | None, masks: _HostMasks | _DeviceMasks,
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


class _HostMasks:
    """Masks from a host backend, finished as on the Pillow path."""

    def __init__(self, backend: Backend):
        self._backend = backend

    def __call__(self, batch: ImageBatch) -> list[Image.Image]:
        sizes = [(width, height) for height, width in batch.sizes]
        return [finished_mask(mask, size) for mask, size in zip(host_masks(self._backend, batch.host_array(), sizes),
                                                                 sizes)]

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
        self._cuda = backend.cuda
        self._device: Any = None  # cuda.DeviceBuffer
        self._host: Any = None  # cuda.PinnedBuffer

    def __call__(self, batch: ImageBatch) -> list[Image.Image]:
        runs, nbytes = _runs(batch.sizes)
        self._backend.use_gpu()  # the buffers are made on its GPU
        self._reserve(nbytes)
        for run in runs:
            self._backend.enqueue(batch.rgb.data_ptr() + run.first * MODEL_RGB_BYTES, run.count, run.height, run.width,
                                  self._device.address + run.offset)
        stream = self._backend.stream
        self._cuda.copy_async(self._host.address, self._device.address, nbytes, "cudaMemcpyDeviceToHost", stream)
        stream.synchronize()
        return [Image.fromarray(mask.copy()) for run in runs for mask in _host_masks(self._host.array, run)]

    def _reserve(self, nbytes: int) -> None:
        """Grow the device and pinned buffers to ``nbytes``; a folder of one size allocates once."""
        if self._device is None or self._device.nbytes < nbytes:
            self.close()
            self._device = self._cuda.DeviceBuffer(nbytes)
            self._host = self._cuda.PinnedBuffer(nbytes)

    def close(self) -> None:
        for buffer in (self._device, self._host):
            if buffer is not None:
                buffer.close()


def _host_masks(buffer: np.ndarray, run: _Run) -> np.ndarray:
    """A run's masks as uint8 [count, height, width], a view into the flat ``buffer``."""
    end = run.offset + run.count * run.height * run.width
    return buffer[run.offset:end].reshape(run.count, run.height, run.width)
