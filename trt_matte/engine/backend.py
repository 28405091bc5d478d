"""The one interface every inference backend offers.

A backend takes a batch of uint8 RGB images [N,320,320,3] and returns uint8 masks
[N,320,320], running the matte graph (``build_engine.matte_graph``), so every backend
shares the same numerics. A backend is a context manager: leaving the block (or
``close()``, which may be called more than once) releases what it holds on a device.
"""
from __future__ import annotations

import abc

import numpy as np

from ..errors import MatteError


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

    @abc.abstractmethod
    def run(self, rgb_batch: np.ndarray) -> np.ndarray:
        """uint8 [N,320,320,3] RGB -> uint8 [N,320,320] masks."""

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

    def describe(self, model_label: str) -> str:
        return f"backend {self.name} on {self.device}, model {model_label}, {self.precision}"
