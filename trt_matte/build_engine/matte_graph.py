"""The matte graph: rembg's U²-Net recipe as ONNX ops around the network.

Every backend runs this one graph, so the numerics are defined once:

    uint8 RGB [N,320,320,3]
      -> divide by the image's own maximum (rembg: ``im / max(im.max(), 1e-6)``)
      -> ImageNet mean/std -> NCHW -> U²-Net -> first output head [N,1,320,320]
      -> per-image min-max (guarded against a constant map)
      [-> upsize to the frame] [-> shaping: threshold, erode, dilate, feather]
      -> x255, round, clip -> uint8 masks [N,320,320] (or [N,H,W] upsized)

Min and max are reduced over each image separately: taking them over a whole batch
is a known pitfall that makes a frame's mask depend on its neighbours.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import MatteError
from ..files import atomic_write_bytes, file_digest
from ..models import MODEL_SIZE
from .fp16 import convert_network_to_fp16
from .network import default_opset, load_network, network_input_name, prepare_network

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_NAME = "rgb"
OUTPUT_NAME = "mask"
# Optional second output: each frame's top probability (the network head's maximum before
# the stretch), for the precision guard's count of low-confidence frames.
PEAK_NAME = "peak"
FRAME_SHAPE_NAME = "frame_shape"
BATCH_DIM = "batch"
# int8: the network is already a Q/DQ graph from ``trt-matte calibrate`` and is wrapped as is.
PRECISIONS = ("fp32", "fp16", "int8")
# Bump when the recipe below changes, so cached graphs are rebuilt.
RECIPE_VERSION = 5
# The widest erode, dilate or feather, in pixels: a 129-pixel pooling window.
MAX_SHAPING_PIXELS = 64
# rembg guards the max division with 1e-6 on a 0..1 scale; we divide raw 0..255 values.
MAX_GUARD = 1e-6
RANGE_GUARD = 1e-12


def frame_shape_dims(height: int, width: int) -> tuple[int, int, int]:
    """The shape to give ``frame_shape`` for masks of ``height`` x ``width``: empty (its
    first dimension is 0), so it holds no data. TensorRT still wants an address for it
    (a binding takes at least one byte, even for an empty tensor)."""
    return 0, height, width


def frame_shape_input(height: int, width: int) -> np.ndarray:
    """``frame_shape`` for ONNX Runtime on the host: an empty uint8 array of that shape."""
    return np.zeros(frame_shape_dims(height, width), np.uint8)


@dataclass(frozen=True)
class MaskShape:
    """What rembg users do to a mask after the network (its ``-ppm`` and only-mask
    thresholds), as ONNX ops at the end of the graph, at the size the graph outputs, in
    this order: ``threshold`` T (1..255) makes a hard matte, 255 where the mask is at
    least T; ``erode`` and ``dilate`` N shrink and grow it by N pixels (a square window,
    so erode then dilate is an opening: specks go, shapes stay); ``feather`` N blurs it
    with a (2N+1)-pixel box, a soft edge reaching N pixels to each side. 0 leaves a step out."""

    threshold: int = 0
    erode: int = 0
    dilate: int = 0
    feather: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.threshold <= 255:
            raise MatteError(f"the threshold is a mask level from 1 to 255, got {self.threshold}")
        for name in ("erode", "dilate", "feather"):
            if not 0 <= getattr(self, name) <= MAX_SHAPING_PIXELS:
                raise MatteError(f"--{name} takes 0 to {MAX_SHAPING_PIXELS} pixels, got {getattr(self, name)}")

    @property
    def active(self) -> bool:
        return any((self.threshold, self.erode, self.dilate, self.feather))

    @property
    def hard(self) -> bool:
        """Masks of 0 and 255 only: thresholded, with no feather."""
        return bool(self.threshold) and not self.feather

    def label(self) -> str:
        """``t128-e3-f2``: the steps taken, for file names ("" when none)."""
        steps = (("t", self.threshold), ("e", self.erode), ("d", self.dilate), ("f", self.feather))
        return "-".join(f"{letter}{value}" for letter, value in steps if value)


NO_SHAPING = MaskShape()


def graph_feed(rgb_batch: np.ndarray, height: int, width: int, upsizing: bool) -> dict[str, np.ndarray]:
    """A host run's inputs: the batch, and for an upsizing graph ``frame_shape`` for masks
    of ``height`` x ``width``."""
    feed = {INPUT_NAME: np.ascontiguousarray(rgb_batch, dtype=np.uint8)}
    if upsizing:
        feed[FRAME_SHAPE_NAME] = frame_shape_input(height, width)
    return feed


def _constant(name: str, values: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values), name)


def _reduce_per_image(op: str, source: str, target: str, opset: int) -> list[onnx.NodeProto]:
    """Reduce over C,H,W of each image; opset 18 moved ``axes`` from attribute to input."""
    if opset < 18:
        return [helper.make_node(op, [source], [target], axes=[1, 2, 3], keepdims=1)]
    return [helper.make_node(op, [source, "per_image_axes"], [target], keepdims=1)]


def _preprocess(network_input: str, opset: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    constants = [
        _constant("pre_max_guard", np.array(MAX_GUARD * 255.0, dtype=np.float32)),
        _constant("pre_mean", np.array(IMAGENET_MEAN, dtype=np.float32)),
        _constant("pre_std", np.array(IMAGENET_STD, dtype=np.float32)),
    ]
    nodes = [
        helper.make_node("Cast", [INPUT_NAME], ["pre_float"], to=TensorProto.FLOAT),
        *_reduce_per_image("ReduceMax", "pre_float", "pre_image_max", opset),
        helper.make_node("Max", ["pre_image_max", "pre_max_guard"], ["pre_safe_max"]),
        helper.make_node("Div", ["pre_float", "pre_safe_max"], ["pre_unit"]),
        helper.make_node("Sub", ["pre_unit", "pre_mean"], ["pre_centered"]),
        helper.make_node("Div", ["pre_centered", "pre_std"], ["pre_normalized"]),
        helper.make_node("Transpose", ["pre_normalized"], [network_input], perm=[0, 3, 1, 2]),
    ]
    return nodes, constants


def preprocessing_graph(opset: int) -> onnx.ModelProto:
    """The recipe's first half alone: uint8 RGB [N,320,320,3] -> the network's float input
    [N,3,320,320], so calibration feeds the network exactly what the matte graph does."""
    nodes, constants = _preprocess("network_input", opset)
    if opset >= 18:
        constants.append(_constant("per_image_axes", np.array([1, 2, 3], dtype=np.int64)))
    graph = helper.make_graph(
        nodes, "trt_matte_preprocess",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, [BATCH_DIM, MODEL_SIZE, MODEL_SIZE, 3])],
        [helper.make_tensor_value_info("network_input", TensorProto.FLOAT, [BATCH_DIM, 3, MODEL_SIZE, MODEL_SIZE])],
        initializer=constants)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="trt-matte")


def _normalize_head(first_head: str, opset: int,
                    stretch_floor: float) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Per-image min-max of the first head: float [N,1,320,320] in 0..1 as ``post_unit``.

    The range divided by is at least ``stretch_floor`` (0: rembg's stretch): a frame
    whose output spans less than that, where the network found no subject, is not
    stretched to the full 0..255 but stays as dark as the network left it."""
    guard = max(RANGE_GUARD, stretch_floor)
    constants = [_constant("post_range_guard", np.array(guard, dtype=np.float32))]
    nodes = [
        *_reduce_per_image("ReduceMin", first_head, "post_min", opset),
        *_reduce_per_image("ReduceMax", first_head, "post_max", opset),
        helper.make_node("Sub", [first_head, "post_min"], ["post_shifted"]),
        helper.make_node("Sub", ["post_max", "post_min"], ["post_range"]),
        helper.make_node("Max", ["post_range", "post_range_guard"], ["post_safe_range"]),
        helper.make_node("Div", ["post_shifted", "post_safe_range"], ["post_unit"]),
    ]
    return nodes, constants


