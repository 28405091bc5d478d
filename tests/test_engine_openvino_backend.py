"""OpenVINO on the CPU: the same masks as ONNX Runtime at FP32 (precision set, never the
plugin's bf16 default), INT8 from a calibration behind the same gate, a compile cache
that survives damage, and how it is chosen and refused."""
from __future__ import annotations

import gc
import json
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import decode_rgb, mean_abs_error
from trt_matte import api
from trt_matte.accuracy import GATE_IOU, compare_masks, mask_iou
from trt_matte.build_engine.matte_graph import matte_graph_path
from trt_matte.calibration.store import REPORT_NAME, network_for
from trt_matte.engine.onnxruntime_backend import OnnxRuntimeBackend
from trt_matte.errors import MatteError

pytest.importorskip("openvino", reason="OpenVINO has no wheel for this platform")
from trt_matte.engine.openvino_backend import OPENVINO_BATCH, OpenVinoBackend  # noqa: E402


def _model_frames(frames: np.ndarray) -> np.ndarray:
    from PIL import Image
    from trt_matte.media.pictures import model_input
    return np.stack([model_input(Image.fromarray(frame)) for frame in frames])


def _masks(backend, frames: np.ndarray) -> np.ndarray:
    return np.concatenate([backend.run(frame[None]) for frame in frames])


@pytest.fixture(scope="module")
def carphone_inputs(ffmpeg_exe, carphone_path) -> np.ndarray:
    return _model_frames(decode_rgb(ffmpeg_exe, carphone_path)[::8])


def test_fp32_masks_equal_onnx_runtime_on_real_frames(u2netp_path, carphone_inputs, cache_home):
    graph = matte_graph_path(u2netp_path, cache_home)
    with OpenVinoBackend(graph, cache_home / "openvino", threads=2) as openvino:
        masks = _masks(openvino, carphone_inputs)
    reference = _masks(OnnxRuntimeBackend(graph, device="cpu", threads=2), carphone_inputs)
    assert mean_abs_error(masks, reference) <= 0.5
    assert mask_iou(masks, reference) >= 0.999


def test_the_stand_in_model_gives_onnx_runtimes_masks_batched_or_not(tiny_model, synthetic_frames, cache_home):
    graph = matte_graph_path(tiny_model, cache_home)
    inputs = _model_frames(synthetic_frames)
    openvino = OpenVinoBackend(graph, cache_home / "openvino", threads=1)
    assert (openvino.name, openvino.device, openvino.preferred_batch) == ("openvino", "cpu", OPENVINO_BATCH)
    masks = openvino.run(inputs)
    assert masks.shape == (len(inputs), 320, 320) and masks.dtype == np.uint8
    np.testing.assert_array_equal(_masks(openvino, inputs), masks)
    assert mean_abs_error(masks, OnnxRuntimeBackend(graph, device="cpu").run(inputs)) <= 0.5


def test_masks_returned_stay_valid_after_the_next_request(tiny_model, synthetic_frames, cache_home):
    openvino = OpenVinoBackend(matte_graph_path(tiny_model, cache_home), cache_home / "openvino", threads=1)
    inputs = _model_frames(synthetic_frames[:2])
    first = openvino.run(inputs[:1])
    kept = first.copy()
    openvino.run(inputs[1:])  # the writer thread may still hold ``first`` while this runs
    np.testing.assert_array_equal(first, kept)


def test_precision_is_f32_never_the_plugins_default(tiny_model, cache_home):
    import openvino
    import openvino.properties.hint as hints
    from trt_matte.engine.openvino_backend import openvino_config
    config = openvino_config(cache_home / "openvino", threads=1)
    compiled = openvino.Core().compile_model(str(matte_graph_path(tiny_model, cache_home)), "CPU", config)
    assert compiled.get_property(hints.inference_precision) == openvino.Type.f32


def test_a_second_open_reuses_the_compile_cache_and_damage_is_rebuilt(tiny_model, synthetic_frames, tmp_path):
    graph = matte_graph_path(tiny_model, tmp_path / "graphs")
    inputs = _model_frames(synthetic_frames[:2])
    cache = tmp_path / "openvino"
    expected = OpenVinoBackend(graph, cache, threads=1).run(inputs)
    blobs = sorted(cache.glob("*.blob"))
    assert blobs, "nothing was cached"
    for blob in blobs:
        blob.chmod(0o600)
        blob.write_bytes(b"damaged")
    np.testing.assert_array_equal(OpenVinoBackend(graph, cache, threads=1).run(inputs), expected)
    assert all(blob.stat().st_size > len(b"damaged") for blob in blobs), "the damaged blob was not rewritten"


def test_a_graph_openvino_cannot_load_is_one_line(tmp_path):
    graph = tmp_path / "matte.onnx"
    graph.write_bytes(b"\x08\x07garbage")
    with pytest.raises(MatteError, match="OpenVINO could not load matte.onnx") as failure:
        OpenVinoBackend(graph, tmp_path / "openvino")
    assert "\n" not in str(failure.value)


def test_int8_runs_the_calibrated_graph_within_the_gate(tiny_conv_model, tiny_calibration, ffmpeg_exe):
    clip, report, folder = tiny_calibration
    cache = folder.parents[2]
    inputs = _model_frames(decode_rgb(ffmpeg_exe, clip)[::3])
    int8_graph = matte_graph_path(network_for(tiny_conv_model, cache, "int8", api.OPENVINO_FLAVOUR,
                                              accept_below_gate=True), cache, "int8")
    masks = OpenVinoBackend(int8_graph, cache / "openvino", threads=1).run(inputs)
    reference = OnnxRuntimeBackend(matte_graph_path(tiny_conv_model, cache), device="cpu").run(inputs)
    assert compare_masks(reference, masks).iou >= GATE_IOU


