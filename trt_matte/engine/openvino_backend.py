"""OpenVINO backend: the fastest CPU path, on the same matte graph ONNX Runtime runs.

Precision is always set, never left to the plugin: on a CPU with AMX or AVX-512 BF16
OpenVINO's default runs bf16, which broke masks on held-out footage (IoU 0.56 against
FP32 on a street clip). FP32 runs the FP32 graph at f32; INT8 runs a calibration's Q/DQ
graph, its quantized convolutions in INT8 and the rest at f32.

Compiled models are cached under trt-matte's cache folder (OpenVINO's own CACHE_DIR), so
a second run skips compilation; OpenVINO compiles again when a cached blob is unreadable.
"""
from __future__ import annotations

import contextlib
import ctypes
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import openvino as ov
import openvino.properties as props
import openvino.properties.hint as hints

from ..build_engine.matte_graph import FRAME_SHAPE_NAME, OUTPUT_NAME, PEAK_NAME, graph_feed
from ..errors import MatteError
from ..models import MODEL_SIZE
from .backend import Backend

# Measured on 2 cores with u2netp: batch 1 per frame as fast as larger ones, least memory.
OPENVINO_BATCH = 1


def openvino_config(cache_folder: Path, threads: int | None) -> dict:
    """The compile settings: f32 (explicit), lowest latency for one request, the cache."""
    config = {
        hints.inference_precision: ov.Type.f32,
        hints.performance_mode: hints.PerformanceMode.LATENCY,
        props.cache_dir: str(cache_folder),
    }
    if threads:
        config[props.inference_num_threads] = threads
    return config


class _SignalStack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextlib.contextmanager
def _own_signal_stack_kept() -> Iterator[None]:
    """OpenVINO's CPU plugin (2026.4) gives the thread that compiles a model a signal stack
    of its own, and puts the previous one back only when that model is freed. Two models
    freed out of order leave the thread with freed memory as its signal stack, and the
    next Ctrl-C then crashes the process (SIGSEGV). The thread keeps its own stack here;
    the plugin's workers run on threads of their own, untouched."""
    if not sys.platform.startswith("linux"):
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    own = _SignalStack()
    libc.sigaltstack(None, ctypes.byref(own))
    try:
        yield
    finally:
        libc.sigaltstack(ctypes.byref(own), None)


class OpenVinoBackend(Backend):
    name = "openvino"
    device = "cpu"
    preferred_batch = OPENVINO_BATCH

    def __init__(self, graph_path: Path, cache_folder: Path, threads: int | None = None):
        cache_folder.mkdir(parents=True, exist_ok=True)
        try:
            with _own_signal_stack_kept():
                compiled = ov.Core().compile_model(str(graph_path), "CPU", openvino_config(cache_folder, threads))
        except RuntimeError as exc:  # OpenVINO reports every failure as RuntimeError
            raise MatteError(f"OpenVINO could not load {graph_path.name}: {_first_line(exc)}") from None
        self._request = compiled.create_infer_request()
        self._upsizes = any(FRAME_SHAPE_NAME in graph_input.get_names() for graph_input in compiled.inputs)
        self.cpu_name = ov.Core().get_property("CPU", props.device.full_name)

    def run(self, rgb_batch: np.ndarray) -> np.ndarray:
        return self._infer(rgb_batch, MODEL_SIZE, MODEL_SIZE)

    def run_at_size(self, rgb_batch: np.ndarray, height: int, width: int) -> np.ndarray:
        if not self._upsizes:
            return super().run_at_size(rgb_batch, height, width)
        return self._infer(rgb_batch, height, width)

    def _infer(self, rgb_batch: np.ndarray, height: int, width: int) -> np.ndarray:
        self._request.infer(graph_feed(rgb_batch, height, width, self._upsizes))
        # The output tensor is reused by the next request, while the writer may still hold these masks.
        return self._request.get_tensor(OUTPUT_NAME).data.copy()

    def run_with_peaks(self, rgb_batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        masks = self.run(rgb_batch)
        return masks, self._request.get_tensor(PEAK_NAME).data.reshape(len(masks)).copy()

    def device_label(self) -> str:
        return f"cpu ({self.cpu_name})"


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
