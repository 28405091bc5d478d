"""ONNX Runtime on the CPU, the portable backend and the numerical reference: what it
reports, how it batches, and what a broken graph or a missing CUDA provider says."""
from __future__ import annotations

import numpy as np
import onnxruntime
import pytest

from trt_matte.build_engine.matte_graph import matte_graph_path
from trt_matte.engine.onnxruntime_backend import CPU_BATCH, OnnxRuntimeBackend
from trt_matte.errors import MatteError


def test_cpu_backend_masks_follow_each_picture_in_a_batch(tiny_model, cache_home):
    backend = OnnxRuntimeBackend(matte_graph_path(tiny_model, cache_home), device="cpu", threads=1)
    assert (backend.name, backend.device, backend.preferred_batch) == ("onnxruntime", "cpu", CPU_BATCH)
    dark_left = np.zeros((320, 320, 3), np.uint8)
    dark_left[:, 160:] = 200
    batch = np.stack([dark_left, dark_left[:, ::-1]])
    masks = backend.run(batch)
    assert masks.shape == (2, 320, 320) and masks.dtype == np.uint8
    # The stand-in's mask is the picture's brightness, stretched per picture to 0..255.
    assert masks[0, :, :160].max() == 0 and masks[0, :, 160:].min() == 255
    np.testing.assert_array_equal(masks[1], masks[0][:, ::-1])
    np.testing.assert_array_equal(backend.run(batch[1:]), masks[1:])  # alone or batched: the same


def test_a_graph_onnx_runtime_cannot_load_is_one_line(tmp_path):
    graph = tmp_path / "matte.onnx"
    graph.write_bytes(b"\x08\x07garbage")
    with pytest.raises(MatteError, match="ONNX Runtime could not load matte.onnx") as failure:
        OnnxRuntimeBackend(graph, device="cpu")
    assert "\n" not in str(failure.value)


@pytest.mark.skipif("CUDAExecutionProvider" in onnxruntime.get_available_providers(),
                    reason="this onnxruntime has a CUDA provider")
def test_asking_for_cuda_without_the_provider_names_the_package(tiny_model, cache_home):
    with pytest.raises(MatteError, match="onnxruntime-gpu"):
        OnnxRuntimeBackend(matte_graph_path(tiny_model, cache_home), device="cuda")
