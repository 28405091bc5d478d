"""The one interface every inference backend offers.

A backend takes a batch of uint8 RGB images [N,320,320,3] and returns uint8 masks
[N,320,320], running the matte graph (``build_engine.matte_graph``), so every backend
shares the same numerics. A backend opened with mask shaping (``MaskShape``) runs an
upsizing graph, since shaping counts output pixels: ``run_at_size`` then gives the
finished masks at the frame's size, and ``run`` the masks shaped at 320x320, which is
what the precision guard compares (the same graph on both sides). A backend is a context manager: leaving the block (or
``close()``, which may be called more than once) releases what it holds on a device.
"""
from __future__ import annotations

import abc
from types import ModuleType
from typing import Any

import numpy as np

from .. import cuda
from ..errors import MatteError


# TensorRT takes only 256-byte aligned tensor addresses (cudaMalloc's are).
ALIGNMENT = 256
# What device backends allocate for the empty frame_shape input: bindings want an
# address with at least one byte behind it.
EMPTY_TENSOR_BYTES = ALIGNMENT


class Backend(abc.ABC):
    """Runs the matte graph on one device."""

    name: str
    device: str
    # Largest batch worth sending at once: CPU batches stay small (more memory, no speed).
    preferred_batch: int
    # GPU backends also take batches already in GPU memory (``enqueue``), zero-copy.
    takes_device_batches: bool = False
    precision: str = "fp32"
    # The largest frame side the backend can upsize to (a TensorRT engine's profile); None: any.
    max_frame_side: int | None = None
    # Backends that take device batches: the CUDA adapter the GPU stages allocate and copy
    # with (``trt_matte.cuda``, or its host twin ``trt_matte.fake_cuda`` in the tests).
    cuda: ModuleType | None = None
    # The CUDA device a GPU backend runs on (CUDA_VISIBLE_DEVICES numbering); None on the CPU.
    gpu_index: int | None = None
    # Masks are shaped in the graph (threshold, erode, ...): deliver ``run_at_size``'s.
    shapes_masks: bool = False

    @abc.abstractmethod
    def run(self, rgb_batch: np.ndarray) -> np.ndarray:
        """uint8 [N,320,320,3] RGB -> uint8 [N,320,320] masks."""

    def run_at_size(self, rgb_batch: np.ndarray, height: int, width: int) -> np.ndarray:
        """uint8 [N,320,320,3] RGB -> uint8 [N,height,width] masks, upsized (and shaped) by
        the graph; backends opened with mask shaping have it."""
        raise NotImplementedError(f"the {self.name} backend was opened without an upsizing graph")

    def run_with_peaks(self, rgb_batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(masks, float [N] top probabilities) from a graph made with ``peaks``: the host
        backends that serve as the precision guard's FP32 reference have it."""
        raise NotImplementedError(f"the {self.name} backend does not report top probabilities")

    def close(self) -> None:
        """Release device memory, streams and sessions now; host-only backends hold none."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def check_frame_size(self, height: int, width: int) -> None:
        if self.max_frame_side is not None and max(height, width) > self.max_frame_side:
            raise MatteError(f"frames of {width}x{height} exceed this engine's limit of {self.max_frame_side} "
                             "pixels a side; run 'trt-matte build --max-size N' with a larger N")

    def device_label(self) -> str:
        """The device as the start-up line names it: ``cuda:1 (NVIDIA H100 80GB HBM3)``."""
        if self.gpu_index is None:
            return self.device
        try:  # ONNX Runtime's own CUDA runs without cuda-python, which names the GPU
            name = f" ({(self.cuda or cuda).device_name_and_capability(self.gpu_index)[0]})"
        except MatteError:
            name = ""
        return f"cuda:{self.gpu_index}{name}"

    def use_gpu(self) -> None:
        """Make the backend's GPU this thread's CUDA device: CUDA keeps the current device
        per thread, and the pipelines call a backend from threads of their own."""
        if self.gpu_index is not None and self.cuda is not None:
            self.cuda.use_device(self.gpu_index)

    def describe(self, model_label: str) -> str:
        return f"backend {self.name} on {self.device_label()}, model {model_label}, {self.precision}"


def upload_batch(cuda: ModuleType, buffer: Any, rgb_batch: np.ndarray, stream: Any) -> int:
    """Queue a host batch's copy into the device ``buffer`` on ``stream``; returns the
    buffer's address. Queued on the engine's stream, the copy never overwrites a batch
    still being read; from pageable memory it returns once the data is staged."""
    frames = np.ascontiguousarray(rgb_batch, dtype=np.uint8)
    if frames.nbytes > buffer.nbytes:
        raise ValueError(f"a batch of {len(frames)} frames ({frames.nbytes} bytes) exceeds the input buffer "
                         f"({buffer.nbytes} bytes)")
    cuda.copy_async(buffer.address, frames.ctypes.data, frames.nbytes, "cudaMemcpyHostToDevice", stream)
    return buffer.address


def aligned_input(cuda: ModuleType, address: int, nbytes: int, staging: Any, stream: Any) -> int:
    """``address`` when it is ALIGNMENT-aligned, else the address of ``staging`` after a
    device-to-device copy queued on ``stream``: DALI's batches are not promised to start
    on a 256-byte boundary, and TensorRT refuses other addresses."""
    if address % ALIGNMENT == 0:
        return address
    if nbytes > staging.nbytes:
        raise ValueError(f"{nbytes} bytes exceed the staging buffer ({staging.nbytes} bytes)")
    cuda.copy_async(staging.address, address, nbytes, "cudaMemcpyDeviceToDevice", stream)
    return staging.address
