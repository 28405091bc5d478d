"""The GPU stages of the video pipeline.

    DALI (NVDEC decode, Lanczos3 + antialias resize to 320x320, on the GPU)
      --device pointer--> engine (matte at the stored frame size, uint8, on the GPU)
      --async copy on the engine's stream--> pinned host slot --writer thread--> ffmpeg

No full-size frame reaches the host and no resize runs on the CPU; only finished uint8
mattes are copied out. The copy of batch k and ffmpeg's write of it overlap the
inference of batch k+1. Files NVDEC cannot decode go through the ffmpeg reader instead
(host frames uploaded to the engine), after a one-line notice.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..engine.cuda import DeviceBuffer, Event, PinnedBuffer, copy_async
from ..errors import MatteError
from .dali_video import DaliFrameReader, dali_available, nvdec_unsupported_reason
from .media import VideoInfo
from .stages import QUEUE_DEPTH
from .video import FrameReader

# A computed batch may sit in the writer's queue while the next ones are computed:
# slot k is reused by batch k + SLOTS only after batch k was written (see stages.py).
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

    def __init__(self, source: Path, info: VideoInfo, backend: Any, batch_size: int,
                 announce: Callable[[str], None]):
        # Both readers deliver display-oriented frames; the engine upsizes to the displayed size.
        backend.check_frame_size(info.height, info.width)  # before DALI and the buffers are set up
        self._backend = backend
        self._batch_size = batch_size
        self._width, self._height = info.width, info.height
        self._frame_bytes = self._width * self._height
        self._dali: DaliFrameReader | None = None
        self._ffmpeg: FrameReader | None = None
        self._slots: list[_Slot] = []
        reason = None if dali_available() else "DALI is not installed"
        reason = reason or nvdec_unsupported_reason(source)
        if reason is None:
            try:
                self._dali = DaliFrameReader(source, info.frame_count, batch_size, device_id=0)
            except MatteError as refused:  # NVDEC or DALI turned the stream down
                reason = str(refused)
        if reason:
            announce(f"note: {reason}; decoding with ffmpeg on the CPU instead")
            self._ffmpeg = FrameReader(source)
        # Allocated last, and released if allocation fails part-way: nothing leaks when set-up fails.
        try:
            batch_bytes = batch_size * self._frame_bytes
            for _ in range(SLOTS):
                self._slots.append(_Slot(DeviceBuffer(batch_bytes), PinnedBuffer(batch_bytes), Event()))
        except BaseException:
            self.close()
            raise
        self._next_slot = itertools.cycle(self._slots)

    def batches(self) -> Iterator[_Batch]:
        if self._dali is not None:
            for batch in self._dali.batches():
                yield _Batch(batch.frames, batch.rgb.data_ptr(), None, batch)
        else:
            for rgb in self._ffmpeg.batches(self._batch_size):
                yield _Batch(len(rgb), None, rgb)

    def compute(self, batch: _Batch) -> _Computed:
        address = batch.device_address
        if address is None:
            address = self._backend.upload(batch.host_rgb)
        slot = next(self._next_slot)
        self._backend.enqueue(address, batch.frames, self._height, self._width, slot.device.address)
        stream = self._backend.stream
        copy_async(slot.host.address, slot.device.address, batch.frames * self._frame_bytes,
                   "cudaMemcpyDeviceToHost", stream)
        slot.copied.record(stream)
        return _Computed(slot, batch.frames, batch.keepalive)

    def masks(self, computed: _Computed) -> np.ndarray:
        computed.slot.copied.synchronize()
        mattes = computed.slot.host.array[:computed.frames * self._frame_bytes]
        return mattes.reshape(computed.frames, self._height, self._width)

    def frames_read(self) -> int:
        return self._dali.frames_read if self._dali is not None else self._ffmpeg.frames_read

    def close(self) -> None:
        # The engine may still read a DALI batch or write a slot: wait for it first.
        self._backend.stream.synchronize()
        if self._ffmpeg is not None:
            self._ffmpeg.kill()
        if self._dali is not None:
            self._dali.close()
        for slot in self._slots:
            slot.device.close()
            slot.host.close()
            slot.copied.close()
