"""The GPU stages of the video pipeline.

    DALI (NVDEC decode, Lanczos3 + antialias resize to 320x320, on the GPU)
      --device pointer--> engine (matte at the stored frame size, uint8, on the GPU)
      --async copy on the engine's stream--> pinned host slot --writer thread--> ffmpeg

No full-size frame reaches the host and no resize runs on the CPU; only finished uint8
mattes are copied out. The copy of batch k and ffmpeg's write of it overlap the
inference of batch k+1. Files NVDEC cannot decode go through the ffmpeg reader instead
(host frames uploaded to the engine), after a one-line notice.

Slots (a device buffer for the mattes, a pinned host buffer they are copied to, and the
event that marks the copy done) circulate through an explicit free queue: inference
takes one, the writer gives it back once the masks are handed on, so no slot is reused
while the writer still reads it, whatever the queue depths.
"""
from __future__ import annotations

import contextlib
import queue
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..cuda import DeviceBuffer, Event, PinnedBuffer, copy_async
from ..engine.backend import Backend
from ..errors import MatteError
from ..media.dali import dali_available
from ..media.dali_video import DaliFrameReader, nvdec_unsupported_reason
from ..media.frame_reader import FrameReader
from ..media.probe import VideoInfo
from .stages import QUEUE_DEPTH

# Enough for every place a computed batch can be: in the writer's queue, being written,
# and the one being computed.
SLOTS = QUEUE_DEPTH + 2


@dataclass
class _Slot:
    device: DeviceBuffer
    host: PinnedBuffer
    copied: Event


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

    def __init__(self, source: Path, info: VideoInfo, backend: Backend, batch_size: int,
                 announce: Callable[[str], None]):
        # Both readers deliver display-oriented frames; the engine upsizes to the displayed size.
        backend.check_frame_size(info.height, info.width)  # before DALI and the buffers are set up
        self._backend = backend
        self._batch_size = batch_size
        self._width, self._height = info.width, info.height
        self._frame_bytes = self._width * self._height
        self._free: queue.Queue[_Slot | None] = queue.Queue()
        with contextlib.ExitStack() as made:  # what was made before a failure is released
            self._reader = self._open_reader(source, info, batch_size, announce)
            made.callback(self.stop)
            batch_bytes = batch_size * self._frame_bytes
            for _ in range(SLOTS):
                slot = _Slot(made.enter_context(contextlib.closing(DeviceBuffer(batch_bytes))),
                             made.enter_context(contextlib.closing(PinnedBuffer(batch_bytes))),
                             made.enter_context(contextlib.closing(Event())))
                self._free.put(slot)
            self._owned = made.pop_all()

    @staticmethod
    def _open_reader(source: Path, info: VideoInfo, batch_size: int,
                     announce: Callable[[str], None]) -> DaliFrameReader | FrameReader:
        reason = None if dali_available() else "DALI is not installed"
        reason = reason or nvdec_unsupported_reason(source)
        if reason is None:
            try:
                return DaliFrameReader(source, info.frame_count, batch_size, device_id=0)
            except MatteError as refused:  # NVDEC or DALI turned the stream down
                reason = str(refused)
        announce(f"note: {reason}; decoding with ffmpeg on the CPU instead")
        return FrameReader(source)

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
        self._backend.enqueue(address, batch.frames, self._height, self._width, slot.device.address)
        stream = self._backend.stream
        copy_async(slot.host.address, slot.device.address, batch.frames * self._frame_bytes,
                   "cudaMemcpyDeviceToHost", stream)
        slot.copied.record(stream)
        return _Computed(slot, batch.frames, batch.keepalive)

    def masks(self, computed: _Computed) -> np.ndarray:
        """The slot's masks, valid until ``done`` hands the slot back."""
        computed.slot.copied.synchronize()
        mattes = computed.slot.host.array[:computed.frames * self._frame_bytes]
        return mattes.reshape(computed.frames, self._height, self._width)

    def done(self, computed: _Computed) -> None:
        """The writer is through with a slot's masks: inference may fill it again."""
        self._free.put(computed.slot)

    def check_frame_count(self, expected: int) -> None:
        self._reader.check_frame_count(expected)

    def stop(self) -> None:
        if isinstance(self._reader, DaliFrameReader):
            self._reader.close()
        else:
            self._reader.kill()
        self._free.put(None)  # wakes an inference waiting for a slot

    def release(self) -> None:
        # The engine may still read a DALI batch or write a slot: wait for it first.
        self._backend.stream.synchronize()
        self._owned.close()
