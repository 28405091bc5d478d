"""How two mattes are compared: one definition for the INT8 gate, the tests and the scripts."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A reduced-precision graph whose masks reach a lower IoU against FP32, or a larger mean
# absolute error, is refused (the error bound catches a matte whose foreground agrees
# where its grey levels do not: IoU 0.976 beside 9.2/255 was measured on grey noise).
GATE_IOU = 0.97
GATE_ERROR = 4.0
# Masks are compared as foreground where they reach this level (of 255).
FOREGROUND_LEVEL = 128
# Where the foreground of either matte covers less than this share of the compared pixels,
# IoU is a handful of pixels' verdict (0.80 against FP32 measured where the mean abs error
# was 0.04/255): there the gate reads the mean abs error instead, against this bound.
SPARSE_FOREGROUND = 0.005
SPARSE_GATE_ERROR = 1.0


@dataclass(frozen=True)
class Accuracy:
    """A candidate's masks against reference masks."""
    # IoU of masks thresholded at FOREGROUND_LEVEL, over all frames together (intersections
    # summed over unions summed): a nearly empty frame, where a few pixels swing its own
    # IoU from 1 to 0, weighs what its foreground weighs. The gate reads this one.
    iou: float
    iou_worst: float  # the lowest single frame's IoU, to name where it went wrong
    mean_abs_error: float  # in levels of 255
    foreground: float = 1.0  # share of the pixels foreground in either matte (the pooled union)

    @property
    def sparse(self) -> bool:
        return self.foreground < SPARSE_FOREGROUND

    @property
    def passes(self) -> bool:
        if self.sparse:
            return self.mean_abs_error <= SPARSE_GATE_ERROR
        return self.iou >= GATE_IOU and self.mean_abs_error <= GATE_ERROR

    def line(self, frames: int) -> str:
        sparse = (f"; foreground in {self.foreground:.2%} of the pixels, so the gate reads the mean abs error "
                  f"(<= {SPARSE_GATE_ERROR:g}/255)") if self.sparse else ""
        return (f"IoU {self.iou:.4f} over {frames} frames (worst frame {self.iou_worst:.4f}), "
                f"mean abs error {self.mean_abs_error:.2f}/255{sparse}")


# How the gate reads, for messages.
GATE = f"the gate (IoU {GATE_IOU}, mean abs error {GATE_ERROR:g}/255)"


def _overlap(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(intersection, union) of the foregrounds of two masks or stacks."""
    foreground_a, foreground_b = a >= FOREGROUND_LEVEL, b >= FOREGROUND_LEVEL
    return int(np.logical_and(foreground_a, foreground_b).sum()), int(np.logical_or(foreground_a, foreground_b).sum())


def _iou(intersection: int, union: int) -> float:
    return 1.0 if union == 0 else intersection / union  # two empty masks agree perfectly


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two masks (or stacks of masks, pooled) thresholded at 128; two empty masks agree perfectly."""
    return _iou(*_overlap(a, b))


def _abs_error_sum(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).sum())


def mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    return _abs_error_sum(a, b) / a.size


class MaskTally:
    """``compare_masks`` over masks that arrive one at a time, kept as sums: a run's spot
    checks hold a few numbers, not every checked mask."""

    def __init__(self) -> None:
        self.frames = 0
        self._intersection = self._union = self._abs_error = self._pixels = 0
        self._worst = 1.0

    def add(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        """One pair of masks [H,W]."""
        intersection, union = _overlap(reference, candidate)
        self._intersection += intersection
        self._union += union
        self._worst = min(self._worst, _iou(intersection, union))
        self._abs_error += _abs_error_sum(reference, candidate)
        self._pixels += reference.size
        self.frames += 1

    def accuracy(self) -> Accuracy | None:
        if not self.frames:
            return None
        return Accuracy(round(_iou(self._intersection, self._union), 6), round(self._worst, 6),
                        round(self._abs_error / self._pixels, 4), round(self._union / self._pixels, 6))


def compare_masks(reference: np.ndarray, candidate: np.ndarray) -> Accuracy:
    """Pooled and worst per-frame IoU (``mask_iou``) and mean absolute error of two mask stacks [N,H,W]."""
    if reference.shape != candidate.shape:
        raise ValueError(f"cannot compare masks of shapes {reference.shape} and {candidate.shape}")
    tally = MaskTally()
    for expected, actual in zip(reference, candidate):
        tally.add(expected, actual)
    return tally.accuracy()
