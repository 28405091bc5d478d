"""INT8: frame sampling, the two Q/DQ flavours, determinism, the accuracy gate, and the
CLI from calibration to an INT8 matte (real U²-Net-p weights where they are needed)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from PIL import Image

from trt_matte.build_engine.matte_graph import build_matte_graph, matte_graph_path
from trt_matte.accuracy import GATE_IOU
from trt_matte.calibration.calibrate import calibrate
from trt_matte.calibration.store import REPORT_NAME, int8_network, model_folder
from trt_matte.calibration.quantize import prepare_network, with_static_resizes
from trt_matte.calibration.sampling import HOLD_BACK_EVERY, Item, candidate_items, sample_frames, spread_sample
from trt_matte.errors import MatteError
from trt_matte.media.frame_reader import FrameReader

from conftest import decode_gray, make_clip, mask_iou, mean_abs_error


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trt_matte", *args], capture_output=True, text=True)


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


# ---- sampling --------------------------------------------------------------------------

def test_spread_sample_draws_one_item_per_stretch_and_follows_the_seed():
    items = [Item(Path("clip.mp4"), number) for number in range(1000)]
    first = spread_sample(items, 10, seed=3)
    assert first == spread_sample(items, 10, seed=3)
    assert first != spread_sample(items, 10, seed=4)
    assert [item.frame // 100 for item in first] == list(range(10))  # one per tenth of the clip
    assert spread_sample(items[:7], 10, seed=3) == items[:7]


def test_sampled_frames_are_the_inference_decode_of_the_chosen_frames(ffmpeg_exe, tmp_path):
    # 140 frames wanted from one clip: more than ffmpeg takes in a flat select expression.
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", size="96x72", frames=170)
    sample = sample_frames([clip], 112, seed=5)
    chosen = spread_sample(candidate_items([clip]), 140, seed=5)
    every_frame = np.concatenate(list(FrameReader(clip).batches(8)))
    expected = every_frame[[item.frame for item in chosen]]
    held = [index for index in range(140) if index % HOLD_BACK_EVERY == HOLD_BACK_EVERY - 1]
    assert np.array_equal(sample.held_back, expected[held])
    assert np.array_equal(sample.calibration, np.delete(expected, held, axis=0))
    assert sample_frames([clip], 112, seed=5).digest() == sample.digest()
    assert sample_frames([clip], 112, seed=6).digest() != sample.digest()
    # The same clip named twice is sampled as once: no frame twice, none in both sets.
    assert sample_frames([clip, tmp_path / ".." / tmp_path.name / "clip.mp4"], 112, seed=5).digest() == sample.digest()


def test_sampling_mixes_videos_and_folders_and_skips_broken_images(ffmpeg_exe, tmp_path):
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", frames=20)
    photos = tmp_path / "photos"
    (photos / "nested").mkdir(parents=True)
    for index in range(3):
        Image.new("RGB", (90 + index, 60), (40 * index, 90, 200)).save(photos / "nested" / f"{index}.png")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    notices: list[str] = []
    sample = sample_frames([clip, photos], 100, seed=0, announce=notices.append)
    assert len(sample.calibration) + len(sample.held_back) == 20 + 3  # every readable picture
    assert len(sample.held_back) == (20 + 3) // HOLD_BACK_EVERY
    assert [line for line in notices if "broken.jpg" in line] == notices and len(notices) == 1


@pytest.mark.parametrize("make_inputs, message", [
    (lambda tmp: [tmp / "missing.mp4"], "input not found"),
    (lambda tmp: [tmp], "no images"),
    (lambda tmp: [], "at least one"),
])
def test_sampling_errors_are_one_clear_message(tmp_path, make_inputs, message):
    with pytest.raises(MatteError, match=message):
        sample_frames(make_inputs(tmp_path), 10, seed=0)


def test_too_few_pictures_is_an_error(ffmpeg_exe, tmp_path):
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", frames=3)
    with pytest.raises(MatteError, match="only 3 readable pictures"):
        sample_frames([clip], 10, seed=0)


# ---- graphs ----------------------------------------------------------------------------

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


@pytest.fixture(scope="module")
def tiny_calibration(tiny_conv_model, ffmpeg_exe, tmp_path_factory):
    work = tmp_path_factory.mktemp("tiny_calibration")
    clip = make_clip(ffmpeg_exe, work / "clip.mp4", size="96x72", frames=30)
    report = calibrate(tiny_conv_model, "tiny", [clip], work / "cache", frames=12, seed=1)
    return clip, report, Path(report.folder)


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
    same_size = upsizing.run(None, {"rgb": frames, "frame_shape": np.zeros((320, 320), np.uint8)})[0]
    frame_size = upsizing.run(None, {"rgb": frames, "frame_shape": np.zeros((72, 96), np.uint8)})[0]
    assert np.array_equal(masks, same_size) and frame_size.shape == (3, 72, 96)


def test_same_seed_same_bytes_other_seed_other_frames(tiny_conv_model, tiny_calibration, tmp_path):
    clip, report, folder = tiny_calibration
    again = calibrate(tiny_conv_model, "tiny", [clip], tmp_path / "other-cache", frames=12, seed=1)
    for flavour in ("cpu", "tensorrt"):
        assert (Path(again.folder) / f"network-{flavour}.onnx").read_bytes() == \
            (folder / f"network-{flavour}.onnx").read_bytes()
    other = calibrate(tiny_conv_model, "tiny", [clip], tmp_path / "other-cache", frames=12, seed=2)
    assert other.frames_sha256 != report.frames_sha256 and other.folder != again.folder


def test_report_is_stored_and_checks_against_fp32(tiny_calibration):
    _, report, folder = tiny_calibration
    stored = json.loads((folder / REPORT_NAME).read_text())
    assert stored["calibration_frames"] == 12 and stored["held_back_frames"] == 3 and stored["seed"] == 1
    for flavour in ("cpu", "tensorrt"):
        accuracy = report.accuracy[flavour]
        assert stored["accuracy"][flavour]["iou_mean"] == accuracy.iou_mean
        assert 0.9 <= accuracy.iou_min <= accuracy.iou_mean <= 1.0  # brightness masks survive 8 bits
        assert 0 <= accuracy.mean_abs_error < 4


def test_gate_refuses_an_inaccurate_calibration_unless_forced(tiny_conv_model, tiny_calibration):
    _, report, folder = tiny_calibration
    cache = Path(report.folder).parents[2]
    stored = json.loads((folder / REPORT_NAME).read_text())
    original = json.dumps(stored)
    stored["accuracy"]["cpu"]["iou_mean"] = GATE_IOU - 0.01
    (folder / REPORT_NAME).write_text(json.dumps(stored))
    try:
        with pytest.raises(MatteError, match="--force"):
            int8_network(tiny_conv_model, cache, "cpu")
        assert int8_network(tiny_conv_model, cache, "cpu", accept_below_gate=True) == folder / "network-cpu.onnx"
        assert int8_network(tiny_conv_model, cache, "tensorrt") == folder / "network-tensorrt.onnx"
    finally:
        (folder / REPORT_NAME).write_text(original)


def test_a_damaged_calibration_is_redone_not_reused(tiny_conv_model, tiny_calibration, tmp_path):
    clip, report, _ = tiny_calibration
    first = calibrate(tiny_conv_model, "tiny", [clip], tmp_path, frames=12, seed=1)
    (Path(first.folder) / REPORT_NAME).write_text("{not json")
    notes: list[str] = []
    again = calibrate(tiny_conv_model, "tiny", [clip], tmp_path, frames=12, seed=1, announce=notes.append)
    assert again.folder == first.folder and not any("reusing" in note for note in notes)
    assert int8_network(tiny_conv_model, tmp_path, "cpu") == Path(first.folder) / "network-cpu.onnx"
    with pytest.raises(MatteError, match="4 to 2000 frames"):
        calibrate(tiny_conv_model, "tiny", [clip], tmp_path, frames=2)


def test_int8_without_calibration_says_how_to_make_one(tiny_model, tmp_path):
    with pytest.raises(MatteError, match="trt-matte calibrate"):
        int8_network(tiny_model, tmp_path, "cpu", model_label="tiny")
    assert not model_folder(tiny_model, tmp_path).exists()


# ---- the command line ------------------------------------------------------------------

def test_cli_calibrate_errors_are_one_line(tmp_path, tiny_model, ffmpeg_exe):
    done = _cli("calibrate", str(tmp_path / "nope.mp4"), "--model", str(tiny_model))
    assert done.returncode == 1 and done.stderr.strip().count("\n") == 0
    assert "input not found" in done.stderr and "Traceback" not in done.stderr
    assert _cli("calibrate").returncode == 2  # argparse: inputs are required
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", frames=5)
    done = _cli("video", str(clip), "--precision", "int8", "--model", str(tiny_model), "-q")
    assert done.returncode == 1 and done.stderr.strip().count("\n") == 0
    assert "no INT8 calibration" in done.stderr and "trt-matte calibrate" in done.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["clip.mp4"]  # nothing half-written


@pytest.mark.slow
def test_int8_matte_of_a_held_out_clip_matches_fp32(u2netp_path, carphone_path, ffmpeg_exe, tmp_path):
    """Calibrate on the first half of carphone, matte the second half in INT8 and FP32 on
    the CPU through the real CLI, and compare the mattes read back with ffmpeg."""
    first, second = tmp_path / "first.mp4", tmp_path / "second.mp4"
    for target, window in ((first, "0:60"), (second, "60:120")):
        start, end = window.split(":")
        subprocess.run([ffmpeg_exe, "-v", "error", "-i", str(carphone_path), "-vf",
                        f"select='between(n,{start},{int(end) - 1})',setpts=N/25/TB", "-c:v", "libx264",
                        "-crf", "12", str(target)], check=True)
    model = ["--model", str(u2netp_path)]
    done = _cli("calibrate", str(first), "--frames", "24", "--quiet", *model)
    assert done.returncode == 0, done.stderr
    assert "ONNX Runtime (CPU) graph: IoU" in done.stdout and "TensorRT graph: IoU" in done.stdout
    for precision in ("int8", "fp32"):
        done = _cli(str(second), "--precision", precision, "--backend", "onnxruntime", "-q", *model,
                    "-o", str(tmp_path / f"{precision}.mp4"))
        assert done.returncode == 0, done.stderr
    int8, fp32 = (decode_gray(ffmpeg_exe, tmp_path / f"{precision}.mp4") for precision in ("int8", "fp32"))
    assert len(int8) == len(fp32) == 60
    ious = [mask_iou(a, b) for a, b in zip(int8, fp32)]
    assert np.mean(ious) >= 0.97, (np.mean(ious), min(ious))
    assert mean_abs_error(int8, fp32) <= 4.0
