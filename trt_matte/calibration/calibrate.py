"""INT8 from the user's own footage (``trt-matte calibrate``).

TensorRT 11 has no INT8 calibrator: INT8 is an ONNX graph with explicit
QuantizeLinear/DequantizeLinear nodes, calibrated offline. ``calibrate`` samples frames
from the user's videos and folders (``sampling``), quantizes the U²-Net network with
ONNX Runtime (``quantize``: a CPU flavour for ONNX Runtime and a symmetric one for
TensorRT), checks both against the FP32 matte graph on held-back frames, and stores them
in the cache (``store``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..accuracy import Accuracy, compare_masks
from ..build_engine.matte_graph import INPUT_NAME, OUTPUT_NAME, matte_graph_path
from ..errors import MatteError
from ..files import atomic_folder, file_digest
from ..onnxruntime_sessions import CPU_PROVIDER, open_session
from ..build_engine.network import prepare_network
from .quantize import METHOD, SENSITIVITY_FRAMES, NetworkInputs, left_out_convolutions, quantize_flavours
from .sampling import sample_frames
from .store import RECIPE, REPORT_NAME, CalibrationReport, is_complete, make_current, model_folder

DEFAULT_FRAMES = 200
MIN_FRAMES = 4
# The sampled frames stay in memory as uint8 (250 MB per 800 with those held back).
MAX_FRAMES = 2000


def _masks(graph_path: Path, frames: np.ndarray) -> np.ndarray:
    """The graph's masks on the CPU, a frame at a time (as the CPU backend runs it)."""
    session = open_session(graph_path, [CPU_PROVIDER], threads=None)
    return np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: frame[None]})[0] for frame in frames])


def _check_accuracy(model_path: Path, networks: dict[str, Path], held_back: np.ndarray,
                    cache_dir: Path) -> dict[str, Accuracy]:
    reference = _masks(matte_graph_path(model_path, cache_dir), held_back)
    return {flavour: compare_masks(reference, _masks(matte_graph_path(network, cache_dir, "int8"), held_back))
            for flavour, network in networks.items()}


def calibrate(model_path: Path, model_label: str, inputs: Sequence[Path], cache_dir: Path, *,
              frames: int = DEFAULT_FRAMES, seed: int = 0, overwrite: bool = False, progress: bool = False,
              announce: Callable[[str], None] = lambda message: None) -> CalibrationReport:
    """Sample, quantize, check and store; the same inputs, seed and model give the same bytes."""
    import onnxruntime

    if not MIN_FRAMES <= frames <= MAX_FRAMES:
        raise MatteError(f"calibration takes {MIN_FRAMES} to {MAX_FRAMES} frames, not {frames}")
    started = time.monotonic()
    network = prepare_network(model_path)  # fails fast on a bad model, before any decoding
    sample = sample_frames([Path(source) for source in inputs], frames, seed, progress=progress, announce=announce)
    frames_digest = sample.digest()
    target = model_folder(model_path, cache_dir) / f"{frames_digest[:16]}-{METHOD}-r{RECIPE}"
    if is_complete(target) and not overwrite:
        announce("these frames were calibrated before; reusing that calibration (--overwrite calibrates again)")
        return make_current(target)
    calibration_inputs = NetworkInputs(sample.calibration)
    announce(f"measuring how each convolution takes 8 bits ({min(SENSITIVITY_FRAMES, len(calibration_inputs))} frames)")
    not_quantized = left_out_convolutions(network, calibration_inputs)
    with atomic_folder(target) as folder:
        networks = {}
        for flavour, graph_bytes in quantize_flavours(network, calibration_inputs, not_quantized, progress).items():
            networks[flavour] = folder / f"network-{flavour}.onnx"
            networks[flavour].write_bytes(graph_bytes)
        announce(f"checking both graphs against FP32 on {len(sample.held_back)} held-back frames")
        accuracy = _check_accuracy(model_path, networks, sample.held_back, cache_dir)
        report = CalibrationReport(
            model=model_label, model_sha256=file_digest(model_path), method=METHOD, seed=seed,
            calibration_frames=len(sample.calibration), held_back_frames=len(sample.held_back),
            frames_sha256=frames_digest, inputs=list(sample.inputs),
            not_quantized=not_quantized, accuracy=accuracy, onnxruntime=onnxruntime.__version__,
            seconds=round(time.monotonic() - started, 1), recipe=RECIPE, skipped=list(sample.skipped),
            folder=str(target))
        (folder / REPORT_NAME).write_text(report.to_json())
    return make_current(target)


