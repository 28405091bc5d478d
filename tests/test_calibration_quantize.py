"""The two Q/DQ flavours ONNX Runtime's quantizer writes (CPU: uint8 activations;
TensorRT: symmetric int8, float biases, Q/DQ on convolution inputs, FP16 rest), and
the static Resize scales the network gets first."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from conftest import make_clip
from trt_matte.build_engine.matte_graph import build_matte_graph, frame_shape_input, matte_graph_path
from trt_matte.build_engine.network import prepare_network, with_static_resizes
from trt_matte.media.frame_reader import FrameReader


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def test_static_resizes_give_identical_masks_without_shape_ops(tiny_conv_model, ffmpeg_exe, tmp_path):
    network = onnx.load(str(tiny_conv_model))
    static = prepare_network(tiny_conv_model)
    assert "Shape" not in {node.op_type for node in static.graph.node}
    frames = np.concatenate(list(FrameReader(make_clip(ffmpeg_exe, tmp_path / "c.mp4", frames=4)).batches(4)))
    dynamic_batch = onnx.utils.Extractor(network).extract_model(["input.1"], ["d0"])
    masks = [ort.InferenceSession(build_matte_graph(model).SerializeToString(),
                                  providers=["CPUExecutionProvider"]).run(None, {"rgb": frames})[0]
             for model in (dynamic_batch, with_static_resizes(static))]
    assert np.array_equal(masks[0], masks[1])  # batch 4 through a graph probed at batch 1


def test_flavours_have_the_quantization_each_runtime_takes(tiny_calibration):
    _, report, folder = tiny_calibration
    assert report.not_quantized["cpu"] == {}
    assert list(report.not_quantized["tensorrt"].values()) == ["mask head, 1 output channel"]
    for flavour, activation_type in (("cpu", np.uint8), ("tensorrt", np.int8)):
        model = onnx.load(str(folder / f"network-{flavour}.onnx"))
        values = _initializers(model)
        quantizers = [node for node in model.graph.node if node.op_type == "QuantizeLinear"]
        assert quantizers, flavour
        assert {values[node.input[2]].dtype for node in quantizers} == {np.dtype(activation_type)}
        convolutions = [node for node in model.graph.node if node.op_type == "Conv"]
        assert len(convolutions) == 2
        convolutions = [node for node in convolutions if node.name not in report.not_quantized[flavour]]
        assert len(convolutions) == {"cpu": 2, "tensorrt": 1}[flavour]
        weights_dq = [next(node for node in model.graph.node if node.output[0] == conv.input[1])
                      for conv in convolutions]
        for dequantize in weights_dq:  # int8 weights, one scale per output channel
            assert values[dequantize.input[0]].dtype == np.int8
            assert values[dequantize.input[1]].shape == (values[dequantize.input[0]].shape[0],)
        if flavour == "tensorrt":
            assert all(not values[node.input[2]].any() for node in quantizers)  # symmetric: zero points 0
            # The rest in FP16: FP16 Q/DQ scales (opset 19), and each convolution fed straight by DQs.
            assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 19
            assert {values[node.input[1]].dtype for node in model.graph.node
                    if node.op_type in ("QuantizeLinear", "DequantizeLinear")} == {np.dtype(np.float16)}
            producers = {output: node for node in model.graph.node for output in node.output}
            assert all(producers[name].op_type == "DequantizeLinear" for conv in convolutions for name in conv.input[:2])
            # TensorRT dequantizes only 8-bit tensors: biases stay float.
            assert all(values[node.input[0]].dtype == np.int8 for node in model.graph.node
                       if node.op_type == "DequantizeLinear" and node.input[0] in values)
            # Q/DQ only on convolution inputs (a tensor a convolution shares with others included).
            activation_dq = [node for node in model.graph.node
                             if node.op_type == "DequantizeLinear" and node.input[0] not in values]
            assert activation_dq and all(
                "Conv" in {consumer.op_type for consumer in model.graph.node if dq.output[0] in consumer.input}
                for dq in activation_dq)


@pytest.mark.parametrize("flavour", ["cpu", "tensorrt"])
def test_int8_matte_graphs_run_with_and_without_upsizing(tiny_calibration, tmp_path, flavour):
    """The GPU backends wrap the Q/DQ networks in the upsizing graph (opset 19 for TensorRT)."""
    clip, _, folder = tiny_calibration
    frames = np.concatenate(list(FrameReader(clip).batches(4)))[:3]
    network = folder / f"network-{flavour}.onnx"
    plain = ort.InferenceSession(str(matte_graph_path(network, tmp_path, "int8")), providers=["CPUExecutionProvider"])
    upsizing = ort.InferenceSession(str(matte_graph_path(network, tmp_path, "int8", upsize=True)),
                                    providers=["CPUExecutionProvider"])
    masks = plain.run(None, {"rgb": frames})[0]
    same_size = upsizing.run(None, {"rgb": frames, "frame_shape": frame_shape_input(320, 320)})[0]
    frame_size = upsizing.run(None, {"rgb": frames, "frame_shape": frame_shape_input(72, 96)})[0]
    assert np.array_equal(masks, same_size) and frame_size.shape == (3, 72, 96)
