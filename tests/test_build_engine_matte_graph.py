"""The matte graph: rembg's recipe, per image, with a dynamic batch, cached by model hash."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from PIL import Image

from conftest import decode_rgb, mask_iou, mean_abs_error
from trt_matte.build_engine.matte_graph import INPUT_NAME, OUTPUT_NAME, build_matte_graph, matte_graph_path
from trt_matte.build_engine.network import load_network
from trt_matte.errors import MatteError


def rembg_recipe(session: ort.InferenceSession, picture: np.ndarray) -> np.ndarray:
    """rembg's U²-Net pre/post-processing in numpy on the raw network, at 320x320."""
    small = np.asarray(Image.fromarray(picture).resize((320, 320), Image.Resampling.LANCZOS))
    unit = small / max(np.max(small), 1e-6)
    normalized = (unit - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)
    head = session.run(None, {session.get_inputs()[0].name:
                              normalized.transpose(2, 0, 1)[None].astype(np.float32)})[0][0, 0]
    return ((head - head.min()) / (head.max() - head.min()) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def carphone_frames(ffmpeg_exe, carphone_path) -> np.ndarray:
    return decode_rgb(ffmpeg_exe, carphone_path)[::40]


def test_graph_matches_rembg_recipe_on_real_frames(u2netp_path, cpu_backend, carphone_frames):
    network = ort.InferenceSession(str(u2netp_path), providers=["CPUExecutionProvider"])
    inputs = np.stack([np.asarray(Image.fromarray(frame).resize((320, 320), Image.Resampling.LANCZOS))
                       for frame in carphone_frames])
    masks = cpu_backend.run(inputs)
    for frame, mask in zip(carphone_frames, masks):
        reference = rembg_recipe(network, frame)
        assert mask_iou(mask, reference) >= 0.995
        # rembg truncates to uint8 where the graph rounds: at most one level apart.
        difference = mask.astype(int) - reference
        assert difference.min() >= 0 and difference.max() <= 1


def test_min_max_is_per_image_not_per_batch(cpu_backend, carphone_frames):
    picture = np.asarray(Image.fromarray(carphone_frames[0]).resize((320, 320), Image.Resampling.LANCZOS))
    alone = cpu_backend.run(picture[None])[0]
    black = np.zeros_like(picture)
    batch = cpu_backend.run(np.stack([black, picture, picture // 4]))
    assert np.array_equal(batch[1], alone)
    assert not np.isnan(batch.astype(float)).any()
    # Dividing by each image's own maximum makes a darkened copy look almost the same.
    assert mask_iou(batch[2], alone) >= 0.95


def test_constant_picture_gives_a_defined_mask(tiny_backend):
    masks = tiny_backend.run(np.full((2, 320, 320, 3), 77, np.uint8))
    assert masks.dtype == np.uint8 and masks.shape == (2, 320, 320)
    assert np.array_equal(masks, np.zeros_like(masks))  # zero guard: no NaN cast to garbage


def test_graph_has_dynamic_batch_and_uint8_io(tiny_model):
    graph = build_matte_graph(load_network(tiny_model))
    (graph_input,), (graph_output,) = graph.graph.input, graph.graph.output
    assert graph_input.name == INPUT_NAME and graph_output.name == OUTPUT_NAME
    assert graph_input.type.tensor_type.elem_type == TensorProto.UINT8
    assert graph_output.type.tensor_type.elem_type == TensorProto.UINT8
    assert graph_input.type.tensor_type.shape.dim[0].dim_param
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (1, 3, 5):
        pictures = np.random.default_rng(batch).integers(0, 256, (batch, 320, 320, 3), dtype=np.uint8)
        assert session.run(None, {INPUT_NAME: pictures})[0].shape == (batch, 320, 320)


def test_side_heads_are_pruned(u2netp_path):
    graph = build_matte_graph(load_network(u2netp_path))
    assert [output.name for output in graph.graph.output] == [OUTPUT_NAME]
    assert len(graph.graph.node) < len(onnx.load(str(u2netp_path)).graph.node) + 20


def test_graph_is_cached_by_model_content(tiny_model, tmp_path):
    first = matte_graph_path(tiny_model, tmp_path)
    stamp = first.stat().st_mtime_ns
    assert matte_graph_path(tiny_model, tmp_path) == first
    assert first.stat().st_mtime_ns == stamp
    changed = tmp_path / "changed.onnx"
    model = onnx.load(str(tiny_model))
    model.graph.name = "another"
    onnx.save(model, str(changed))
    assert matte_graph_path(changed, tmp_path) != first


def test_not_an_onnx_file(tmp_path):
    bogus = tmp_path / "bogus.onnx"
    bogus.write_text("this is not a model\n")
    with pytest.raises(MatteError, match="bogus.onnx"):
        matte_graph_path(bogus, tmp_path / "cache")


def test_wrong_input_shape(tmp_path):
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "wrong",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 224, 224])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 224, 224])])
    path = tmp_path / "wrong.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), str(path))
    with pytest.raises(MatteError, match=r"expected \[N,3,320,320\]"):
        matte_graph_path(path, tmp_path / "cache")


