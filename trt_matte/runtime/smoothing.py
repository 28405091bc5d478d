"""Temporal smoothing of the matte (``--smooth K``): a centred, motion-gated median.

Each output mask is, per pixel, the median of that pixel over the 2K+1 masks from K
frames before to K frames after it; near moving matte the window shrinks to +-1 frame
(K >= 2) or to the frame itself (K = 1). Why a median:

* U²-Net's flicker in still parts of a picture is mostly short, large swings (a patch
  of shoulder or background popping into the matte for a frame or two), not small
  jitter. A window of 2K+1 frames removes every swing lasting K frames or fewer,
  whatever its size. Averaging only the pixels that change little (the usual motion
  gate on amplitude) leaves such flicker alone: on the carphone clip that took out
  16-18% of it, the median 38% at K=1.
* No lag: the window is centred (K frames of lookahead). Where a pixel rises or falls
  monotonically through the window (an edge moving across it, a scene cut) the median
  is exactly the centre frame's value, so steady motion comes out unchanged.
* Every output value is one of that pixel's inputs: no new grey levels and no ghosts
  (a mean blends an edge's old and new positions).

What a median also removes is real matte that covers a pixel for K frames or fewer:
the flanks of an object moving fast along them, thin fast parts, the tip of a fast
reversal. The motion gate limits that: where, within MOTION_RADIUS pixels (at the
model's 320x320), the mask changes by MOTION_STEP levels or more between the window's
first and last frame (a net change: a flicker pop comes back, motion does not), the
short window is used. A reversal looks the same at both window ends, so the gate
misses it: a disk reversing at 20 px a frame loses ~1 px of its tip at K=2 and ~5 px
at K=3 (tests/test_runtime_smoothing.py). K=1 is the safe default.

Streaming: ``push`` takes uint8 masks [n,H,W] in frame order and returns the smoothed
masks that are ready, K fewer in total than pushed until ``flush`` returns the rest;
over a whole clip exactly as many masks come out as went in, in order. The first and
last frames are repeated K times beyond the clip's ends: no frame is dropped, the very
first and last masks come out unchanged (K+1 of their window's 2K+1 values are their
own) and their neighbours are smoothed less. (Mirroring the clip instead would smooth
the ends too, but would shift a moving edge there by a frame.) State is the last 2K
frames, as copies: ``push`` keeps no reference to its argument, whose buffer the GPU
path reuses. The work runs in chunks of about CHUNK_PIXELS pixels per array, so memory
is O(K) frames beyond a copy of the batch. K=0 is the identity. Deterministic.

The median is a pruned sorting network of ``np.minimum``/``np.maximum`` on uint8
(exact, no casts): 4 array operations for K=1, 14 for K=2, 30 for K=3; the gate is
found on a grid of about 320x320 points (every 3rd row and 6th column at 1080p) and
skipped where nothing moves. CPU time per frame, one thread, batches of 8-16, on this
project's 2-core box while other jobs shared it (the spread is run-to-run; real mattes
and random masks, where the gate is on everywhere, cost about the same):

    K   320x320         1920x1080
    1   0.2-0.7 ms      3-4 ms
    2   0.3-0.7 ms      6-8 ms
    3   0.4-1.1 ms      9-11 ms

Nothing next to ONNX Runtime on the CPU path (~250 ms a frame for u2netp). The GPU
path hands over full-size masks and this runs on the host in the writer thread,
beside the encoder: at 1080p K=1 costs ~3.5 ms a frame (~280 fps on one core), K=3
~10 ms (~100 fps), which could cap a fast engine. There is no GPU implementation yet:
the same min/max network and gate are a few lines of CuPy or one small CUDA kernel on
the engine's stream; or the GPU path could smooth the 320x320 masks before upsizing
them (median and upsizing nearly commute).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..models import MODEL_SIZE

# The recommended ``--smooth`` strength. On the carphone clip (60 frames, 320x320) flicker
# in still regions falls by 37% (K=1), 52% (K=2), 61% (K=3) at a mean IoU against the
# unsmoothed matte of 0.983, 0.973, 0.968: K=1 keeps a margin on both bounds (>= 30%,
# >= 0.97) and clips nothing of a fast reversal; see tests/test_runtime_smoothing.py.
DEFAULT_STRENGTH = 1
# K=2 already falls below IoU 0.97 against the unsmoothed matte over carphone; K=3 clips
# about 5 px off a fast reversal. Stronger settings are not offered.
MAX_STRENGTH = 2
# Pixels per wire array in one step of the network: 4 Mpx is two 1080p frames or 40
# frames at 320x320, so the 2K+1 working arrays stay within a few tens of MB.
CHUNK_PIXELS = 1 << 22

# The motion gate: where the mask changes by MOTION_STEP levels or more between the
# window's first and last frame within MOTION_RADIUS pixels (at 320x320), the window
# shrinks to +-1 frame (K >= 2) or to the frame itself (K = 1).
MOTION_STEP = 128
MOTION_RADIUS = 6

# A comparator (low, high, keep_low, keep_high): wire ``low`` gets the minimum (if kept),
# wire ``high`` the maximum (if kept).
_Comparator = tuple[int, int, bool, bool]


@lru_cache(maxsize=None)
def median_network(size: int) -> tuple[_Comparator, ...]:
    """Comparators that leave the median of ``size`` (odd) wires on wire ``size // 2``.

    Odd-even transposition sort (a sorting network for any size) pruned backwards
    from the middle wire: comparators whose outputs nothing reads are dropped, and of
    the others only the min or max that is read is computed.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"a median network needs an odd size, not {size}")
    full = [(i, i + 1) for round_ in range(size) for i in range(round_ % 2, size - 1, 2)]
    needed = {size // 2}
    pruned: list[_Comparator] = []
    for low, high in reversed(full):
        keep_low, keep_high = low in needed, high in needed
        if keep_low or keep_high:
            pruned.append((low, high, keep_low, keep_high))
            needed |= {low, high}
    return tuple(reversed(pruned))


def _median_of(wires: list[np.ndarray]) -> np.ndarray:
    """Per-pixel median of an odd number of equally shaped uint8 arrays (not modified)."""
    wires = list(wires)
    for low, high, keep_low, keep_high in median_network(len(wires)):
        a, b = wires[low], wires[high]
        if keep_low and keep_high:
            wires[low], wires[high] = np.minimum(a, b), np.maximum(a, b)
        elif keep_low:
            wires[low] = np.minimum(a, b)
        else:
            wires[high] = np.maximum(a, b)
    return wires[len(wires) // 2]


def temporal_median(frames: np.ndarray, radius: int) -> np.ndarray:
    """Centred median over ``2 * radius + 1`` frames of a uint8 stack [m,H,W]: returns the
    ``m - 2 * radius`` outputs for centres ``radius .. m - radius - 1`` (no padding)."""
    return _windowed(frames, radius, _median_of)


def smooth_window(frames: np.ndarray, radius: int) -> np.ndarray:
    """The motion-gated median (see the module doc) for centres ``radius .. m - radius - 1``
    of a uint8 stack [m,H,W]: ``m - 2 * radius`` outputs, no padding."""
    def gated(wires: list[np.ndarray]) -> np.ndarray:
        out = _median_of(wires)
        grid = _motion_grid(wires[0], wires[-1])
        if grid.any():  # a still chunk skips the full-size mask and the masked copy
            near = wires[1] if radius == 1 else _median_of(wires[radius - 1:radius + 2])
            np.copyto(out, near, where=_full_size(grid, out.shape[1:]))
        return out
    return _windowed(frames, radius, gated)


def near_motion(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """bool [n,H,W]: pixels within MOTION_RADIUS (in 320x320 model pixels) of a pixel whose
    mask changes by MOTION_STEP or more from ``before`` to ``after`` (the window's ends)."""
    return _full_size(_motion_grid(before, after), before.shape[1:])


def _grid_steps(height: int, width: int) -> tuple[int, int]:
    return max(1, round(height / MODEL_SIZE)), max(1, round(width / MODEL_SIZE))


def _motion_grid(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """``near_motion`` on a grid of about 320x320 points: every pixel at the model's size,
    every 3rd row and 6th column at 1920x1080, so the cost stays small at full size."""
    step_y, step_x = _grid_steps(*before.shape[1:])
    coarse_before, coarse_after = before[:, ::step_y, ::step_x], after[:, ::step_y, ::step_x]
    # |after - before| in uint8 (max - min cannot wrap): an order faster than via int16.
    change = np.maximum(coarse_before, coarse_after) - np.minimum(coarse_before, coarse_after)
    stepped = change >= MOTION_STEP
    return _grow(_grow(stepped, MOTION_RADIUS, 1), MOTION_RADIUS, 2)


def _full_size(grid: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    step_y, step_x = _grid_steps(*shape)
    if step_y > 1:
        grid = np.repeat(grid, step_y, axis=1)
    if step_x > 1:
        grid = np.repeat(grid, step_x, axis=2)
    return grid[:, :shape[0], :shape[1]]


def _grow(marks: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Each element ORed with its ``radius`` neighbours on both sides along ``axis``
    (a 1-D dilation by doubling: log2(2 * radius + 1) ORs of shifted views)."""
    if radius == 0:
        return marks
    length, window = marks.shape[axis], 2 * radius + 1
    padding = [(0, 0)] * marks.ndim
    padding[axis] = (radius, radius)
    covered, width = np.pad(marks, padding), 1

    def part(array: np.ndarray, begin: int, size: int) -> np.ndarray:
        index = [slice(None)] * array.ndim
        index[axis] = slice(begin, begin + size)
        return array[tuple(index)]

    # Invariant: covered[i] is the OR of padded[i : i + width].
    while width * 2 <= window:
        size = covered.shape[axis] - width
        covered, width = part(covered, 0, size) | part(covered, width, size), width * 2
    return part(covered, 0, length) | part(covered, window - width, length)


def _windowed(frames: np.ndarray, radius: int, combine) -> np.ndarray:
    """``combine(wires)`` for every centre, in chunks of about CHUNK_PIXELS per wire;
    wire j holds frame (centre - radius + j) of every centre of the chunk."""
    count = len(frames) - 2 * radius
    height, width = frames.shape[1:]
    out = np.empty((max(count, 0), height, width), np.uint8)
    chunk = max(1, CHUNK_PIXELS // max(1, height * width))
    for start in range(0, max(count, 0), chunk):
        stop = min(start + chunk, count)
        out[start:stop] = combine([frames[start + j: stop + j] for j in range(2 * radius + 1)])
    return out


class MaskSmoother:
    """Streaming centred, motion-gated temporal median of uint8 masks (see the module doc).

    ``push(batch)`` returns the masks that are ready (possibly none), ``flush()`` the
    last ones; together they return every pushed mask once, in order. After ``flush``
    the smoother is empty and can take another clip.
    """

    def __init__(self, strength: int):
        strength = int(strength)
        if strength < 0:
            raise ValueError(f"the smoothing strength must be 0 (off) or more, not {strength}")
        self.strength = strength
        # The K frames before the next centre to emit (the first frame repeated at the
        # start of a clip), then the frames pushed but not emitted yet (K at most).
        self._context: np.ndarray | None = None
        self._frame_shape: tuple[int, ...] = (0, 0)

    @property
    def pending(self) -> int:
        """Masks pushed but not returned yet (K at most): what ``flush`` will return."""
        return 0 if self._context is None else len(self._context) - self.strength

    def push(self, batch: np.ndarray) -> np.ndarray:
        batch = self._checked(batch)
        if self.strength == 0:
            return batch
        if len(batch) == 0:
            return np.empty((0, *batch.shape[1:]), np.uint8)
        if self._context is None:
            self._context = np.repeat(batch[:1], self.strength, axis=0)
        return self._emit(np.concatenate([self._context, batch]))

    def flush(self) -> np.ndarray:
        """The masks still held back, smoothed as if the last frame were repeated K times."""
        if self._context is None:
            return np.empty((0, *self._frame_shape), np.uint8)
        context, self._context = self._context, None
        tail = np.repeat(context[-1:], self.strength, axis=0)
        return smooth_window(np.concatenate([context, tail]), self.strength)

    def _emit(self, stream: np.ndarray) -> np.ndarray:
        ready = smooth_window(stream, self.strength)
        # Keep only what later centres need, as a copy (not a view of this batch's stream).
        self._context = stream[len(ready):].copy()
        return ready

    def _checked(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if batch.dtype != np.uint8 or batch.ndim != 3:
            raise ValueError(f"masks must be uint8 [n,H,W], not {batch.dtype} {list(batch.shape)}")
        if self._context is not None and batch.shape[1:] != self._context.shape[1:]:
            raise ValueError(f"mask size changed from {list(self._context.shape[1:])} to {list(batch.shape[1:])}")
        self._frame_shape = batch.shape[1:]
        return batch


def smooth_all(masks: np.ndarray, strength: int) -> np.ndarray:
    """The whole-clip equivalent of pushing ``masks`` in one batch and flushing."""
    smoother = MaskSmoother(strength)
    return np.concatenate([smoother.push(masks), smoother.flush()])
