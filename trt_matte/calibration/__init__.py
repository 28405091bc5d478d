"""INT8 from the user's own footage (``trt-matte calibrate``).

TensorRT 11 has no INT8 calibrator: INT8 is an ONNX graph with explicit
QuantizeLinear/DequantizeLinear nodes, calibrated offline. ``calibrate`` samples frames
from the user's videos and folders, quantizes the U²-Net network with ONNX Runtime
(``quantize``: a CPU flavour for ONNX Runtime and a symmetric one for TensorRT), checks
both against the FP32 matte graph on held-back frames, and stores them in the cache:

    <cache>/int8/<model sha256[:16]>/<frames sha256[:16]>-minmax-r<RECIPE>/
        network-cpu.onnx  network-tensorrt.onnx  report.json
    <cache>/int8/<model sha256[:16]>/current     (the folder name of the latest calibration)

``int8_network`` hands the latest one to the backends and to ``build``, refusing one
whose IoU against FP32 is below ``GATE_IOU`` unless told to accept it.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..build_engine.matte_graph import file_digest, matte_graph_path
from ..errors import MatteError
from ..files import atomic_folder, atomic_write_bytes
from .quantize import (FLAVOURS, METHOD, SENSITIVE_SQNR_DB, SENSITIVITY_FRAMES, NetworkInputs,
                       left_out_convolutions, prepare_network, quantize_flavours)
from .sampling import sample_frames

DEFAULT_FRAMES = 200
MIN_FRAMES = 4
# The sampled frames stay in memory as uint8 (250 MB per 800 with those held back).
MAX_FRAMES = 2000
GATE_IOU = 0.97
# Bump when sampling or quantization changes, so old calibrations are not reused.
RECIPE = 4
REPORT_NAME = "report.json"
CURRENT_NAME = "current"
FLAVOUR_TITLES = {"cpu": "ONNX Runtime (CPU) graph", "tensorrt": "TensorRT graph"}


@dataclass(frozen=True)
class Accuracy:
    """A quantized graph against the FP32 graph on held-back frames."""
    iou_mean: float  # masks thresholded at 128
    iou_min: float
    mean_abs_error: float  # in levels of 255

    @property
    def passes(self) -> bool:
        return self.iou_mean >= GATE_IOU


@dataclass
class CalibrationReport:
    model: str
    model_sha256: str
    method: str
    seed: int
    calibration_frames: int
    held_back_frames: int
    frames_sha256: str
    inputs: list[str]
    not_quantized: dict[str, dict[str, str]]  # flavour -> convolution -> why it was left out of INT8
    accuracy: dict[str, Accuracy]
    onnxruntime: str
    seconds: float
    recipe: int
    skipped: list[str] = field(default_factory=list)
    folder: str = ""

    def lines(self) -> list[str]:
        lines = [f"INT8 calibration of {self.model}: {self.calibration_frames} frames from "
                 f"{len(self.inputs)} input(s), seed {self.seed}, {self.method}; checked on "
                 f"{self.held_back_frames} held-back frames against FP32"]
        for flavour, accuracy in self.accuracy.items():
            verdict = "ok" if accuracy.passes else f"BELOW the {GATE_IOU} gate (use --force to use it anyway)"
            lines.append(f"  {FLAVOUR_TITLES[flavour]}: IoU {accuracy.iou_mean:.4f} (min {accuracy.iou_min:.4f}), "
                         f"mean abs error {accuracy.mean_abs_error:.2f}/255: {verdict}")
            lines.append(f"    left out of INT8: {_left_out_summary(self.not_quantized[flavour])}")
        lines.append(f"  stored in {self.folder} ({self.seconds:.0f} s)")
        return lines

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "CalibrationReport":
        fields = json.loads(text)
        fields["accuracy"] = {name: Accuracy(**values) for name, values in fields["accuracy"].items()}
        return cls(**fields)


def _left_out_summary(left_out: dict[str, str]) -> str:
    """'Conv_787 (8-bit output SQNR -6 dB); mask head, 1 output channel: Conv_945, ...'"""
    by_reason: dict[str, list[str]] = {}
    for name, reason in left_out.items():
        by_reason.setdefault(reason, []).append(name)
    parts = [f"{names[0]} ({reason})" if len(names) == 1 else f"{reason}: {', '.join(names)}"
             for reason, names in by_reason.items()]
    return "; ".join(parts) or f"nothing (every convolution above {SENSITIVE_SQNR_DB:.0f} dB SQNR)"


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two masks thresholded at 128; two empty masks agree perfectly."""
    foreground_a, foreground_b = a >= 128, b >= 128
    union = np.logical_or(foreground_a, foreground_b).sum()
    return 1.0 if union == 0 else float(np.logical_and(foreground_a, foreground_b).sum() / union)


