"""The reduced-precision guard: INT8 or FP16 masks checked against FP32 on the run's own
frames, so a matte below the accuracy gate is never written without ``--force``.

U²-Net's per-frame min-max stretch turns small numeric changes into different masks on
low-confidence frames, and a calibration that holds on one clip can fail on another
(IoU 0.84 against FP32 on a street clip after passing 0.98 on carphone). So every run in
reduced precision is checked twice:

- before writing, a few frames spread over the input are matted in both precisions;
  below the gate the run goes on in FP32 (``fallback``), unless ``force``;
- during the run, one frame in ``SPOT_CHECK_EVERY`` is matted again in FP32 (fewer where
  the reference is slow against the run, as a CPU reference beside a GPU engine is: its
  time stays within ``SPOT_CHECK_BUDGET`` of the run's); when the frames checked so far
  fall below the gate, ``GuardTripped`` ends the attempt, and the caller starts the
  output again in FP32 (the reduced part is discarded).

IoU is pooled over every checked frame (``accuracy.MaskTally``, kept as sums), next to the
mean absolute error and the worst single frame. The FP32 reference also gives each checked
frame's top probability, so the report says how many were low-confidence frames, where
every precision and backend disagrees most.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ..accuracy import GATE, Accuracy, MaskTally
from ..engine.backend import Backend
from ..errors import MatteError

# Frames matted in both precisions before anything is written.
PRECHECK_FRAMES = 6
# One frame in this many is checked during the run: FP32 costs ~2.5x INT8 per frame on
# OpenVINO, so the spot checks cost ~2.5% of an INT8 run.
SPOT_CHECK_EVERY = 100
# The spot checks' FP32 time, as a share of the run's time since the first spot check
# was due, beyond which the next due frame is let pass.
SPOT_CHECK_BUDGET = 0.03
# The run is judged only once this many frames were spot-checked: one frame alone can
# fall below the gate where the pooled IoU of the clip holds.
MIN_SPOT_FRAMES = 3
# A frame whose top probability (the network's output before the stretch) is below this
# is one where it is unsure: u2netp gave 1.00 on every frame with a person in the clips
# measured, 0.30-0.79 on patterns and gradients, 0.76-1.00 on ffmpeg's test pattern.
LOW_CONFIDENCE_PEAK = 0.9


class GuardTripped(MatteError):
    """Spot checks fell below the gate mid-run: the output starts again in FP32."""


class PrecisionGuard:
    """Checks a reduced-precision backend's masks against an FP32 ``reference``."""

    def __init__(self, reference: Backend, force: bool, announce: Callable[[str], None]):
        self.reference = reference
        self.force = force
        self._announce = announce
        self._tally = MaskTally()
        self._since_check = 0  # frames since the last spot check
        self._spot_started: float | None = None  # time.monotonic() when the run's frames began
        self._spot_seconds = 0.0  # spent in the spot checks' FP32 runs
        self.low_confidence_frames = 0  # of the checked frames

    def holds_before_writing(self, candidate: Backend, frames: np.ndarray) -> bool:
        """Matte ``frames`` (uint8 [N,320,320,3]) in both precisions; False sends the run to
        FP32 (said in one line). With ``force`` a result below the gate is only said."""
        for frame in frames:
            self._record(frame, candidate.run(frame[None])[0])
        accuracy = self.accuracy()
        if accuracy is None or accuracy.passes:
            return True
        verdict = f"{candidate.precision.upper()} against FP32 before writing: {self.line()}, below {GATE}"
        if self.force:
            self._announce(f"{verdict}; --force keeps {candidate.precision.upper()}")
            return True
        self._announce(f"{verdict}: running FP32 instead (--force keeps {candidate.precision.upper()})")
        return False

    def spot_check(self, rgb_batch: np.ndarray, masks: np.ndarray) -> None:
        """Called with every batch the reduced backend matted (host arrays)."""
        for index in self.due(len(rgb_batch)):
            self.check(rgb_batch[index], masks[index])

    def spot_check_again(self, rgb_batch: np.ndarray, candidate: Backend) -> None:
        """``spot_check`` for a run whose masks are not 320x320 (upsized on a GPU, or
        shaped at the frame's size): the frames due are matted again by ``candidate``."""
        for index in self.due(len(rgb_batch)):
            self.check(rgb_batch[index], candidate.run(rgb_batch[index:index + 1])[0])

    def due(self, frames: int) -> list[int]:
        """Which of the run's next ``frames`` frames (indices into them) to spot-check."""
        now = time.monotonic()
        if self._spot_started is None:
            self._spot_started = now
        chosen = []
        for index in range(frames):
            self._since_check += 1
            affordable = self._spot_seconds <= SPOT_CHECK_BUDGET * (now - self._spot_started)
            if self._since_check >= SPOT_CHECK_EVERY and affordable:
                chosen.append(index)
                self._since_check = 0
        return chosen

    def check(self, rgb: np.ndarray, candidate_mask: np.ndarray) -> None:
        """Spot-check one frame (uint8 [320,320,3]) and its reduced mask [320,320]; raises
        GuardTripped when the checked frames fall below the gate."""
        started = time.monotonic()
        self._record(rgb, candidate_mask)
        self._spot_seconds += time.monotonic() - started
        accuracy = self.accuracy()
        if (not self.force and self.checked_frames >= MIN_SPOT_FRAMES and accuracy is not None
                and not accuracy.passes):
            raise GuardTripped(f"spot checks against FP32 fell to {self.line()}, below {GATE}")

    @property
    def checked_frames(self) -> int:
        return self._tally.frames

    def accuracy(self) -> Accuracy | None:
        """The reduced masks against FP32 over every frame checked so far."""
        return self._tally.accuracy()

    def line(self) -> str:
        accuracy = self.accuracy()
        return "no frames checked" if accuracy is None else \
            check_line(accuracy, self.checked_frames, self.low_confidence_frames)

    def _record(self, rgb: np.ndarray, candidate_mask: np.ndarray) -> None:
        masks, peaks = self.reference.run_with_peaks(rgb[None])
        self._tally.add(masks[0], candidate_mask)
        self.low_confidence_frames += int(peaks[0] < LOW_CONFIDENCE_PEAK)


def check_line(accuracy: Accuracy, frames: int, low_confidence_frames: int) -> str:
    """The checked frames' accuracy, and how many of them were low-confidence."""
    note = f"; {low_confidence_frames} of them low-confidence (top probability below {LOW_CONFIDENCE_PEAK})" \
        if low_confidence_frames else ""
    return accuracy.line(frames) + note


def spread_frame_numbers(frame_count: int, wanted: int = PRECHECK_FRAMES) -> list[int]:
    """``wanted`` frame numbers spread evenly over the clip, each in the middle of its stretch."""
    count = min(wanted, frame_count)
    return sorted({int((index + 0.5) * frame_count / count) for index in range(count)})

