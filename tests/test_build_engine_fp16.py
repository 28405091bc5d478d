"""The FP16 network TensorRT 11 builds from (FP16 ONNX types, no builder flag): its
masks against FP32 on real frames, run by ONNX Runtime on the CPU. ONNX Runtime rounds
to FP16 at tensor boundaries only, so this is a proxy for TensorRT's FP16, not a
measurement of it."""
from __future__ import annotations

import subprocess

import numpy as np
import onnx
from onnx import TensorProto
from PIL import Image

from conftest import decode_rgb, mask_iou, mean_abs_error
from trt_matte.accuracy import compare_masks
from trt_matte.build_engine.fp16 import SENSITIVE_SQNR_DB, kept_in_fp32
from trt_matte.build_engine.matte_graph import matte_graph_path
from trt_matte.build_engine.network import prepare_network

# Two given colours and corners: ffmpeg's gradients source otherwise draws new ones each run.
GRADIENT = "c0=0xff0000:c1=0x0000ff:x0=20:y0=30:x1=300:y1=200:nb_colors=2:speed=0.05"


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
    kept = kept_in_fp32(prepare_network(u2netp_path)).nodes
    resizes = [node for node in graph.graph.node
               if node.op_type == "Resize" and not node.name.startswith("upsize") and node.name not in kept]
    assert resizes
    for node in resizes:
        assert types[node.input[0]] == TensorProto.FLOAT16, node.name
        assert all(types[name] == TensorProto.FLOAT for name in node.input[1:3] if name), node.name


def _fp16_and_fp32_masks(model_path, cache_home, pictures):
    from trt_matte.engine.onnxruntime_backend import OnnxRuntimeBackend
    backends = [OnnxRuntimeBackend(matte_graph_path(model_path, cache_home, precision), device="cpu")
                for precision in ("fp16", "fp32")]
    return [np.concatenate([backend.run(picture[None]) for picture in pictures]) for backend in backends]


def test_the_convolution_fp16_ruins_stays_fp32_with_its_input_path(u2netp_path, cache_home):
    """u2netp has one convolution whose FP16 output SQNR (21 dB) stands far below every
    other (56 dB and up): it stays FP32 with the nodes computing its input, a few percent
    of the work."""
    network = prepare_network(u2netp_path)
    kept = kept_in_fp32(network)
    assert len(kept.sensitive) == 1 and all(sqnr < SENSITIVE_SQNR_DB for sqnr in kept.sensitive.values())
    nodes = {node.name: node for node in network.graph.node}
    producers = {output: node.name for node in network.graph.node for output in node.output}
    (sensitive,) = kept.sensitive
    concat = producers[nodes[sensitive].input[0]]
    assert nodes[concat].op_type == "Concat" and concat in kept.nodes
    assert sum(nodes[name].op_type == "Conv" for name in kept.nodes) == 3
    assert 0.0 < kept.multiply_add_share < 0.05
    graph = onnx.load(str(matte_graph_path(u2netp_path, cache_home, "fp16")))
    weights = {init.name: init.data_type for init in graph.graph.initializer}
    convolutions = {node.name: weights.get(node.input[1]) for node in graph.graph.node if node.op_type == "Conv"}
    assert {name for name, kind in convolutions.items() if kind == TensorProto.FLOAT} == \
        {name for name in kept.nodes if nodes[name].op_type == "Conv"}


def test_fp16_graph_holds_on_frames_without_a_subject(u2netp_path, cache_home, ffmpeg_exe):
    """A red-to-blue gradient, no person: the network is unsure (top probability
    0.00-0.02), and the per-frame stretch amplifies FP16 rounding. With every layer in FP16
    these frames measured IoU 0.63 (worst frame 0.46, MAE 2.01/255) against FP32; with
    the sensitive convolution's path in FP32, 0.99 (worst 0.98, MAE 0.06). (The colours
    and corners are given: ffmpeg's gradients source draws new ones on every run.)"""
    raw = subprocess.run([ffmpeg_exe, "-v", "error", "-f", "lavfi", "-i", f"gradients=s=320x320:r=5:{GRADIENT}",
                          "-frames:v", "8", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    pictures = np.frombuffer(raw, np.uint8).reshape(-1, 320, 320, 3)
    half, full = _fp16_and_fp32_masks(u2netp_path, cache_home, pictures)
    accuracy = compare_masks(full, half)
    assert not accuracy.sparse and accuracy.iou >= 0.97 and accuracy.mean_abs_error <= 1.0, accuracy
