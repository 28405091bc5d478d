"""The FP16 network for TensorRT 11, whose strongly typed networks take their
precision from the ONNX types (there is no FP16 builder flag any more).

Only the U²-Net network is converted; the matte graph's pre- and post-processing
are wrapped around it afterwards and stay FP32, where precision matters: the
division by the image maximum and the per-image min-max, which amplifies any error
when the range is small. onnxconverter-common does the conversion: it is pure Python
and light, where NVIDIA ModelOpt's AutoCast pulls in torch. It keeps Resize (and
other range-sensitive ops) in FP32 behind Cast nodes, and ``keep_io_types`` keeps the
network's input and output FP32 so the wrapping graph sees the same types.
"""
from __future__ import annotations

import warnings

import onnx
from onnxconverter_common import float16

# FP16's largest finite value; the converter's default (1e4) would clip weights needlessly.
FP16_MAX = 65504.0


def convert_network_to_fp16(network: onnx.ModelProto) -> onnx.ModelProto:
    with warnings.catch_warnings():
        # It warns once per weight smaller than FP16 can hold; those become +-1e-7, harmlessly.
        warnings.simplefilter("ignore", UserWarning)
        return float16.convert_float_to_float16(network, keep_io_types=True, max_finite_val=FP16_MAX)
