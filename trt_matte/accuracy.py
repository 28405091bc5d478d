"""How two mattes are compared: one definition for the INT8 gate, the tests and the scripts."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A reduced-precision graph whose masks reach a lower IoU against FP32 is refused.
GATE_IOU = 0.97
# Masks are compared as foreground where they reach this level (of 255).
FOREGROUND_LEVEL = 128


@dataclass(frozen=True)
class Accuracy:
    """A candidate's masks against reference masks."""
    # IoU of masks thresholded at FOREGROUND_LEVEL, over all frames together (intersections
    # summed over unions summed): a nearly empty frame, where a few pixels swing its own
    # IoU from 1 to 0, weighs what its foreground weighs. The gate reads this one.
    iou: float
    iou_worst: float  # the lowest single frame's IoU, to name where it went wrong
    mean_abs_error: float  # in levels of 255

    @property
    def passes(self) -> bool:
        return self.iou >= GATE_IOU

    def line(self, frames: int) -> str:
        return (f"IoU {self.iou:.4f} over {frames} frames (worst frame {self.iou_worst:.4f}), "
                f"mean abs error {self.mean_abs_error:.2f}/255")


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two masks (or stacks of masks, pooled) thresholded at 128; two empty masks agree perfectly."""
    foreground_a, foreground_b = a >= FOREGROUND_LEVEL, b >= FOREGROUND_LEVEL
    union = np.logical_or(foreground_a, foreground_b).sum()
    return 1.0 if union == 0 else float(np.logical_and(foreground_a, foreground_b).sum() / union)


def mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def compare_masks(reference: np.ndarray, candidate: np.ndarray) -> Accuracy:
    """Pooled and worst per-frame IoU (``mask_iou``) and mean absolute error of two mask stacks [N,H,W]."""
    if reference.shape != candidate.shape:
        raise ValueError(f"cannot compare masks of shapes {reference.shape} and {candidate.shape}")
    worst = min(mask_iou(expected, actual) for expected, actual in zip(reference, candidate))
    error = mean_abs_error(reference, candidate)
    return Accuracy(round(mask_iou(reference, candidate), 6), round(worst, 6), round(error, 4))
