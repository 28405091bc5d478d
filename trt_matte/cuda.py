"""The few CUDA runtime calls the GPU path needs, through cuda-python.

The GPU stages reach these through their backend's ``cuda`` attribute, never by import,
so the tests can hand them ``fake_cuda``, this module's twin on host memory.

cuda-python (``cuda.bindings.runtime``) is used rather than PyCUDA: it ships wheels,
needs no toolkit build, and shares the runtime API's primary context with DALI and
TensorRT. Its calls never raise; each returns ``(error, *values)``, which ``check``
turns into a MatteError.
"""
from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from .errors import MatteError
from .interrupts import import_held


def runtime_api() -> Any:
    try:
        return import_held("cuda.bindings.runtime")
    except ImportError:
        raise MatteError("the GPU path needs cuda-bindings 13 (cuda-python): pip install 'trt-matte[gpu]'") from None


def check(result: tuple, what: str) -> Any:
    """Unpack a cuda-python result: raise on error, else return the value(s) after it."""
    cudart = runtime_api()
    error, *values = result
    if error != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(error)[1].decode()
        raise MatteError(f"CUDA failed while {what}: {name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def gpu_count() -> int:
    """Visible CUDA devices, 0 when there is no driver or no cuda-python."""
    try:
        cudart = runtime_api()
    except MatteError:
        return 0
    error, count = cudart.cudaGetDeviceCount()
    return count if error == cudart.cudaError_t.cudaSuccess else 0


def current_device() -> int:
    """The device this thread's CUDA calls go to (0 unless set otherwise)."""
    return check(runtime_api().cudaGetDevice(), "reading the current GPU")


def use_device(index: int) -> None:
    """Send this thread's CUDA calls to GPU ``index`` (numbered as CUDA_VISIBLE_DEVICES
    leaves them). The current device is per thread, so a GPU backend calls this on every
    entry: the pipeline's threads then reach its GPU whichever thread they are."""
    check(runtime_api().cudaSetDevice(index), f"selecting GPU cuda:{index}")


def gpu_names() -> list[str]:
    """The name of every GPU CUDA sees, in its numbering."""
    return [device_name_and_capability(index)[0] for index in range(gpu_count())]


def dali_device_id(index: int) -> int:
    """The device_id DALI pipelines run on: the GPU the engine runs on."""
    return index


def device_name_and_capability(device: int | None = None) -> tuple[str, str]:
    cudart = runtime_api()
    device = current_device() if device is None else device
    properties = check(cudart.cudaGetDeviceProperties(device), "reading the GPU's properties")
    name = properties.name.split(b"\0", 1)[0].decode()
    return name, f"{properties.major}.{properties.minor}"


class Stream:
    """A non-blocking stream: the legacy default stream adds device-wide syncs."""

    def __init__(self):
        cudart = runtime_api()
        self.handle = check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "creating a stream")

    @property
    def address(self) -> int:
        from cuda.bindings.utils import get_cuda_native_handle
        return get_cuda_native_handle(self.handle)

    def synchronize(self) -> None:
        """Wait for the stream's work; nothing to wait for once closed."""
        if self.handle is not None:
            check(runtime_api().cudaStreamSynchronize(self.handle), "waiting for the GPU")

    def wait(self, event: Event) -> None:
        """Work queued on this stream from now on starts after ``event`` (no host wait)."""
        check(runtime_api().cudaStreamWaitEvent(self.handle, event.handle, 0), "ordering two streams")

    def close(self) -> None:
        if self.handle is not None:
            check(runtime_api().cudaStreamDestroy(self.handle), "destroying a stream")
            self.handle = None


class Event:
    def __init__(self):
        cudart = runtime_api()
        self.handle = check(cudart.cudaEventCreateWithFlags(cudart.cudaEventDisableTiming), "creating an event")

    def record(self, stream: Stream) -> None:
        check(runtime_api().cudaEventRecord(self.handle, stream.handle), "recording an event")

    def synchronize(self) -> None:
        check(runtime_api().cudaEventSynchronize(self.handle), "waiting for the GPU")

    def close(self) -> None:
        if self.handle is not None:
            check(runtime_api().cudaEventDestroy(self.handle), "destroying an event")
            self.handle = None


class DeviceBuffer:
    """GPU memory from cudaMalloc (256-byte aligned, as TensorRT requires)."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        self.address = check(runtime_api().cudaMalloc(nbytes), f"allocating {nbytes} bytes on the GPU")

    def close(self) -> None:
        if self.address:
            check(runtime_api().cudaFree(self.address), "freeing GPU memory")
            self.address = 0


class PinnedBuffer:
    """Page-locked host memory, so device-to-host copies run asynchronously at full speed."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        self.address = check(runtime_api().cudaMallocHost(nbytes), f"allocating {nbytes} bytes of pinned memory")
        pointer = ctypes.cast(ctypes.c_void_p(self.address), ctypes.POINTER(ctypes.c_ubyte))
        self.array = np.ctypeslib.as_array(pointer, (nbytes,))

    def close(self) -> None:
        if self.address:
            check(runtime_api().cudaFreeHost(self.address), "freeing pinned memory")
            self.address = 0


def copy_async(destination: int, source: int, nbytes: int, kind_name: str, stream: Stream) -> None:
    cudart = runtime_api()
    kind = getattr(cudart.cudaMemcpyKind, kind_name)
    check(cudart.cudaMemcpyAsync(destination, source, nbytes, kind, stream.handle), "copying between host and GPU")