def test_int8_below_the_gate_is_refused_on_openvino_too(tiny_conv_model, tiny_calibration):
    _, report, folder = tiny_calibration
    cache = folder.parents[2]
    stored = json.loads((folder / REPORT_NAME).read_text())
    original = json.dumps(stored)
    stored["accuracy"][api.OPENVINO_FLAVOUR]["iou"] = GATE_IOU - 0.01
    (folder / REPORT_NAME).write_text(json.dumps(stored))
    try:
        with pytest.raises(MatteError, match="--force"):
            api.open_backend(api.BackendRequest(tiny_conv_model, cache, backend="openvino", precision="int8"))
        forced = api.open_backend(api.BackendRequest(tiny_conv_model, cache, backend="openvino", precision="int8",
                                                     accept_below_gate=True))
        assert (forced.name, forced.precision) == ("openvino", "int8")
    finally:
        (folder / REPORT_NAME).write_text(original)


def test_auto_on_the_cpu_prefers_openvino(tiny_model, cache_home):
    backend = api.open_backend(api.BackendRequest(tiny_model, cache_home, device="cpu"))
    assert (backend.name, backend.precision) == ("openvino", "fp32")
    assert backend.describe("tiny").startswith("backend openvino on cpu (")
    assert api.open_backend(api.BackendRequest(tiny_model, cache_home, backend="onnxruntime")).name == "onnxruntime"


def test_explicit_openvino_without_it_names_the_install(tiny_model, cache_home, monkeypatch):
    monkeypatch.setattr(api, "openvino_available", lambda: False)
    with pytest.raises(MatteError, match=r"needs OpenVINO: pip install openvino"):
        api.open_backend(api.BackendRequest(tiny_model, cache_home, backend="openvino"))
    # auto falls back to ONNX Runtime without a word
    assert api.open_backend(api.BackendRequest(tiny_model, cache_home, device="cpu")).name == "onnxruntime"


@pytest.mark.parametrize("device, precision, message", [
    ("cuda", "auto", "runs on the CPU"), ("cpu", "fp16", "fp32 or int8")])
def test_what_openvino_does_not_run_is_one_line(tiny_model, cache_home, device, precision, message):
    with pytest.raises(MatteError, match=message):
        api.open_backend(api.BackendRequest(tiny_model, cache_home, backend="openvino", device=device,
                                            precision=precision))


def test_images_and_the_api_run_on_openvino(tiny_model, synthetic_frames, tmp_path, isolated_cache):
    from PIL import Image
    photos = tmp_path / "photos"
    photos.mkdir()
    for index, frame in enumerate(synthetic_frames[:3]):
        Image.fromarray(frame).save(photos / f"{index}.png")
    with api.Matter(tiny_model, backend="openvino") as matter:
        assert matter.backend.name == "openvino"
        report = matter.images(photos, tmp_path / "masks")
        mask = matter.mask(synthetic_frames[0])
    assert report.processed == 3 and not report.failed
    written = np.asarray(Image.open(tmp_path / "masks" / "0.png"))
    with api.Matter(tiny_model, backend="onnxruntime") as onnxruntime_matter:
        expected = onnxruntime_matter.mask(synthetic_frames[0])
    assert mean_abs_error(written, expected) <= 0.5 and mean_abs_error(mask, expected) <= 0.5


def _signal_stack() -> tuple[int | None, int]:
    import ctypes
    from trt_matte.engine.openvino_backend import _SignalStack
    stack = _SignalStack()
    ctypes.CDLL(None).sigaltstack(None, ctypes.byref(stack))
    return stack.ss_sp, stack.ss_size


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sigaltstack checked on Linux")
def test_models_freed_out_of_order_leave_the_signal_stack_alone(tiny_model, cache_home):
    """Measured with OpenVINO 2026.4: without the guard, the second model freed left the
    thread's signal stack on freed memory, and the next SIGINT crashed the process."""
    graph = matte_graph_path(tiny_model, cache_home)
    before = _signal_stack()
    first = OpenVinoBackend(graph, cache_home / "openvino", threads=1)
    second = OpenVinoBackend(graph, cache_home / "openvino", threads=1)
    assert _signal_stack() == before
    del first
    gc.collect()
    del second
    gc.collect()
    assert _signal_stack() == before
    # SIGINT's default back for the child: a suite started in the background inherits it ignored.
    interrupted = subprocess.run([sys.executable, "-c", _FREE_OUT_OF_ORDER_THEN_CTRL_C, str(graph),
                                  str(cache_home / "openvino")], capture_output=True, text=True, timeout=120,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert interrupted.returncode == 0 and interrupted.stdout.strip() == "KeyboardInterrupt", interrupted


_FREE_OUT_OF_ORDER_THEN_CTRL_C = """
import faulthandler, gc, os, signal, sys, time
from pathlib import Path
faulthandler.enable()
from trt_matte.engine.openvino_backend import OpenVinoBackend
models = [OpenVinoBackend(Path(sys.argv[1]), Path(sys.argv[2]), threads=1) for _ in range(2)]
del models[0]
gc.collect()
del models[0]
gc.collect()
try:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)
except KeyboardInterrupt:
    print("KeyboardInterrupt")
"""
