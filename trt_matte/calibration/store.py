"""Where INT8 calibrations live, and which one a run uses.

    <cache>/int8/<model sha256[:16]>/<frames sha256[:16]>-minmax-r<RECIPE>/
        network-cpu.onnx  network-tensorrt.onnx  report.json
    <cache>/int8/<model sha256[:16]>/current     (the folder name of the latest calibration)

``network_for`` hands the latest calibration's network to the backends and to ``build``,
refusing one whose IoU against FP32 is below the accuracy gate unless told to accept it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..accuracy import GATE, Accuracy
from ..errors import MatteError
from ..files import atomic_write_bytes, file_digest
from .quantize import FLAVOURS, SENSITIVE_SQNR_DB

# Bump when sampling or quantization changes, so old calibrations are not reused.
# 5: the gate reads IoU over all held-back frames together, where 4 averaged per frame.
# 6: the TensorRT graph's FP16 rest keeps the FP16 graph's measured FP32 nodes.
RECIPE = 6
REPORT_NAME = "report.json"
CURRENT_NAME = "current"
FLAVOUR_TITLES = {"cpu": "ONNX Runtime (CPU) graph", "tensorrt": "TensorRT graph"}


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
            verdict = "ok" if accuracy.passes else f"BELOW {GATE} (use --force to use it anyway)"
            lines.append(f"  {FLAVOUR_TITLES[flavour]}: IoU {accuracy.iou:.4f} (worst frame {accuracy.iou_worst:.4f}), "
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


def model_folder(model_path: Path, cache_dir: Path) -> Path:
    return cache_dir / "int8" / file_digest(model_path)[:16]


def is_complete(folder: Path) -> bool:
    """A calibration folder whose report reads, from this recipe, with both networks there."""
    try:
        report = load_report(folder)
    except MatteError:
        return False
    return report.recipe == RECIPE and all((folder / f"network-{flavour}.onnx").is_file() for flavour in FLAVOURS)


def make_current(folder: Path) -> CalibrationReport:
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
    if not is_complete(folder):
        raise MatteError(f"the INT8 calibration in {folder} is incomplete, damaged or from an older "
                         "trt-matte: run 'trt-matte calibrate' again")
    accuracy = load_report(folder).accuracy[flavour]
    network = folder / f"network-{flavour}.onnx"
    if not accuracy.passes and not accept_below_gate:
        raise MatteError(f"the INT8 {flavour} graph of {label} reached IoU {accuracy.iou:.3f} and mean abs error "
                         f"{accuracy.mean_abs_error:.2f}/255 against FP32, below {GATE}: calibrate on footage "
                         "closer to yours, or pass --force")
    return network


def network_for(model_path: Path, cache_dir: Path, precision: str, flavour: str, *, model_label: str | None = None,
                accept_below_gate: bool = False) -> Path:
    """The network file a graph of ``precision`` wraps: the model itself, or for int8 its Q/DQ network."""
    if precision != "int8":
        return model_path
    return int8_network(model_path, cache_dir, flavour, model_label=model_label, accept_below_gate=accept_below_gate)
