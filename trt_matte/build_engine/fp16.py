"""The FP16 network for TensorRT 11, whose strongly typed networks take their
precision from the ONNX types (there is no FP16 builder flag any more).

Only the U²-Net network is converted; the matte graph's pre- and post-processing
are wrapped around it afterwards and stay FP32, where precision matters: the
division by the image maximum and the per-image min-max, which amplifies any error
when the range is small. onnxconverter-common does the conversion: it is pure Python
and light, where NVIDIA ModelOpt's AutoCast pulls in torch. ``keep_io_types`` keeps the
network's input and output FP32 so the wrapping graph sees the same types.

The converter keeps range-sensitive ops in FP32 behind Cast nodes; Resize is taken off
that list, since bilinear upsampling cannot leave FP16's range. Measured with ONNX
Runtime on the CPU (u2netp, 20 carphone frames and the same frames as a small, distant
person; IoU over all frames and MAE against the FP32 graph): Resize in FP32, IoU 0.9893
/ 0.9948, MAE 0.79 / 0.11; Resize in FP16, 0.9899 / 0.9944, 0.73 / 0.12.

Which layers must stay FP32 is decided here, for the FP16 graph and for the FP16 rest of
the TensorRT INT8 graph alike (``kept_in_fp32``): every convolution whose output FP16
rounding measurably ruins, with the path that computes its input back to (and including)
the convolutions that produce it. Measured on u2netp with ONNX Runtime on the CPU, FP16
rounding one block of layers at a time on low-confidence clips (no person, a pattern,
gradients), all of the FP16 graph's loss came from one decoder block, and within it
from one convolution whose weights meet a 0..228 input with many weights below FP16's
normal range (a third of them): alone, its output SQNR in FP16 is 21 dB, where every
other convolution measures 56 dB or more. Kept in FP32 with its input path, the FP16
graph's IoU against FP32 went from 0.84-0.90 to 0.98-0.99 on those clips (see the
README). ONNX Runtime's CPU rounds to FP16 only at tensor boundaries, so this is a
proxy for TensorRT's FP16 kernels, not a measurement of them.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxconverter_common import float16

from .network import mean_colour_input
from .sensitivity import Rounding, measure_convolutions

# FP16's largest finite value; the converter's default (1e4) would clip weights needlessly.
FP16_MAX = 65504.0
# Ops kept in FP32: the converter's own list, less Resize (see the module doc).
KEPT_IN_FP32 = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) - {"Resize"})
# Resize's roi and scales inputs, float32 by the ONNX spec whatever the data's type.
RESIZE_FLOAT_INPUTS = (1, 2)
# A convolution whose output SQNR under FP16 rounding is below this stays FP32 (u2netp:
# one at 21 dB, every other 56 dB or more).
SENSITIVE_SQNR_DB = 40.0
FP16_ROUNDING = Rounding(*[lambda values: values.astype(np.float16).astype(np.float32)] * 3)


@dataclass(frozen=True)
class KeptInFp32:
    """The nodes of a network that stay FP32 in its FP16 versions, and why."""
    nodes: tuple[str, ...]
    sensitive: dict[str, float]  # convolution -> its output SQNR in FP16 (dB)
    multiply_add_share: float  # of all the convolutions' multiply-adds, the share kept FP32

    def line(self) -> str:
        return (f"{len(self.sensitive)} convolution(s) below {SENSITIVE_SQNR_DB:.0f} dB in FP16 kept FP32 with "
                f"their inputs: {len(self.nodes)} nodes, {self.multiply_add_share:.1%} of the multiply-adds")


def kept_in_fp32(network: onnx.ModelProto) -> KeptInFp32:
    """Measured on one picture of ImageNet's mean colour (a network input of zeros): on
    u2netp the same convolution stood out, by the same 35 dB, on noise, smooth colour
    blobs and real frames, since the input it takes badly spans 0..228 on any picture."""
    measured = measure_convolutions(network, [mean_colour_input()], FP16_ROUNDING)
    sensitive = {name: round(float(result.sqnr_db), 1) for name, result in measured.items()
                 if result.sqnr_db < SENSITIVE_SQNR_DB}
    nodes = _with_input_paths(network, sorted(sensitive))
    kept_work = sum(result.multiply_adds for name, result in measured.items() if name in nodes)
    total_work = sum(result.multiply_adds for result in measured.values())
    return KeptInFp32(tuple(nodes), sensitive, kept_work / max(total_work, 1))


def _with_input_paths(network: onnx.ModelProto, convolutions: list[str]) -> list[str]:
    """The convolutions, and every node computing their float input back to and including
    the convolutions that produce it: an FP32 convolution fed an FP16-rounded input would
    keep the rounding it is sensitive to."""
    inferred = onnx.shape_inference.infer_shapes(network)
    float_tensors = {value.name for value in [*inferred.graph.value_info, *inferred.graph.input]
                     if value.type.tensor_type.elem_type == TensorProto.FLOAT}
    producers = {output: node for node in network.graph.node for output in node.output}
    kept: list[str] = []
    pending = [node for node in network.graph.node if node.name in convolutions]
    while pending:
        node = pending.pop()
        if node.name in kept:
            continue
        kept.append(node.name)
        if node.op_type == "Conv" and node.name not in convolutions:
            continue
        pending.extend(producers[name] for name in node.input
                       if name in producers and name in float_tensors and producers[name].op_type != "Constant")
    return sorted(kept)


def convert_network_to_fp16(network: onnx.ModelProto, kept: KeptInFp32 | None = None) -> onnx.ModelProto:
    """``kept``: measured on this network if not given (the INT8 graph's rest passes the
    list measured on the network before quantization, whose node names it keeps)."""
    kept = kept or kept_in_fp32(network)
    with warnings.catch_warnings():
        # It warns once per weight smaller than FP16 can hold; those become +-1e-7, harmlessly.
        warnings.simplefilter("ignore", UserWarning)
        converted = float16.convert_float_to_float16(network, keep_io_types=True, max_finite_val=FP16_MAX,
                                                     op_block_list=KEPT_IN_FP32, node_block_list=list(kept.nodes))
    return _resize_parameters_in_float32(converted)


def _resize_parameters_in_float32(network: onnx.ModelProto) -> onnx.ModelProto:
    """The converter turned Resize's roi and scales to FP16 with the data. Constants (an
    initializer or a Constant node) get a float32 copy, so the runtimes see weights as
    before; anything computed is cast back."""
    graph = network.graph
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    values.update({node.output[0]: numpy_helper.to_array(helper.get_attribute_value(node.attribute[0]))
                   for node in graph.node if node.op_type == "Constant" and node.attribute
                   and node.attribute[0].name == "value"})
    nodes = []
    for node in graph.node:
        if node.op_type == "Resize":
            for index in RESIZE_FLOAT_INPUTS:
                if index >= len(node.input) or not node.input[index]:
                    continue
                restored = f"{node.input[index]}_float32_for_{node.name}"
                if node.input[index] in values:
                    graph.initializer.append(numpy_helper.from_array(
                        values[node.input[index]].astype(np.float32), restored))
                else:
                    nodes.append(helper.make_node("Cast", [node.input[index]], [restored], to=TensorProto.FLOAT,
                                                  name=restored))
                node.input[index] = restored
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return network
