"""The FP16 network TensorRT 11 builds from (FP16 ONNX types, no builder flag): its
masks against FP32 on real frames, run by ONNX Runtime on the CPU. ONNX Runtime rounds
to FP16 at tensor boundaries only, so this is a proxy for TensorRT's FP16, not a
measurement of it."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto
from PIL import Image

from conftest import decode_rgb, mask_iou, mean_abs_error
from trt_matte.build_engine.matte_graph import matte_graph_path


def test_fp16_graph_matches_fp32_on_real_frames(u2netp_path, cache_home, ffmpeg_exe, carphone_path):
    """TensorRT 11 builds FP16 from FP16 ONNX types; the conversion must not cost the matte."""
    from trt_matte.engine.onnxruntime_backend import OnnxRuntimeBackend
    frames = decode_rgb(ffmpeg_exe, carphone_path)[::15]
    pictures = np.stack([np.asarray(Image.fromarray(frame).resize((320, 320), Image.Resampling.LANCZOS))
                         for frame in frames])
    fp16 = OnnxRuntimeBackend(matte_graph_path(u2netp_path, cache_home, "fp16"), device="cpu")
    fp32 = OnnxRuntimeBackend(matte_graph_path(u2netp_path, cache_home, "fp32"), device="cpu")
    # Two frames a call, as the CPU backend batches: eight at once cost ~4 GB of RSS.
    half, full = (np.concatenate([backend.run(pictures[start:start + 2]) for start in range(0, len(pictures), 2)])
                  for backend in (fp16, fp32))
    errors = [mean_abs_error(a, b) for a, b in zip(half, full)]
    # Measured on ONNX Runtime's CPU FP16 kernels: MAE 0.81 mean, IoU 0.987 mean.
    assert np.mean(errors) <= 1.0
    assert np.mean([mask_iou(a, b) for a, b in zip(half, full)]) >= 0.97
    graph = onnx.load(str(matte_graph_path(u2netp_path, cache_home, "fp16")))
    types = {init.data_type for init in graph.graph.initializer if init.name.startswith("pre_")}
    assert types == {TensorProto.FLOAT}  # pre-processing stays FP32
    assert any(init.data_type == TensorProto.FLOAT16 for init in graph.graph.initializer)


def test_resize_runs_in_fp16_with_its_roi_and_scales_in_float32(u2netp_path, cache_home):
    """Upsampling cannot leave FP16's range, so Resize is not kept in FP32 behind casts;
    its roi and scales stay float32, as the ONNX spec requires."""
    graph = onnx.load(str(matte_graph_path(u2netp_path, cache_home, "fp16")))
    onnx.checker.check_model(graph)
    types = {value.name: value.type.tensor_type.elem_type
             for value in [*graph.graph.value_info, *graph.graph.input, *graph.graph.output]}
    types.update({init.name: init.data_type for init in graph.graph.initializer})
    inferred = onnx.shape_inference.infer_shapes(graph)
    types.update({value.name: value.type.tensor_type.elem_type for value in inferred.graph.value_info})
    resizes = [node for node in graph.graph.node if node.op_type == "Resize" and not node.name.startswith("upsize")]
    assert resizes
    for node in resizes:
        assert types[node.input[0]] == TensorProto.FLOAT16, node.name
        assert all(types[name] == TensorProto.FLOAT for name in node.input[1:3] if name), node.name
