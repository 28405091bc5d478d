"""The yardstick every threshold in the suite and the INT8 gate rely on: masks compared
at 128, IoU and mean absolute error, worked out by hand on small masks."""
from __future__ import annotations

import numpy as np
import pytest

from trt_matte.accuracy import GATE_IOU, Accuracy, compare_masks, mask_iou, mean_abs_error


def mask(rows: list[str]) -> np.ndarray:
    """'#' is foreground (255), '+' is exactly the threshold (128), '-' just below (127), '.' is 0."""
    levels = {"#": 255, "+": 128, "-": 127, ".": 0}
    return np.array([[levels[char] for char in row] for row in rows], np.uint8)


def test_iou_is_intersection_over_union_at_128():
    a = mask(["##..",
              "##.."])
    b = mask([".##.",
              ".##."])
    assert mask_iou(a, b) == pytest.approx(2 / 6)  # 2 shared pixels of 6 covered by either
    assert mask_iou(a, a) == 1.0
    assert mask_iou(a, mask(["..##", "..##"])) == 0.0


def test_the_threshold_is_inclusive_at_128():
    assert mask_iou(mask(["+"]), mask(["#"])) == 1.0
    assert mask_iou(mask(["-"]), mask(["#"])) == 0.0


def test_two_empty_masks_agree_and_one_empty_mask_does_not():
    empty = mask(["..", ".."])
    assert mask_iou(empty, mask(["--", "--"])) == 1.0  # nothing reaches 128 in either
    assert mask_iou(empty, mask(["#.", ".."])) == 0.0


def test_stacks_are_pooled_not_averaged():
    """Over a stack, IoU is the pooled intersections over the pooled unions, so a nearly
    empty frame weighs what its area weighs."""
    big_a, big_b = mask(["####", "####"]), mask(["####", "####"])
    tiny_a, tiny_b = mask(["#...", "...."]), mask([".#..", "...."])
    pooled = mask_iou(np.stack([big_a, tiny_a]), np.stack([big_b, tiny_b]))
    assert pooled == pytest.approx(8 / 10)
    assert pooled != pytest.approx((mask_iou(big_a, big_b) + mask_iou(tiny_a, tiny_b)) / 2)


def test_mean_abs_error_does_not_wrap_around():
    assert mean_abs_error(mask(["#."]), mask([".#"])) == 255.0
    assert mean_abs_error(np.array([[10, 250]], np.uint8), np.array([[20, 240]], np.uint8)) == 10.0


def test_compare_masks_reports_pooled_and_worst_frame_and_the_gate():
    reference = np.stack([mask(["##", "##"]), mask(["##", "##"])])
    candidate = np.stack([mask(["##", "##"]), mask(["#.", ".."])])
    accuracy = compare_masks(reference, candidate)
    assert accuracy == Accuracy(iou=5 / 8, iou_worst=0.25, mean_abs_error=round(3 * 255 / 8, 4), foreground=1.0)
    assert not accuracy.passes
    assert Accuracy(GATE_IOU, 0.5, 3.0).passes and not Accuracy(GATE_IOU - 1e-6, 1.0, 0.0).passes
    # The foreground agrees and the grey levels do not (grey noise, INT8: IoU 0.976, 9.2/255).
    assert not Accuracy(0.976, 0.9, 9.2).passes


def test_where_almost_nothing_is_foreground_the_gate_reads_the_mean_abs_error():
    """Two mattes of a frame without a subject: 100 of 100,000 pixels foreground in one,
    80 of them in the other. IoU 0.8 is those 20 pixels' verdict; the mean abs error
    says the mattes agree."""
    reference = np.zeros((1, 250, 400), np.uint8)
    reference[0, :10, :10] = 200
    candidate = reference.copy()
    candidate[0, 8:10, :10] = 100
    accuracy = compare_masks(reference, candidate)
    assert accuracy.iou == 0.8 and accuracy.foreground == 100 / 100_000 and accuracy.sparse
    assert accuracy.passes and "the gate reads the mean abs error" in accuracy.line(1)
    hazy = candidate.copy()
    hazy[0, 50:, :] = 3  # a grey haze where the reference is black
    assert not compare_masks(reference, hazy).passes


def test_compare_masks_refuses_stacks_of_different_shapes():
    with pytest.raises(ValueError, match="shapes"):
        compare_masks(np.zeros((2, 4, 4), np.uint8), np.zeros((2, 4, 5), np.uint8))
