"""ONNX Runtime sessions as trt-matte opens them: quiet, without spinning threads, with
CUDA libraries preloaded, and with failures as one-line errors. The backends and the
INT8 calibration (which runs graphs of its own) share these settings."""
from __future__ import annotations

import contextlib
import functools
import io
from pathlib import Path

import onnx
import onnxruntime as ort

from .errors import MatteError

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def session_options(threads: int | None = None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # keep ONNX Runtime's warnings off the user's terminal
    if threads:
        options.intra_op_num_threads = threads
    # Idle workers spinning between operators take the cores that ffmpeg's decoder and
    # encoder need: INT8 end to end went from 6.97 to 7.53 fps on 2 cores, FP32 unchanged.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


# This optimizer quantizes the weights of a float convolution fed by a DequantizeLinear,
# undoing the convolutions an INT8 graph keeps in FP32 on purpose (on u2netp the masks
# went from IoU 0.99 to 0.6 against FP32). It has nothing to act on in float graphs.
DISABLED_OPTIMIZERS = ["WeightBiasQuantization"]


def cuda_providers(gpu_index: int) -> list:
    """ONNX Runtime's CUDA provider on that GPU, with the CPU for what it leaves."""
    return [(CUDA_PROVIDER, {"device_id": str(gpu_index)}), CPU_PROVIDER]


def open_session(graph_path: Path, providers: list, threads: int | None) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(graph_path), session_options(threads), providers=providers,
                                    disabled_optimizers=DISABLED_OPTIMIZERS)
    except Exception as exc:  # ORT raises its own pybind exception types
        raise MatteError(f"ONNX Runtime could not load {graph_path.name}: {exc}".splitlines()[0]) from None


@functools.cache
def preload_cuda_libraries() -> None:
    """Load CUDA and cuDNN for ONNX Runtime's CUDA provider, once.

    When they come from NVIDIA's pip wheels (onnxruntime-gpu's [cuda,cudnn] extras), the
    dynamic loader does not search there and the provider fails to start unless they are
    preloaded, which onnxruntime-gpu's preload_dlls does (ORT 1.21+). System-wide CUDA
    loads without it, so a failure here is left to the session to report, and the
    hints preload_dlls prints about libraries it did not find stay off the terminal.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            preload()
    except Exception:  # noqa: BLE001 -- see the docstring: the session reports what matters
        pass


def cuda_session(graph_path: Path, threads: int | None, gpu_index: int = 0) -> ort.InferenceSession:
    if CUDA_PROVIDER not in ort.get_available_providers():
        raise MatteError("--device cuda needs onnxruntime-gpu (pip uninstall onnxruntime && pip install onnxruntime-gpu); "
                         "the installed onnxruntime has no CUDA provider")
    preload_cuda_libraries()
    session = open_session(graph_path, cuda_providers(gpu_index), threads)
    # ORT quietly drops a provider it cannot initialise (no driver, no GPU): check.
    if session.get_providers()[0] != CUDA_PROVIDER:
        raise MatteError("ONNX Runtime's CUDA provider is installed but could not start "
                         "(no NVIDIA GPU or driver?); use --device cpu")
    return session


def cpu_session(model: onnx.ModelProto) -> ort.InferenceSession:
    """A CPU session for a graph made in memory (calibration's probes and single layers)."""
    return ort.InferenceSession(model.SerializeToString(), session_options(), providers=[CPU_PROVIDER])


def ort_errors() -> tuple[type[BaseException], ...]:
    """ONNX Runtime's own exception types (pybind classes outside the RuntimeError tree)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state
    return (state.Fail, state.InvalidArgument, state.InvalidGraph, state.RuntimeException,
            state.NotImplemented, state.NoSuchFile, RuntimeError)
