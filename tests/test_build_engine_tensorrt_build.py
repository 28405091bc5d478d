"""What the TensorRT build asks for, checked without TensorRT: the optimization profile
(TensorRT requires min <= opt <= max in every dimension) and a clear error where
TensorRT or a GPU is missing. The build itself runs in tests/test_gpu.py."""
from __future__ import annotations

import pytest

from trt_matte.build_engine.engine_cache import GpuIdentity
from trt_matte.build_engine.tensorrt_build import BuildRequest, engine_spec, profile_shapes, require_tensorrt_gpu
from trt_matte.errors import MatteError
from trt_matte.tensorrt_api import tensorrt_available

H100 = GpuIdentity("NVIDIA H100 80GB HBM3", "9.0")


@pytest.mark.parametrize("max_batch, max_frame_side", [(1, 64), (16, 4096), (8, 1000), (256, 8192)])
def test_profiles_satisfy_tensorrts_min_opt_max_rule(tmp_path, max_batch, max_frame_side):
    graph = tmp_path / "graph.onnx"
    graph.write_bytes(b"graph bytes")
    spec = engine_spec(graph, BuildRequest(graph, max_batch=max_batch, max_frame_side=max_frame_side), H100, "11.4")
    shapes = profile_shapes(spec)
    assert shapes["rgb"][2] == (max_batch, 320, 320, 3) and shapes["frame_shape"][2] == (0, max_frame_side, max_frame_side)
    for smallest, tuned, largest in shapes.values():
        assert len(smallest) == len(tuned) == len(largest)
        assert all(0 <= low <= mid <= high for low, mid, high in zip(smallest, tuned, largest))
    # frame_shape is empty in its first dimension only: the mask size is never 0.
    assert [dims[0] for dims in shapes["frame_shape"]] == [0, 0, 0]
    assert all(side >= 1 for dims in shapes["frame_shape"] for side in dims[1:])
    # Kernels are tuned for the full batches the pipelines send.
    assert shapes["rgb"][1][0] == max_batch


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is installed")
def test_without_tensorrt_the_build_says_how_to_get_it():
    with pytest.raises(MatteError, match=r"pip install 'trt-matte\[gpu\]'"):
        require_tensorrt_gpu()