def _upsize(source: str, target: str, opset: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Resize [N,1,320,320] to [N,1,H,W], H and W taken from the shape of ``frame_shape``.

    Only the shape of that input is read, never its data: a dynamic output size
    without shape-tensor inputs, which TensorRT and ONNX Runtime both handle.
    ``frame_shape`` is [0,H,W], an empty tensor, so it costs no memory to feed.
    """
    constants = [
        _constant("upsize_keep_from", np.array([0], dtype=np.int64)),
        _constant("upsize_keep_to", np.array([2], dtype=np.int64)),
        _constant("upsize_frame_from", np.array([1], dtype=np.int64)),
        _constant("upsize_frame_to", np.array([3], dtype=np.int64)),
    ]
    # Opset 11 requires roi and scales (empty); from 13 they are omitted, and from 18 an
    # empty scales tensor beside sizes is an error.
    unused = ""
    if opset < 13:
        unused = "upsize_empty"
        constants.append(_constant(unused, np.zeros(0, dtype=np.float32)))
    nodes = [
        helper.make_node("Shape", [source], ["upsize_source_shape"]),
        helper.make_node("Slice", ["upsize_source_shape", "upsize_keep_from", "upsize_keep_to"],
                         ["upsize_batch_channel"]),
        # TensorRT takes uint8 inputs only into a Cast; the cast copy is H*W bytes, negligible.
        helper.make_node("Cast", [FRAME_SHAPE_NAME], ["upsize_frame_half"], to=TensorProto.FLOAT16),
        helper.make_node("Shape", ["upsize_frame_half"], ["upsize_frame_dims"]),
        helper.make_node("Slice", ["upsize_frame_dims", "upsize_frame_from", "upsize_frame_to"],
                         ["upsize_height_width"]),
        helper.make_node("Concat", ["upsize_batch_channel", "upsize_height_width"], ["upsize_sizes"], axis=0),
        # Bicubic up; the upscale filter barely moves the matte (the downscale is what matters).
        helper.make_node("Resize", [source, unused, unused, "upsize_sizes"], [target],
                         mode="cubic", cubic_coeff_a=-0.5, coordinate_transformation_mode="half_pixel"),
    ]
    return nodes, constants


def _pool_both_ways(op: str, source: str, target: str, radius: int, **attributes: int) -> list[onnx.NodeProto]:
    """A (2r+1)-square window as a row pass then a column pass: max and box filters are
    separable, so each pixel costs 2(2r+1) reads instead of (2r+1)^2."""
    width = 2 * radius + 1
    return [helper.make_node(op, [source], [f"{target}_rows"], kernel_shape=[1, width], pads=[0, radius, 0, radius],
                             **attributes),
            helper.make_node(op, [f"{target}_rows"], [target], kernel_shape=[width, 1], pads=[radius, 0, radius, 0],
                             **attributes)]


def _shape_mask(source: str, shape: MaskShape) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """``MaskShape``'s steps on a 0..1 float mask [N,1,H,W]; returns the name of the result.
    Pooling pads count as absent (max pooling pads with -inf, the box average leaves them
    out), so the frame's border neither erodes nor darkens the mask."""
    nodes: list[onnx.NodeProto] = []
    constants: list[onnx.TensorProto] = []
    current = source
    if shape.threshold:
        # Compared on the level the unshaped matte would be written at: x255, rounded.
        constants += [_constant("shape_scale", np.array(255.0, dtype=np.float32)),
                      _constant("shape_threshold", np.array(shape.threshold, dtype=np.float32))]
        nodes += [helper.make_node("Mul", [current, "shape_scale"], ["shape_levels"]),
                  helper.make_node("Round", ["shape_levels"], ["shape_rounded"]),
                  helper.make_node("Less", ["shape_rounded", "shape_threshold"], ["shape_below"]),
                  helper.make_node("Not", ["shape_below"], ["shape_kept"]),
                  helper.make_node("Cast", ["shape_kept"], ["shape_hard"], to=TensorProto.FLOAT)]
        current = "shape_hard"
    if shape.erode:  # erosion is the dilation of the background
        nodes += [helper.make_node("Neg", [current], ["shape_background"]),
                  *_pool_both_ways("MaxPool", "shape_background", "shape_background_grown", shape.erode),
                  helper.make_node("Neg", ["shape_background_grown"], ["shape_eroded"])]
        current = "shape_eroded"
    if shape.dilate:
        nodes += _pool_both_ways("MaxPool", current, "shape_dilated", shape.dilate)
        current = "shape_dilated"
    if shape.feather:
        nodes += _pool_both_ways("AveragePool", current, "shape_feathered", shape.feather, count_include_pad=0)
        current = "shape_feathered"
    return nodes, constants, current


def _to_uint8(source: str, opset: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """0..1 float [N,1,H,W] -> uint8 [N,H,W]: x255, round (rembg truncates), clip."""
    constants = [
        _constant("post_scale", np.array(255.0, dtype=np.float32)),
        _constant("post_low", np.array(0.0, dtype=np.float32)),
        _constant("post_high", np.array(255.0, dtype=np.float32)),
    ]
    if opset >= 13:
        constants.append(_constant("post_channel_axis", np.array([1], dtype=np.int64)))
        squeeze = helper.make_node("Squeeze", ["post_clipped", "post_channel_axis"], ["post_squeezed"])
    else:
        squeeze = helper.make_node("Squeeze", ["post_clipped"], ["post_squeezed"], axes=[1])
    nodes = [
        helper.make_node("Mul", [source, "post_scale"], ["post_scaled"]),
        helper.make_node("Round", ["post_scaled"], ["post_rounded"]),
        helper.make_node("Clip", ["post_rounded", "post_low", "post_high"], ["post_clipped"]),
        squeeze,
        helper.make_node("Cast", ["post_squeezed"], [OUTPUT_NAME], to=TensorProto.UINT8),
    ]
    return nodes, constants


def build_matte_graph(network: onnx.ModelProto, upsize: bool = False, stretch_floor: float = 0.0,
                      peaks: bool = False, shape: MaskShape = NO_SHAPING) -> onnx.ModelProto:
    """Wrap a U²-Net network in the recipe; the result has a dynamic batch dimension.

    With ``upsize`` the graph also takes ``frame_shape`` (uint8 [0,H,W]: empty, only
    its shape counts; see ``frame_shape_dims``) and returns masks resized to H x W, so a
    GPU engine hands back finished mattes and no full-size resize runs on the host.
    ``stretch_floor`` > 0 bounds the per-frame stretch (see ``_normalize_head``).
    ``peaks`` adds the ``peak`` output, float [N,1,1,1]. ``shape`` shapes the masks at
    the size the graph returns them (``MaskShape``).
    """
    opset = default_opset(network)
    if opset < 11:
        raise MatteError(f"the model uses ONNX opset {opset}; opset 11 or newer is needed")
    graph = onnx.GraphProto()
    graph.CopyFrom(network.graph)
    network_input = network_input_name(network)
    first_head = graph.output[0].name

    stages = [_preprocess(network_input, opset), (list(graph.node), []), _normalize_head(first_head, opset, stretch_floor)]
    unit_mask = "post_unit"
    if upsize:
        stages.append(_upsize(unit_mask, "post_upsized", opset))
        unit_mask = "post_upsized"
    if shape.active:
        shaping_nodes, shaping_constants, unit_mask = _shape_mask(unit_mask, shape)
        stages.append((shaping_nodes, shaping_constants))
    stages.append(_to_uint8(unit_mask, opset))
    # The exporter's shape annotations pin the batch to 1; drop them and let the
    # runtime infer shapes from the dynamic input.
    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, [BATCH_DIM, MODEL_SIZE, MODEL_SIZE, 3])]
    mask_size = [MODEL_SIZE, MODEL_SIZE]
    if upsize:
        inputs.append(helper.make_tensor_value_info(FRAME_SHAPE_NAME, TensorProto.UINT8,
                                                    ["frame_shape_empty", "height", "width"]))
        mask_size = ["height", "width"]
    nodes = [node for stage_nodes, _ in stages for node in stage_nodes]
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.UINT8, [BATCH_DIM, *mask_size])]
    if peaks:
        nodes.append(helper.make_node("Identity", ["post_max"], [PEAK_NAME]))
        outputs.append(helper.make_tensor_value_info(PEAK_NAME, TensorProto.FLOAT, [BATCH_DIM, 1, 1, 1]))
    constants = [constant for _, stage_constants in stages for constant in stage_constants]
    if opset >= 18:
        constants.append(_constant("per_image_axes", np.array([1, 2, 3], dtype=np.int64)))

    wrapped = helper.make_graph(
        nodes, f"trt_matte_{graph.name or 'u2net'}", inputs, outputs,
        initializer=list(graph.initializer) + constants,
    )
    model = helper.make_model(wrapped, opset_imports=list(network.opset_import),
                              producer_name="trt-matte")
    model.ir_version = network.ir_version
    model = onnx.utils.Extractor(model).extract_model([graph_input.name for graph_input in inputs],
                                                      [output.name for output in outputs])
    onnx.checker.check_model(model)
    return model