def compare_masks(reference: np.ndarray, candidate: np.ndarray) -> Accuracy:
    """Per-frame IoU (``mask_iou``) and mean absolute error."""
    ious = [mask_iou(expected, actual) for expected, actual in zip(reference, candidate)]
    error = float(np.abs(reference.astype(np.int16) - candidate.astype(np.int16)).mean())
    return Accuracy(round(float(np.mean(ious)), 6), round(float(np.min(ious)), 6), round(error, 4))


def model_folder(model_path: Path, cache_dir: Path) -> Path:
    return cache_dir / "int8" / file_digest(model_path)[:16]


def _masks(graph_path: Path, frames: np.ndarray) -> np.ndarray:
    from ..engine.onnxruntime_backend import OnnxRuntimeBackend
    backend = OnnxRuntimeBackend(graph_path, device="cpu")
    return np.concatenate([backend.run(frame[None]) for frame in frames])


def _check_accuracy(model_path: Path, networks: dict[str, Path], held_back: np.ndarray,
                    cache_dir: Path) -> dict[str, Accuracy]:
    reference = _masks(matte_graph_path(model_path, cache_dir), held_back)
    return {flavour: compare_masks(reference, _masks(matte_graph_path(network, cache_dir, "int8"), held_back))
            for flavour, network in networks.items()}


def calibrate(model_path: Path, model_label: str, inputs: Sequence[Path], cache_dir: Path, *,
              frames: int = DEFAULT_FRAMES, seed: int = 0, progress: bool = False,
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
    if _is_complete(target):
        announce("these frames were calibrated before; reusing that calibration")
        return _make_current(target)
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
    return _make_current(target)


def _is_complete(folder: Path) -> bool:
    """A calibration folder whose report reads, from this recipe, with both networks there."""
    try:
        report = load_report(folder)
    except MatteError:
        return False
    return report.recipe == RECIPE and all((folder / f"network-{flavour}.onnx").is_file() for flavour in FLAVOURS)


def _make_current(folder: Path) -> CalibrationReport:
    atomic_write_bytes(folder.parent / CURRENT_NAME, folder.name.encode())
    return load_report(folder)


def load_report(folder: Path) -> CalibrationReport:
    try:
        return CalibrationReport.from_json((folder / REPORT_NAME).read_text())
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise MatteError(f"damaged INT8 calibration in {folder} ({type(exc).__name__}): "
                         "run 'trt-matte calibrate' again") from None


def current_calibration(model_path: Path, cache_dir: Path, model_label: str) -> Path:
    root = model_folder(model_path, cache_dir)
    try:
        name = (root / CURRENT_NAME).read_text().strip()
    except OSError:
        raise MatteError(f"no INT8 calibration for {model_label} yet: run "
                         f"'trt-matte calibrate VIDEO_OR_FOLDER... --model {model_label}' first") from None
    return root / name


def int8_network(model_path: Path, cache_dir: Path, flavour: str, *, model_label: str | None = None,
                 accept_below_gate: bool = False) -> Path:
    """The latest calibration's Q/DQ network for ``flavour`` ("cpu" or "tensorrt")."""
    label = model_label or model_path.name
    folder = current_calibration(model_path, cache_dir, label)
    if not _is_complete(folder):
        raise MatteError(f"the INT8 calibration in {folder} is incomplete, damaged or from an older "
                         "trt-matte: run 'trt-matte calibrate' again")
    accuracy = load_report(folder).accuracy[flavour]
    network = folder / f"network-{flavour}.onnx"
    if not accuracy.passes and not accept_below_gate:
        raise MatteError(f"the INT8 {flavour} graph of {label} reached IoU {accuracy.iou_mean:.3f} against FP32 "
                         f"(needs {GATE_IOU}): calibrate on footage closer to yours, or pass --force")
    return network


def network_for(model_path: Path, cache_dir: Path, precision: str, flavour: str, *, model_label: str | None = None,
                accept_below_gate: bool = False) -> Path:
    """The network file a graph of ``precision`` wraps: the model itself, or for int8 its Q/DQ network."""
    if precision != "int8":
        return model_path
    return int8_network(model_path, cache_dir, flavour, model_label=model_label, accept_below_gate=accept_below_gate)
