"""Q/DQ networks with ONNX Runtime's static quantizer (QDQ format, MinMax calibration).

Two flavours come from the same calibration frames, because the two runtimes want
different activation types (measured on u2netp, 2-core x86 CPU with AVX-512 VNNI):

- ``cpu``: uint8 activations with zero points, int8 weights. ONNX Runtime's fast x86
  kernels are u8 x s8; the same graph with int8 activations ran at 0.85x FP32.
- ``tensorrt``: int8 activations with zero point 0 (TensorRT takes only symmetric
  INT8 Q/DQ), int8 weights, float biases (TensorRT's DequantizeLinear takes no int32),
  Q/DQ only in front of convolutions, and everything else in FP16 (``with_fp16_rest``,
  with the layers the FP16 graph keeps in FP32 kept there too: ``build_engine.fp16``).

Weights are per output channel and symmetric in both. Only the network is quantized;
the matte graph's pre- and post-processing stay FP32 around it. Convolutions whose
output 8-bit quantization measurably ruins (``sensitive_convolutions``), and in the
TensorRT graph the mask head, are left out of INT8 (``left_out_convolutions``; FP32 in
the CPU graph, FP16 in the TensorRT one unless FP16 ruins them too): in
U²-Net-p one decoder convolution reads a concatenation of a 0..17 tensor with a
0..228 one, and a shared 8-bit scale wipes out the small half (output SQNR -5 dB, the
whole mask lost; every other convolution measured above 22 dB). FP16 ruins the same
one (``build_engine.fp16``), so the TensorRT graph keeps it FP32 with its input path.

MinMax ranges, because the histogram methods measured worse here: percentile ranges
gave IoU 0.93 against FP32 where MinMax gave 0.985, and held every calibration
frame's activations in memory (21 GB for 30 frames of u2netp).
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
from tqdm import tqdm

from ..build_engine.fp16 import KeptInFp32, convert_network_to_fp16, kept_in_fp32
from ..build_engine.matte_graph import INPUT_NAME, preprocessing_graph
from ..build_engine.network import MIN_OPSET, convert_opset, network_input_name
from ..build_engine.sensitivity import Rounding, measure_convolutions
from ..errors import MatteError
from ..onnxruntime_sessions import cpu_session, ort_errors

# The first flavour measures every tensor's range; the second reuses a subset of them.
FLAVOURS = ("cpu", "tensorrt")
# Q/DQ only in front of convolutions for TensorRT, which fuses the rest itself: with
# int8's 7 bits for ReLU outputs, also quantizing Concat, Resize, MaxPool and Add, or
# the convolutions' outputs, lost IoU (u2netp, held-out frames: 0.958 and 0.970 vs 0.975).
TENSORRT_OPS = ["Conv"]
METHOD = "minmax"
# FP16 Q/DQ scales need opset 19.
FP16_QDQ_OPSET = 19
# Convolutions whose output SQNR under 8-bit quantization falls below this stay FP32.
SENSITIVE_SQNR_DB = 15.0
SENSITIVITY_FRAMES = 2
INT8_LEVELS = 127


class NetworkInputs:
    """uint8 RGB frames [N,320,320,3] seen as the network's float inputs [1,3,320,320], one
    at a time through the matte graph's own preprocessing (all at once would take 4x the
    frames' memory in floats)."""

    def __init__(self, frames: np.ndarray):
        self.frames = frames
        self._session = cpu_session(preprocessing_graph(MIN_OPSET))

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[np.ndarray]:
        for frame in self.frames:
            yield self._session.run(None, {INPUT_NAME: frame[None]})[0]


def _fake_quantize(values: np.ndarray, channel_axis: bool) -> np.ndarray:
    """Symmetric int8 round trip: per tensor, or per output channel for weights."""
    if channel_axis:
        peak = np.abs(values).reshape(values.shape[0], -1).max(axis=1).reshape(-1, *[1] * (values.ndim - 1))
    else:
        peak = np.abs(values).max()
    scale = np.maximum(peak / INT8_LEVELS, np.finfo(np.float32).tiny)
    return (np.clip(np.round(values / scale), -INT8_LEVELS, INT8_LEVELS) * scale).astype(np.float32)