def matte_graph_path(network_path: Path, cache_dir: Path, precision: str = "fp32", upsize: bool = False,
                     stretch_floor: float = 0.0, peaks: bool = False, shape: MaskShape = NO_SHAPING) -> Path:
    """Return the cached matte graph for a network file and variant, building it on first use.

    ``network_path`` is the model file, or for ``int8`` the Q/DQ network of a calibration,
    which the caller looked up.
    """
    if not 0.0 <= stretch_floor <= 1.0:
        raise MatteError(f"the stretch floor is a probability from 0 to 1, got {stretch_floor:g}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}")
    if not network_path.is_file():
        raise MatteError(f"model file not found: {network_path}")
    digest = file_digest(network_path)[:16]
    variant = f"{precision}-upsize" if upsize else precision
    variant += f"-floor{stretch_floor:g}" if stretch_floor else ""
    variant += "-peaks" if peaks else ""
    variant += f"-{shape.label()}" if shape.active else ""
    target = cache_dir / "graphs" / f"matte-v{RECIPE_VERSION}-{variant}-{digest}.onnx"
    if target.is_file():
        return target
    # FP16 from the prepared network: converted from the exported one (Resize sizes computed
    # at run time, opset 11), u2netp's FP16 matte lost twice as much on low-confidence clips.
    network = convert_network_to_fp16(prepare_network(network_path)) if precision == "fp16" \
        else load_network(network_path)
    atomic_write_bytes(target, build_matte_graph(network, upsize, stretch_floor, peaks, shape).SerializeToString())
    return target
