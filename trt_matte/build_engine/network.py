"""The U²-Net network as trt-matte reads it from a rembg ONNX file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, version_converter

from ..errors import MatteError
from ..models import MODEL_SIZE
from ..onnxruntime_sessions import cpu_session, ort_errors

# Per-channel weight Q/DQ needs the axis attribute of opset 13, an empty Resize roi too.
MIN_OPSET = 13


def load_network(model_path: Path) -> onnx.ModelProto:
    """Load a rembg U²-Net ONNX file and check it has the interface the recipe needs."""
    try:
        model = onnx.load(str(model_path))
    except FileNotFoundError:
        raise MatteError(f"model file not found: {model_path}") from None
    except Exception as exc:  # onnx raises DecodeError, ValueError... on non-ONNX bytes
        raise MatteError(f"{model_path} is not an ONNX model ({type(exc).__name__})") from None
    graph = model.graph
    inputs = _data_inputs(model)
    if len(inputs) != 1 or len(graph.output) < 1:
        raise MatteError(f"{model_path}: expected one image input and at least one output, "
                         f"found {len(inputs)} inputs and {len(graph.output)} outputs")
    dims = [d.dim_value or d.dim_param for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3 or dims[2:] != [MODEL_SIZE, MODEL_SIZE]:
        raise MatteError(f"{model_path}: input {inputs[0].name} has shape {dims}, "
                         f"expected [N,3,{MODEL_SIZE},{MODEL_SIZE}] (a rembg U²-Net model)")
    head = graph.output[0]
    head_dims = [d.dim_value or d.dim_param for d in head.type.tensor_type.shape.dim]
    # Exporters may leave a dimension unnamed (0 here); only a known wrong size is refused.
    if len(head_dims) != 4 or any(isinstance(size, int) and size not in (0, wanted)
                                  for size, wanted in zip(head_dims[1:], (1, MODEL_SIZE, MODEL_SIZE))):
        raise MatteError(f"{model_path}: its first output {head.name} has shape {head_dims}; trt-matte needs "
                         f"[N,1,{MODEL_SIZE},{MODEL_SIZE}], one mask channel (a rembg U²-Net model)")
    name_every_node(model)
    return model


def default_opset(model: onnx.ModelProto) -> int:
    return next(op.version for op in model.opset_import if op.domain in ("", "ai.onnx"))


def _data_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not weights (old exporters list the initializers as inputs too)."""
    initializer_names = {init.name for init in model.graph.initializer}
    return [inp for inp in model.graph.input if inp.name not in initializer_names]


def network_input_name(network: onnx.ModelProto) -> str:
    return _data_inputs(network)[0].name


def mean_colour_input() -> np.ndarray:
    """The network's input for a picture of ImageNet's mean colour: all zeros, after the
    normalization. A probe for what does not depend on the picture (shapes, how much a
    layer suffers from rounding)."""
    return np.zeros((1, 3, MODEL_SIZE, MODEL_SIZE), np.float32)


def name_every_node(network: onnx.ModelProto) -> None:
    """The quantizer's exclusions and the FP16 converter's kept nodes go by node name: an
    exporter's empty or repeated names would exclude or collide with each other."""
    taken: set[str] = set()
    for index, node in enumerate(network.graph.node):
        if not node.name or node.name in taken:
            node.name = f"{node.op_type}_trt_matte_{index}"
        taken.add(node.name)


def prepare_network(model_path: Path) -> onnx.ModelProto:
    """The U²-Net network with only its first head (the one the matte uses), opset >= 13,
    its Resizes given constant scales: what the FP16 and INT8 graphs are made from."""
    network = load_network(model_path)
    input_name = network_input_name(network)
    network = onnx.utils.Extractor(network).extract_model([input_name], [network.graph.output[0].name])
    if default_opset(network) < MIN_OPSET:
        network = convert_opset(network, MIN_OPSET)
    try:
        return with_static_resizes(network)
    except ort_errors() as exc:
        raise MatteError(f"{model_path}: ONNX Runtime could not run the network ({exc})".splitlines()[0]) from None


def convert_opset(network: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """The network at ``opset``, with the IR version that opset needs (the converter keeps the old one)."""
    try:
        converted = version_converter.convert_version(network, opset)
    except Exception as exc:  # the converter raises bare RuntimeErrors and ValidationErrors
        raise MatteError(f"cannot convert the network from opset {default_opset(network)} to {opset} "
                         f"({exc})".splitlines()[0]) from None
    converted.ir_version = max(converted.ir_version, helper.find_min_ir_version_for(list(converted.opset_import)))
    return converted


def with_static_resizes(network: onnx.ModelProto) -> onnx.ModelProto:
    """Give every Resize constant scales in place of sizes computed from Shape ops at run time.

    The network always sees 320x320, so each upsampling factor is fixed; the scales keep
    the batch dimension free, and the results are bit-identical. ONNX Runtime then runs
    the Resizes on uint8 instead of dequantizing around each (and drops the layout
    transposes those forced): ~10% faster INT8 on the CPU, and ~400 shape ops fewer.
    """
    resizes = [node for node in network.graph.node if node.op_type == "Resize"]
    if not resizes:
        return network
    exposed = onnx.ModelProto()
    exposed.CopyFrom(network)
    tensors = sorted({name for node in resizes for name in (node.input[0], node.output[0])})
    exposed.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in tensors)
    shapes = {name: value.shape for name, value in
              zip(tensors, cpu_session(exposed).run(tensors, {network_input_name(network): mean_colour_input()}))}
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(network)
    resizes = [node for node in rewritten.graph.node if node.op_type == "Resize"]
    for index, node in enumerate(resizes):
        source, target = shapes[node.input[0]], shapes[node.output[0]]
        scales = np.array([1.0, 1.0, target[2] / source[2], target[3] / source[3]], np.float32)
        name = f"trt_matte_static_scales_{index}"  # node names may be empty or repeated
        rewritten.graph.initializer.append(numpy_helper.from_array(scales, name))
        del node.input[1:]
        node.input.extend(["", name])  # no roi, scales, no sizes
    # The Shape/Gather/Concat chains that computed the sizes are now dead: drop them.
    return onnx.utils.Extractor(rewritten).extract_model([network_input_name(network)],
                                                         [output.name for output in network.graph.output])
