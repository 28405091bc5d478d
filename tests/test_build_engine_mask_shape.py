"""Mask shaping in the matte graph (threshold, erode, dilate, feather), on real frames,
checked against numpy's own morphology at the output size."""
from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from conftest import decode_rgb
from trt_matte.build_engine.matte_graph import MaskShape, build_matte_graph, matte_graph_path
from trt_matte.build_engine.network import load_network
from trt_matte.engine.onnxruntime_backend import OnnxRuntimeBackend
from trt_matte.errors import MatteError

# carphone's own size: shaping counts these pixels, not the model's 320x320.
HEIGHT, WIDTH = 144, 176


@pytest.fixture(scope="module")
def model_inputs(ffmpeg_exe, carphone_path) -> np.ndarray:
    frames = decode_rgb(ffmpeg_exe, carphone_path)[::12]
    return np.stack([np.asarray(Image.fromarray(frame).resize((320, 320), Image.Resampling.LANCZOS))
                     for frame in frames])


def shaped(u2netp_path, cache_home, model_inputs, **steps: int) -> np.ndarray:
    graph = matte_graph_path(u2netp_path, cache_home, upsize=True, shape=MaskShape(**steps))
    return OnnxRuntimeBackend(graph, device="cpu").run_at_size(model_inputs, HEIGHT, WIDTH)


@pytest.fixture(scope="module")
def plain(u2netp_path, cache_home, model_inputs) -> np.ndarray:
    return shaped(u2netp_path, cache_home, model_inputs)


def square_max(masks: np.ndarray, radius: int) -> np.ndarray:
    """Grey dilation by a (2r+1)-square, the border left out (numpy, independent of the graph)."""
    padded = np.pad(masks, ((0, 0), (radius, radius), (radius, radius)), constant_values=0)
    return sliding_window_view(padded, (2 * radius + 1, 2 * radius + 1), axis=(1, 2)).max(axis=(3, 4))


def square_min(masks: np.ndarray, radius: int) -> np.ndarray:
    padded = np.pad(masks, ((0, 0), (radius, radius), (radius, radius)), constant_values=255)
    return sliding_window_view(padded, (2 * radius + 1, 2 * radius + 1), axis=(1, 2)).min(axis=(3, 4))


def foreground(masks: np.ndarray) -> np.ndarray:
    return (masks >= 128).sum(axis=(1, 2))


def test_threshold_gives_only_0_and_255_where_the_matte_crosses_it(u2netp_path, cache_home, model_inputs, plain):
    hard = shaped(u2netp_path, cache_home, model_inputs, threshold=100)
    assert set(np.unique(hard)) == {0, 255}
    assert np.array_equal(hard, np.where(plain >= 100, 255, 0))


def test_erode_and_dilate_shrink_and_grow_every_frame_by_square_windows(u2netp_path, cache_home, model_inputs,
                                                                        plain):
    eroded = shaped(u2netp_path, cache_home, model_inputs, erode=3)
    dilated = shaped(u2netp_path, cache_home, model_inputs, dilate=3)
    assert (foreground(eroded) < foreground(plain)).all() and (foreground(dilated) > foreground(plain)).all()
    # The graph works on floats before rounding: within one level of numpy's uint8 morphology.
    assert np.abs(eroded.astype(int) - square_min(plain, 3)).max() <= 1
    assert np.abs(dilated.astype(int) - square_max(plain, 3)).max() <= 1


def test_erode_then_dilate_removes_specks_and_keeps_the_subject(u2netp_path, cache_home, model_inputs, plain):
    opened = shaped(u2netp_path, cache_home, model_inputs, threshold=128, erode=2, dilate=2)
    hard = np.where(plain >= 128, 255, 0).astype(np.uint8)
    assert np.array_equal(opened, square_max(square_min(hard, 2), 2))
    assert (foreground(opened) >= 0.95 * foreground(hard)).all()


def test_feather_softens_only_near_the_edges(u2netp_path, cache_home, model_inputs, plain):
    feathered = shaped(u2netp_path, cache_home, model_inputs, threshold=128, feather=4)
    hard = np.where(plain >= 128, 255, 0).astype(np.uint8)
    soft = (feathered > 0) & (feathered < 255)
    near_an_edge = (square_max(hard, 4) == 255) & (square_min(hard, 4) == 0)
    assert soft.any() and not (soft & ~near_an_edge).any()
    assert np.array_equal(feathered[~near_an_edge], hard[~near_an_edge])


def test_run_shapes_at_320_and_run_at_size_at_the_frame(u2netp_path, cache_home, model_inputs):
    graph = matte_graph_path(u2netp_path, cache_home, upsize=True, shape=MaskShape(threshold=128))
    backend = OnnxRuntimeBackend(graph, device="cpu")
    assert backend.run(model_inputs[:2]).shape == (2, 320, 320)
    assert set(np.unique(backend.run(model_inputs[:2]))) == {0, 255}
    assert backend.run_at_size(model_inputs[:2], 50, 70).shape == (2, 50, 70)


def test_no_shaping_leaves_the_graph_as_it_was(tiny_model, cache_home):
    network = load_network(tiny_model)
    assert build_matte_graph(network) == build_matte_graph(network, shape=MaskShape())
    assert matte_graph_path(tiny_model, cache_home).name == matte_graph_path(tiny_model, cache_home,
                                                                             shape=MaskShape()).name
    named = matte_graph_path(tiny_model, cache_home, upsize=True, shape=MaskShape(128, 2, 3, 4)).name
    assert "-t128-e2-d3-f4-" in named


@pytest.mark.parametrize("steps", [{"threshold": 256}, {"erode": -1}, {"feather": 65}])
def test_out_of_range_shaping_is_one_line(steps):
    with pytest.raises(MatteError):
        MaskShape(**steps)
