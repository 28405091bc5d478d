"""Inference backends behind one small interface.

A backend takes a batch of uint8 RGB images [N,320,320,3] and returns uint8 masks
[N,320,320], running the matte graph (``build_engine.matte_graph``), so every backend
shares the same numerics.
"""
from __future__ import annotations

import abc
from pathlib import Path

import numpy as np

BACKEND_CHOICES = ("auto", "onnxruntime")
DEVICE_CHOICES = ("auto", "cpu", "cuda")


class Backend(abc.ABC):
    """Runs the matte graph on one device."""

    name: str
    device: str
    # Largest batch worth sending at once: CPU batches stay small (more memory, no speed).
    preferred_batch: int

    @abc.abstractmethod
    def run(self, rgb_batch: np.ndarray) -> np.ndarray:
        """uint8 [N,320,320,3] RGB -> uint8 [N,320,320] masks."""

    def describe(self, model_label: str) -> str:
        return f"backend {self.name} on {self.device}, model {model_label}"


def open_backend(graph_path: Path, backend: str = "auto", device: str = "auto",
                 threads: int | None = None) -> Backend:
    """Pick and open a backend; asking for something unavailable is an error, never a fallback."""
    from .onnxruntime_backend import OnnxRuntimeBackend

    if backend not in BACKEND_CHOICES:
        raise ValueError(f"unknown backend {backend!r}")
    return OnnxRuntimeBackend(graph_path, device=device, threads=threads)
