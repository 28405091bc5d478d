"""How much a reduced precision costs each convolution of a network, measured alone.

Each convolution is run by itself on its real input (taken from the whole FP32 network
on a few inputs), once exactly and once with its input and weights (and, where the
precision rounds it, its output) rounded; the worst signal-to-noise ratio of the output
over the inputs says how much that convolution suffers. The FP16 conversion
(``build_engine.fp16``) and the INT8 calibration (``calibration.quantize``) both keep the
convolutions measured below their bound out of the reduced precision.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime import InferenceSession

from ..onnxruntime_sessions import cpu_session
from .network import default_opset, network_input_name

# Convolutions measured per network pass, bounding the memory the exposed inputs take.
CHUNK = 32

Round = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Rounding:
    """A precision's rounding of a convolution's input, its weights and its output."""
    activation: Round
    weights: Round
    output: Round | None = None


@dataclass(frozen=True)
class Measured:
    sqnr_db: float  # the worst over the inputs
    multiply_adds: int  # per input picture


def sqnr_db(reference: np.ndarray, approximation: np.ndarray) -> float:
    noise = float(np.mean((reference.astype(np.float64) - approximation) ** 2))
    signal = float(np.mean(reference.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else 10.0 * np.log10(max(signal, 1e-30) / noise)


def _single_conv(node: onnx.NodeProto, opset: int) -> InferenceSession:
    inputs = ["x", "w", "b"][:len(node.input)]
    conv = helper.make_node("Conv", inputs, ["y"], **{a.name: helper.get_attribute_value(a) for a in node.attribute})
    graph = helper.make_graph([conv], "conv", [helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                                               for name in inputs],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return cpu_session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def measure_convolutions(network: onnx.ModelProto, inputs: Iterable[np.ndarray],
                         rounding: Rounding) -> dict[str, Measured]:
    """Every convolution with constant weights, by node name, measured on ``inputs``
    (network inputs [1,3,H,W]; iterated once per chunk of convolutions)."""
    weights = {init.name: numpy_helper.to_array(init) for init in network.graph.initializer}
    convolutions = [node for node in network.graph.node
                    if node.op_type == "Conv" and len(node.input) >= 2 and node.input[1] in weights]
    opset = default_opset(network)
    measured: dict[str, Measured] = {}
    for chunk in _chunks(convolutions, CHUNK):
        exposed = onnx.ModelProto()
        exposed.CopyFrom(network)
        exposed.graph.output.extend(helper.make_tensor_value_info(node.input[0], TensorProto.FLOAT, None)
                                    for node in chunk)
        session = cpu_session(exposed)
        names = [node.input[0] for node in chunk]
        alone = {node.name: _single_conv(node, opset) for node in chunk}
        for network_input in inputs:
            activations = dict(zip(names, session.run(names, {network_input_name(network): network_input})))
            for node in chunk:
                feeds = {"x": activations[node.input[0]], "w": weights[node.input[1]]}
                if len(node.input) > 2:
                    feeds["b"] = weights[node.input[2]]
                conv = alone[node.name]
                exact = conv.run(None, feeds)[0]
                feeds.update(x=rounding.activation(feeds["x"]), w=rounding.weights(feeds["w"]))
                approximation = conv.run(None, feeds)[0]
                sqnr = sqnr_db(exact, rounding.output(approximation) if rounding.output else approximation)
                earlier = measured.get(node.name, Measured(float("inf"), 0))
                multiply_adds = exact.size * int(np.prod(feeds["w"].shape[1:]))
                measured[node.name] = Measured(min(sqnr, earlier.sqnr_db), multiply_adds)
    return measured
