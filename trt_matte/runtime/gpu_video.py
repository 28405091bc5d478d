"""The GPU stages of the video pipeline.

    DALI (NVDEC decode, Lanczos3 + antialias resize to 320x320, on the GPU)
      --device pointer, handed over on the engine's stream--> engine (matte at the
      displayed frame size, uint8, on the GPU) --event--> copy stream: async copy to a
      pinned host slot --event--> writer thread --> ffmpeg

No full-size frame reaches the host and no resize runs on the CPU; only finished uint8
mattes are copied out. Nothing waits on the host between the stages: DALI returns each
batch on the engine's stream, and the mask copy runs on a stream of its own after an
event, so copying batch k overlaps inferring batch k+1, while ffmpeg writes batch k-1.
Files NVDEC cannot decode go through the ffmpeg reader instead (host frames uploaded to
the engine), after a one-line notice.

Slots (a device buffer for the mattes, a pinned host buffer they are copied to, and the
event that marks the copy done) circulate through an explicit free queue: inference
takes one, the writer gives it back once the masks are handed on, so no slot is reused
while the writer still reads it, whatever the queue depths. The CUDA calls go through
``backend.cuda``: the real adapter, or in the tests its host twin.
"""
from __future__ import annotations

import contextlib
import queue
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..engine.backend import Backend
from ..errors import MatteError
from ..media.dali import dali_available
from ..media.dali_video import DaliFrameReader, unsupported_reason
from ..media.excerpt import Excerpt
from ..media.frame_reader import FrameReader
from ..media.probe import VideoInfo
from ..models import MODEL_RGB_BYTES, MODEL_SIZE
from .guard import PrecisionGuard
from .stages import QUEUE_DEPTH

# Enough for every place a computed batch can be: in the writer's queue, being written,
# and the one being computed.
SLOTS = QUEUE_DEPTH + 2


@dataclass
class _Slot:
    device: Any  # cuda.DeviceBuffer: the engine's mattes
    host: Any  # cuda.PinnedBuffer: their copy
    computed: Any  # cuda.Event: the engine is through with the batch
    copied: Any  # cuda.Event: the copy to ``host`` is done


@dataclass
class _Batch:
    frames: int
    device_address: int | None  # frames already on the GPU (DALI)...
    host_rgb: np.ndarray | None  # ...or on the host (ffmpeg fallback)
    keepalive: Any = None  # the DALI output, whose GPU memory the engine reads


@dataclass
class _Computed:
    slot: _Slot
    frames: int
    keepalive: Any