def left_out_convolutions(network: onnx.ModelProto, inputs: NetworkInputs) -> dict[str, dict[str, str]]:
    """Per flavour, the convolutions kept out of INT8, each with the reason.

    Both: any measured as ``sensitive_convolutions``. TensorRT also: the mask head (the
    convolutions with a single output channel), which NVIDIA's quantizer leaves out or
    advises to (tensorrt.md 2.1): an 8-bit 1-channel convolution gains nothing on a GPU.
    On the CPU leaving them out changed no accuracy (u2netp, held-out IoU 0.978 both
    ways) and cost ~4% end to end, so the CPU graph keeps them in INT8.
    """
    try:
        sensitive = sensitive_convolutions(network, inputs)
    except ort_errors() as exc:
        raise MatteError(f"ONNX Runtime could not run the network ({exc})".splitlines()[0]) from None
    measured = {name: f"8-bit output SQNR {sqnr:.0f} dB" for name, sqnr in sensitive.items()}
    weights = {init.name: init for init in network.graph.initializer}
    heads = {node.name: "mask head, 1 output channel" for node in network.graph.node
             if node.op_type == "Conv" and node.input[1] in weights and weights[node.input[1]].dims[0] == 1}
    return {"cpu": dict(sorted(measured.items())), "tensorrt": dict(sorted({**heads, **measured}.items()))}


INT8_ROUNDING = Rounding(activation=lambda values: _fake_quantize(values, False),
                         weights=lambda values: _fake_quantize(values, True))


def sensitive_convolutions(network: onnx.ModelProto, inputs: NetworkInputs) -> dict[str, float]:
    """Convolutions whose output SQNR with 8-bit input and weights is below the bound, with
    that SQNR: each one measured alone on a few frames (the stricter symmetric int8 flavour)."""
    frames = (frame for frame, _ in zip(inputs, range(SENSITIVITY_FRAMES)))
    measured = measure_convolutions(network, list(frames), INT8_ROUNDING)
    return {name: result.sqnr_db for name, result in measured.items() if result.sqnr_db < SENSITIVE_SQNR_DB}


class _FrameFeed:
    """ONNX Runtime's CalibrationDataReader protocol over in-memory network inputs."""

    def __init__(self, input_name: str, inputs: NetworkInputs, bar: tqdm):
        self._feeds = iter(inputs)
        self._input_name = input_name
        self._bar = bar

    def get_next(self) -> dict[str, np.ndarray] | None:
        frame = next(self._feeds, None)
        if frame is None:
            return None
        self._bar.update()
        return {self._input_name: frame}  # the exported network's batch is fixed at 1


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The quantizer logs advice (pre-processing, opset) to the root logger on every run."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def quantize_flavours(network: onnx.ModelProto, inputs: NetworkInputs, left_out: dict[str, dict[str, str]],
                      progress: bool = False) -> dict[str, bytes]:
    """Calibrate on ``inputs`` (float network inputs) and return each flavour's Q/DQ network."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantized = {}
    with tempfile.TemporaryDirectory(prefix="trt-matte-quant-") as work, _quiet_quantizer():
        source = Path(work, "network.onnx")
        onnx.save(network, str(source))
        # ONNX Runtime >= 1.27 can keep the measured ranges, so the second flavour
        # reuses them instead of running every frame through the network again.
        ranges = {"calibration_cache_path": str(Path(work, "ranges.json"))} \
            if "calibration_cache_path" in inspect.signature(quantize_static).parameters else {}
        for flavour in FLAVOURS:
            symmetric = flavour == "tensorrt"
            target = Path(work, f"network-{flavour}.onnx")
            with tqdm(total=len(inputs), unit="frame", desc="calibrating", disable=not progress) as bar:
                quantize_static(
                    str(source), str(target), _FrameFeed(network_input_name(network), inputs, bar),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                    weight_type=QuantType.QInt8, nodes_to_exclude=sorted(left_out[flavour]),
                    op_types_to_quantize=TENSORRT_OPS if symmetric else None,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                                   # TensorRT dequantizes only 8-bit types; an int32 bias DQ fails to parse.
                                   "QuantizeBias": not symmetric,
                                   "OpTypesToExcludeOutputQuantization": TENSORRT_OPS if symmetric else []},
                    **ranges)
            quantized[flavour] = target.read_bytes()
            progress = progress and not ranges
    quantized["tensorrt"] = with_fp16_rest(onnx.load_from_string(quantized["tensorrt"]),
                                           kept_in_fp32(network)).SerializeToString()
    return quantized


def with_fp16_rest(network: onnx.ModelProto, kept: KeptInFp32) -> onnx.ModelProto:
    """Everything outside the INT8 convolutions in FP16, as ModelOpt's default output is:
    TensorRT's strongly typed build keeps each tensor's ONNX type, so an FP32 rest would
    run in FP32. Opset 19 lets Q/DQ scales (and so the dequantized tensors) be FP16.
    ``kept``: the FP16 graph's FP32 nodes, measured on the network before quantization."""
    return convert_network_to_fp16(convert_opset(network, FP16_QDQ_OPSET), kept)
