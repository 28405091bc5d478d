"""The CUDA adapter's twin on the host, so the GPU stages run where no GPU is.

Same names and signatures as ``trt_matte.cuda``. "Device" memory is host memory, a
stream runs its work in order at once (a copy is done when ``copy_async`` returns), and
events are always complete. What it adds is a ledger of every allocation: a copy that
touches memory after it was freed raises ``UseAfterFree`` instead of corrupting the
process, and ``live_allocations()`` tells a test whether a run released everything.
It has two GPUs, the current one kept per thread as CUDA keeps it, and queuing work on
a stream of a GPU other than the thread's current one raises ``WrongDevice``.
Addresses outside the ledger (a DALI CPU batch) are the caller's own and pass.
"""
from __future__ import annotations

import ctypes
import itertools
import threading

import numpy as np

ALIGNMENT = 256  # as cudaMalloc's
COPY_KINDS = ("cudaMemcpyHostToDevice", "cudaMemcpyDeviceToHost", "cudaMemcpyDeviceToDevice")

_lock = threading.RLock()  # reentrant: a garbage collection inside a locked block runs __del__
_live: dict[int, int] = {}  # address -> bytes
_freed: dict[int, int] = {}
_handles = itertools.count(1)
# Two GPUs, so a test can run on the second; the current one is per thread, as CUDA's is.
FAKE_GPUS = 2
_thread = threading.local()


class UseAfterFree(AssertionError):
    """The GPU stages touched memory they had already freed: a teardown bug."""


def live_allocations() -> int:
    """How many fake device and pinned buffers are allocated and not yet freed."""
    with _lock:
        return len(_live)


def check_range(address: int, nbytes: int) -> None:
    """Raise UseAfterFree when [address, address + nbytes) lies in freed fake memory,
    and ValueError when it runs past the end of a live fake buffer."""
    with _lock:
        for start, size in _live.items():
            if start <= address < start + size:
                if address + nbytes > start + size:
                    raise ValueError(f"{nbytes} bytes at {address:#x} overrun a buffer of {size} bytes")
                return
        for start, size in _freed.items():
            if start <= address < start + size:
                raise UseAfterFree(f"{nbytes} bytes at {address:#x}: memory freed before this use")


def view(address: int, shape: tuple[int, ...]) -> np.ndarray:
    """The uint8 bytes of fake device memory at ``address`` as an array of ``shape``, after
    checking them against the ledger: what a test's stand-in engine reads and writes."""
    nbytes = int(np.prod(shape))
    check_range(address, nbytes)
    return np.ctypeslib.as_array(ctypes.cast(ctypes.c_void_p(address), ctypes.POINTER(ctypes.c_ubyte)), shape)


class WrongDevice(AssertionError):
    """Work queued on another GPU's stream than this thread's current one: a call that
    forgot to select its backend's GPU (``use_device``)."""


def gpu_count() -> int:
    return FAKE_GPUS


def current_device() -> int:
    return getattr(_thread, "device", 0)


def use_device(index: int) -> None:
    if not 0 <= index < FAKE_GPUS:
        raise ValueError(f"the fake device has GPUs 0 to {FAKE_GPUS - 1}, not {index}")
    _thread.device = index


def gpu_names() -> list[str]:
    return [device_name_and_capability(index)[0] for index in range(FAKE_GPUS)]


def dali_device_id(index: int) -> None:
    """DALI runs its CPU pipeline: its batches are host memory, as this "device's" are."""
    return None


def device_name_and_capability(device: int | None = None) -> tuple[str, str]:
    return f"fake GPU {current_device() if device is None else device} (host memory)", "0.0"


def _check_current(stream: Stream) -> None:
    if stream.device != current_device():
        raise WrongDevice(f"work queued on GPU {stream.device}'s stream while GPU {current_device()} is current")


class Stream:
    def __init__(self):
        self.handle: int | None = next(_handles)
        self.device = current_device()

    @property
    def address(self) -> int:
        return self.handle or 0

    def synchronize(self) -> None:
        """In-order host execution: the stream's work is already done."""

    def wait(self, event: Event) -> None:
        """Events are complete when recorded: nothing to wait for."""

    def close(self) -> None:
        self.handle = None


class Event:
    def __init__(self):
        self.handle: int | None = next(_handles)

    def record(self, stream: Stream) -> None:
        if stream.handle is None or self.handle is None:
            raise ValueError("recording a closed event or on a closed stream")
        _check_current(stream)

    def synchronize(self) -> None:
        if self.handle is None:
            raise UseAfterFree("waiting on a destroyed event")

    def close(self) -> None:
        self.handle = None


class _HostMemory:
    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        self._storage = np.zeros(nbytes + ALIGNMENT, np.uint8)
        offset = -self._storage.ctypes.data % ALIGNMENT
        self.array = self._storage[offset:offset + nbytes]
        self.address = self._start = self.array.ctypes.data
        with _lock:
            _freed.pop(self.address, None)
            _live[self.address] = nbytes

    def close(self) -> None:
        if self.address:
            with _lock:
                _freed[self.address] = _live.pop(self.address)
            # The bytes stay allocated (kept by _storage) until this object goes, so a
            # use after free is caught by the ledger rather than crashing the test run.
            self.address = 0

    def __del__(self) -> None:
        # Once the bytes go back to the allocator, a host array may be given the same
        # address: it is no longer freed fake memory.
        with _lock:
            if _freed.get(self._start) == self.nbytes:
                del _freed[self._start]


class DeviceBuffer(_HostMemory):
    """"Device" memory: host memory on a 256-byte boundary, like cudaMalloc's."""


class PinnedBuffer(_HostMemory):
    """"Pinned" host memory, with the ``array`` view the real one offers."""


def copy_async(destination: int, source: int, nbytes: int, kind_name: str, stream: Stream) -> None:
    if kind_name not in COPY_KINDS:
        raise ValueError(f"unknown copy kind {kind_name}")
    if stream.handle is None:
        raise UseAfterFree("copying on a destroyed stream")
    _check_current(stream)
    check_range(destination, nbytes)
    check_range(source, nbytes)
    ctypes.memmove(destination, source, nbytes)