class DeviceStages:
    full_size = True

    def __init__(self, source: Path, part: Excerpt, backend: Backend, batch_size: int,
                 announce: Callable[[str], None], guard: PrecisionGuard | None = None):
        info = part.frames
        # Both readers deliver display-oriented frames; the engine upsizes to the displayed size.
        backend.check_frame_size(info.height, info.width)  # before DALI and the buffers are set up
        backend.use_gpu()  # the buffers and streams below are made on its GPU
        self._backend = backend
        self._guard = guard
        self._cuda = backend.cuda
        self._batch_size = batch_size
        self._width, self._height = info.width, info.height
        self._frame_bytes = self._width * self._height
        self._free: queue.Queue[_Slot | None] = queue.Queue()
        with contextlib.ExitStack() as made:  # what was made before a failure is released
            self._copy_stream = made.enter_context(contextlib.closing(self._cuda.Stream()))
            batch_bytes = batch_size * self._frame_bytes
            for _ in range(SLOTS):
                self._free.put(_Slot(*(made.enter_context(contextlib.closing(resource)) for resource in (
                    self._cuda.DeviceBuffer(batch_bytes), self._cuda.PinnedBuffer(batch_bytes),
                    self._cuda.Event(), self._cuda.Event()))))
            self._reader = self._open_reader(source, part, batch_size, announce)
            made.callback(self.stop)
            self._owned = made.pop_all()

    def _open_reader(self, source: Path, part: Excerpt, batch_size: int,
                     announce: Callable[[str], None]) -> DaliFrameReader | FrameReader:
        device_id = self._cuda.dali_device_id(self._backend.gpu_index)
        reason = None if dali_available() else "DALI is not installed"
        # DALI's reader walks the whole file; ffmpeg seeks straight to a part.
        reason = reason or ("only a part of the clip is matted" if part.partial else None)
        # The fake device's DALI runs on the CPU, which takes VP9 but not H.264.
        reason = reason or unsupported_reason(source, device_id)
        if reason is None:
            # A GPU pipeline hands each batch over on the engine's stream: no host wait.
            stream = None if device_id is None else self._backend.stream.address
            try:
                return DaliFrameReader(source, part.frames.frame_count, batch_size, device_id, cuda_stream=stream)
            except MatteError as refused:  # NVDEC or DALI turned the stream down
                reason = str(refused)
        announce(f"note: {reason}; decoding with ffmpeg on the CPU instead")
        return part.frame_reader(source)

    def batches(self) -> Iterator[_Batch]:
        if isinstance(self._reader, DaliFrameReader):
            for batch in self._reader.batches():
                yield _Batch(batch.frames, batch.rgb.data_ptr(), None, batch)
        else:
            for rgb in self._reader.batches(self._batch_size):
                yield _Batch(len(rgb), None, rgb)

    def compute(self, batch: _Batch) -> _Computed:
        slot = self._free.get()
        if slot is None:
            raise MatteError("the GPU stages were stopped")
        address = batch.device_address
        if address is None:
            address = self._backend.upload(batch.host_rgb)
        engine_stream = self._backend.stream
        self._backend.enqueue(address, batch.frames, self._height, self._width, slot.device.address)
        slot.computed.record(engine_stream)
        # The copy waits for this batch's mattes on the GPU, not on the host, and leaves
        # the engine's stream free for the next batch.
        self._copy_stream.wait(slot.computed)
        self._cuda.copy_async(slot.host.address, slot.device.address, batch.frames * self._frame_bytes,
                              "cudaMemcpyDeviceToHost", self._copy_stream)
        slot.copied.record(self._copy_stream)
        if self._guard is not None:
            for index in self._guard.due(batch.frames):
                rgb = self._frame_on_host(batch, index)
                self._guard.check(rgb, self._backend.run(rgb[None])[0])
        return _Computed(slot, batch.frames, batch.keepalive)

    def _frame_on_host(self, batch: _Batch, index: int) -> np.ndarray:
        if batch.host_rgb is not None:
            return batch.host_rgb[index]
        rgb = np.empty((MODEL_SIZE, MODEL_SIZE, 3), np.uint8)
        # DALI handed the batch over on the engine's stream: the copy is ordered after it.
        self._cuda.copy_async(rgb.ctypes.data, batch.device_address + index * MODEL_RGB_BYTES, MODEL_RGB_BYTES,
                              "cudaMemcpyDeviceToHost", self._backend.stream)
        self._backend.stream.synchronize()
        return rgb

    def masks(self, computed: _Computed) -> np.ndarray:
        """The slot's masks, valid until ``done`` hands the slot back."""
        computed.slot.copied.synchronize()
        computed.keepalive = None  # the engine read the DALI batch before the copy began
        mattes = computed.slot.host.array[:computed.frames * self._frame_bytes]
        return mattes.reshape(computed.frames, self._height, self._width)

    def done(self, computed: _Computed) -> None:
        """The writer is through with a slot's masks: inference may fill it again."""
        self._free.put(computed.slot)

    @property
    def concealed(self) -> int:
        return self._reader.concealed

    def delivered_timing(self, listed: VideoInfo) -> VideoInfo:
        return self._reader.delivered_timing(listed)

    def stop(self) -> None:
        if isinstance(self._reader, DaliFrameReader):
            self._reader.close()
        else:
            self._reader.kill()
        self._free.put(None)  # wakes an inference waiting for a slot

    def release(self) -> None:
        # Work still queued may read a DALI batch or write a slot: wait for it first.
        self._backend.use_gpu()
        try:
            self._backend.stream.synchronize()
            self._copy_stream.synchronize()
        finally:
            self._owned.close()