def test_upsized_graph_returns_masks_at_the_frame_size(u2netp_path, cache_home, carphone_frames, cpu_backend):
    from trt_matte.build_engine.matte_graph import FRAME_SHAPE_NAME, frame_shape_input
    session = ort.InferenceSession(str(matte_graph_path(u2netp_path, cache_home, upsize=True)),
                                   providers=["CPUExecutionProvider"])
    pictures = np.stack([np.asarray(Image.fromarray(frame).resize((320, 320), Image.Resampling.LANCZOS))
                         for frame in carphone_frames[:2]])
    upsized = session.run(None, {INPUT_NAME: pictures, FRAME_SHAPE_NAME: frame_shape_input(144, 176)})[0]
    assert upsized.shape == (2, 144, 176) and upsized.dtype == np.uint8
    for small, large in zip(cpu_backend.run(pictures), upsized):
        reference = np.asarray(Image.fromarray(small).resize((176, 144), Image.Resampling.BICUBIC))
        assert mean_abs_error(large, reference) <= 1.0
        assert mask_iou(large, reference) >= 0.99


def _model_inputs(frames: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(frame).resize((320, 320), Image.Resampling.LANCZOS))
                     for frame in frames])


def _noise_frames(ffmpeg_exe, folder) -> np.ndarray:
    """Grey noise with no subject: U²-Net's top probability stays near 0.01 here."""
    import subprocess
    clip = folder / "noise.mp4"
    subprocess.run([ffmpeg_exe, "-v", "error", "-f", "lavfi", "-i", "color=c=0x606060:s=320x240:r=25,noise=alls=30:allf=t",
                    "-frames:v", "6", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip)], check=True)
    return decode_rgb(ffmpeg_exe, clip)


def test_a_stretch_floor_keeps_frames_with_a_subject_and_empties_frames_without(
        u2netp_path, cache_home, cpu_backend, carphone_frames, ffmpeg_exe, tmp_path):
    from trt_matte.engine.onnxruntime_backend import OnnxRuntimeBackend
    floored = OnnxRuntimeBackend(matte_graph_path(u2netp_path, cache_home, stretch_floor=0.5), device="cpu")
    person = _model_inputs(carphone_frames)
    np.testing.assert_array_equal(floored.run(person), cpu_backend.run(person))
    noise = _model_inputs(_noise_frames(ffmpeg_exe, tmp_path))
    stretched, kept_dark = cpu_backend.run(noise), floored.run(noise)
    assert stretched.max() == 255 and kept_dark.max() <= 16
    assert kept_dark.mean() < 0.5 < stretched.mean()


def test_the_stretch_floor_is_a_graph_variant_from_0_to_1(tiny_model, tmp_path):
    plain = matte_graph_path(tiny_model, tmp_path)
    floored = matte_graph_path(tiny_model, tmp_path, stretch_floor=0.5)
    assert floored != plain and "-floor0.5-" in floored.name
    assert matte_graph_path(tiny_model, tmp_path, stretch_floor=0.0) == plain
    with pytest.raises(MatteError, match="from 0 to 1"):
        matte_graph_path(tiny_model, tmp_path, stretch_floor=1.5)
