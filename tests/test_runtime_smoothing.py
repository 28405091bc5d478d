"""Temporal smoothing (``--smooth K``): exact streaming invariants, flicker removed and
no lag on synthetic masks, and the flicker measure on the real carphone clip.

Flicker measure: the mean absolute frame-to-frame change of the mask (0-255 levels)
over static regions, i.e. over the pixels where the source picture (RGB at 320x320)
changes by less than STILL_RGB levels in every channel between the two frames, within
STILL_RADIUS pixels around (a pixel next to something moving may rightly change
matte: U²-Net looks at a neighbourhood). On a still pixel the matte should not
change at all, so whatever changes there is flicker, mask boundaries included.
"""
from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from conftest import decode_rgb, mask_iou
from trt_matte.runtime.smoothing import (DEFAULT_STRENGTH, MOTION_RADIUS, MOTION_STEP, MaskSmoother, median_network,
                                         near_motion, smooth_all, temporal_median)

SIZE = 320
STILL_RGB = 8
STILL_RADIUS = 2
CARPHONE_FRAMES = 60
RADIUS = 40.0


def _padded_median(masks: np.ndarray, strength: int) -> np.ndarray:
    """The plain reference: np.median over a centred window, clip ends repeated."""
    padded = np.pad(masks, [(strength, strength), (0, 0), (0, 0)], mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * strength + 1, axis=0)
    return np.median(windows, axis=-1).astype(np.uint8)


def _reference(masks: np.ndarray, strength: int) -> np.ndarray:
    """The motion-gated median written plainly (frames up to 480 px, where the motion
    grid is every pixel): near a net change of the window, a +-1 window (or none)."""
    padded = np.pad(masks, [(strength, strength), (0, 0), (0, 0)], mode="edge").astype(np.int16)
    stepped = np.abs(padded[2 * strength:] - padded[:len(masks)]) >= MOTION_STEP
    grown = np.pad(stepped, [(0, 0), (MOTION_RADIUS, MOTION_RADIUS), (MOTION_RADIUS, MOTION_RADIUS)])
    height, width = masks.shape[1:]
    moving = np.zeros_like(stepped)
    for dy in range(2 * MOTION_RADIUS + 1):
        for dx in range(2 * MOTION_RADIUS + 1):
            moving |= grown[:, dy:dy + height, dx:dx + width]
    near = masks if strength == 1 else _padded_median(masks, 1)
    return np.where(moving, near, _padded_median(masks, strength))


def _stream(masks: np.ndarray, strength: int, sizes: list[int]) -> tuple[np.ndarray, list[int], list[int]]:
    """Push ``masks`` in batches of ``sizes`` (cycled, the last one short), then flush:
    the output, the count each push and the flush returned, and the batch sizes pushed."""
    smoother, parts, pushed = MaskSmoother(strength), [], []
    while sum(pushed) < len(masks):
        batch = masks[sum(pushed):sum(pushed) + sizes[len(pushed) % len(sizes)]]
        parts.append(smoother.push(batch))
        pushed.append(len(batch))
    parts.append(smoother.flush())
    assert smoother.pending == 0
    return np.concatenate(parts), [len(part) for part in parts], pushed


def _random_masks(frames: int, seed: int = 0, size: tuple[int, int] = (40, 64)) -> np.ndarray:
    """A still random picture with two 3x3 patches of random values popping up each frame
    (flicker) and a bright 6x6 block moving 3 px a frame (motion): both windows get used."""
    rng = np.random.default_rng(seed)
    masks = np.repeat(rng.integers(0, 256, (1, *size), dtype=np.uint8), frames, axis=0)
    for index, frame in enumerate(masks):
        for y, x in rng.integers(0, [size[0] - 3, size[1] - 3], (2, 2)):
            frame[y:y + 3, x:x + 3] = rng.integers(0, 256, (3, 3))
        x = (3 * index) % (size[1] - 6)
        frame[12:18, x:x + 6] = 255
    return masks


def test_the_random_masks_use_both_windows():
    masks = _random_masks(23)
    for strength in (1, 2, 3):
        moving = near_motion(np.pad(masks, [(strength, 0), (0, 0), (0, 0)], mode="edge")[:len(masks)],
                             np.pad(masks, [(0, strength), (0, 0), (0, 0)], mode="edge")[strength:])
        assert 0.05 < moving.mean() < 0.95
        out = _reference(masks, strength)
        assert (out != masks).mean() > 0.002 and (out != _padded_median(masks, strength)).any()


@pytest.mark.parametrize("strength", [1, 2, 3])
@pytest.mark.parametrize("sizes", [[1], [3], [7], [3, 7, 1], [7, 7, 7, 2]], ids=str)
def test_streaming_keeps_count_order_and_matches_the_reference(strength, sizes):
    masks = _random_masks(23)
    out, counts, pushed = _stream(masks, strength, sizes)
    assert out.dtype == np.uint8 and out.shape == masks.shape
    np.testing.assert_array_equal(out, _reference(masks, strength))
    np.testing.assert_array_equal(out, smooth_all(masks, strength))
    # Every push returns each frame that has its K frames of lookahead; flush the last K.
    ready = np.maximum(0, np.cumsum(pushed) - strength)
    assert counts[:-1] == list(np.diff(ready, prepend=0)) and counts[-1] == strength
    # Frames that only rise keep their order and values exactly: no frame moves.
    ramp = np.repeat(np.arange(23, dtype=np.uint8)[:, None, None] * 10, 4, axis=1).repeat(3, axis=2)
    np.testing.assert_array_equal(_stream(ramp, strength, sizes)[0], ramp)


@pytest.mark.parametrize("strength", [1, 2, 3])
@pytest.mark.parametrize("frames", [1, 2, 3, 4, 7])
def test_clips_shorter_than_the_window(strength, frames):
    masks = _random_masks(frames, seed=frames)
    out, counts, _ = _stream(masks, strength, [1])
    assert sum(counts) == frames and counts[-1] == min(strength, frames)
    np.testing.assert_array_equal(out, _reference(masks, strength))


def test_flush_empties_the_smoother_for_the_next_clip():
    smoother = MaskSmoother(2)
    assert len(smoother.flush()) == 0
    first, second = _random_masks(5, seed=1), _random_masks(6, seed=2)
    assert len(smoother.push(first)) == 3 and smoother.pending == 2
    assert len(smoother.flush()) == 2 and smoother.pending == 0
    assert smoother.flush().shape == (0, *first.shape[1:])
    out = np.concatenate([smoother.push(second), smoother.flush()])
    np.testing.assert_array_equal(out, _reference(second, 2))  # nothing of the first clip leaks in


def test_strength_zero_is_the_identity():
    smoother, masks = MaskSmoother(0), _random_masks(7)
    batch = masks[:3]
    assert smoother.push(batch) is batch
    np.testing.assert_array_equal(smooth_all(masks, 0), masks)
    assert len(smoother.flush()) == 0 and smoother.pending == 0


def test_push_keeps_no_reference_to_its_argument():
    """The GPU path hands over a view of a pinned buffer that it refills later."""
    masks = _random_masks(12)
    smoother, buffer, parts = MaskSmoother(2), np.empty((3, *masks.shape[1:]), np.uint8), []
    for start in range(0, 12, 3):
        buffer[:] = masks[start:start + 3]
        parts.append(smoother.push(buffer).copy())
        buffer[:] = 0
    parts.append(smoother.flush())
    np.testing.assert_array_equal(np.concatenate(parts), _reference(masks, 2))


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        MaskSmoother(-1)
    smoother = MaskSmoother(1)
    with pytest.raises(ValueError):
        smoother.push(np.zeros((2, 4, 4), np.float32))
    with pytest.raises(ValueError):
        smoother.push(np.zeros((4, 4), np.uint8))
    smoother.push(np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError):
        smoother.push(np.zeros((2, 4, 5), np.uint8))


def test_median_network_is_a_median_for_every_window():
    """0-1 principle: a comparator network selecting the median of every 0/1 input does so for all inputs."""
    for strength in (1, 2, 3, 4):
        width = 2 * strength + 1
        bits = (np.arange(2 ** width)[:, None] >> np.arange(width)) & 1  # every 0/1 window
        frames = (bits.T * 255).astype(np.uint8)[:, :, None]  # [width, windows, 1]
        np.testing.assert_array_equal(temporal_median(frames, strength)[0, :, 0], (bits.sum(1) > strength) * 255)
    # Pruning keeps only what reaches the middle wire: from 5 wires on, fewer comparators
    # than the n(n-1)/2 of sorting all of them.
    assert len(median_network(3)) <= 3
    for width in (5, 7):
        assert len(median_network(width)) < width * (width - 1) // 2


# ---- synthetic flicker and motion -------------------------------------------------------------

def _disk(centres: np.ndarray, radius: float = RADIUS) -> np.ndarray:
    """Soft disks (a 2-pixel ramp at the edge), one per centre (x, y), at SIZE x SIZE."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    dist = np.hypot(xs[None] - centres[:, 0, None, None], ys[None] - centres[:, 1, None, None])
    return (np.clip(radius + 1 - dist, 0, 2) / 2 * 255).round().astype(np.uint8)


def _flicker(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """U²-Net-like flicker: 8x8 patches popping in or out for one frame (never where one
    popped the frame before, so each lasts one frame), plus small jitter."""
    noisy = masks.astype(np.int16) + rng.normal(0, 3, masks.shape).round().astype(np.int16)
    before: list[np.ndarray] = []
    for frame in noisy:
        now: list[np.ndarray] = []
        while len(now) < 12:
            corner = rng.integers(0, SIZE - 8, 2)
            if all(np.abs(corner - other).max() >= 8 for other in before):
                now.append(corner)
                y, x = corner
                frame[y:y + 8, x:x + 8] = 255 - frame[y:y + 8, x:x + 8]
        before = now
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _change(masks: np.ndarray) -> float:
    return float(np.abs(np.diff(masks.astype(np.int16), axis=0)).mean())


def _centroids(masks: np.ndarray, near: np.ndarray | None = None) -> np.ndarray:
    """Centres (x, y) of the masks' foregrounds; with ``near``, of the foreground within
    RADIUS + 12 px of those centres only (flicker far away would move the centroid)."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    fg = masks >= 128
    if near is not None:
        fg &= np.hypot(xs[None] - near[:, 0, None, None], ys[None] - near[:, 1, None, None]) < RADIUS + 12
    return np.stack([(fg * xs).sum((1, 2)) / fg.sum((1, 2)), (fg * ys).sum((1, 2)) / fg.sum((1, 2))], 1)


def test_static_flicker_is_removed():
    rng = np.random.default_rng(1)
    truth = _disk(np.tile([[160.0, 160.0]], (30, 1)))
    noisy = _flicker(truth, rng)
    for strength in (1, 2, 3):
        smooth = smooth_all(noisy, strength)
        assert _change(smooth) < 0.3 * _change(noisy), strength
        # The clip's first and last masks are left as they are (their window is mostly themselves).
        np.testing.assert_array_equal(smooth[[0, -1]], noisy[[0, -1]])
        assert np.mean([mask_iou(s, t) for s, t in zip(smooth[1:-1], truth[1:-1])]) > 0.99


# Worst centroid error (px) allowed per strength. A steady motion comes out exactly. At a
# fast reversal (20 px a frame here) the window is symmetric in time, so the motion gate
# cannot see it, and the tip the disk covers for K frames or fewer is clipped like
# flicker: within a pixel for K=1 and K=2, ~5 px for K=3 (plain median: 0.9, 3.2, 6.7).
CENTROID_ERROR = {"linear": {1: 1.0, 2: 1.0, 3: 1.0}, "back_and_forth": {1: 1.0, 2: 1.5, 3: 6.0}}


def _mean_iou(masks: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([mask_iou(mask, true) for mask, true in zip(masks, truth)]))


@pytest.mark.parametrize("path", ["linear", "back_and_forth"])
def test_moving_edge_does_not_lag(path):
    frames = np.arange(30, dtype=np.float32)
    if path == "linear":
        centres = np.stack([60 + 6 * frames, 100 + 2 * frames], 1)  # 6.3 px a frame
    else:
        centres = np.stack([160 + 80 * np.sin(frames / 4), 160 + 30 * np.cos(frames / 5)], 1)
    truth = _disk(centres)
    noisy = _flicker(truth, np.random.default_rng(2))
    for strength in (1, 2, 3):
        bound = CENTROID_ERROR[path][strength]
        # Without flicker, and with it around the disk (the clip's end masks stay raw: see
        # above; the gate keeps flicker right next to the moving edge).
        clean = smooth_all(truth, strength)
        assert np.abs(_centroids(clean) - centres).max() <= bound, strength
        smooth = smooth_all(noisy, strength)
        assert np.abs(_centroids(smooth[1:-1], centres[1:-1]) - centres[1:-1]).max() <= bound + 0.5, strength
        # Never worse than the unsmoothed matte against the truth; much better up to K=2.
        assert _mean_iou(smooth, truth) >= _mean_iou(noisy, truth) + (0.08 if strength <= 2 else 0.0)
        # The motion gate keeps more of the moving disk than the plain median does.
        assert _mean_iou(clean, truth) >= _mean_iou(_padded_median(truth, strength), truth)
    # The measure sees lag: a causal exponential filter (alpha 0.5) trails by pixels.
    ema = np.empty_like(truth, dtype=np.float32)
    ema[0] = truth[0]
    for index in range(1, len(truth)):
        ema[index] = 0.5 * ema[index - 1] + 0.5 * truth[index]
    assert np.abs(_centroids(ema.round().astype(np.uint8)) - centres).max() > 2.0


def test_full_size_masks_use_a_coarse_motion_grid():
    """At full size (here 650x970: every 2nd row, 3rd column, sizes not multiples) the
    gate still covers the moving edge and the stream matches the one-shot result."""
    frames = np.arange(12, dtype=np.float32)
    small = _flicker(_disk(np.stack([60 + 12 * frames, 160 + 0 * frames], 1)), np.random.default_rng(3))
    rows, cols = np.arange(650) * SIZE // 650, np.arange(970) * SIZE // 970
    big = small[:, rows][:, :, cols]
    moving = near_motion(big[:-2], big[2:])
    assert moving.shape == (10, 650, 970)
    assert 0.02 < moving.mean() < 0.5
    for strength in (1, 2):
        out = _stream(big, strength, [3, 4])[0]
        np.testing.assert_array_equal(out, smooth_all(big, strength))
        # Nearest upsizing commutes with a per-pixel median; the gate differs only by the grid.
        agree = (out == smooth_all(small, strength)[:, rows][:, :, cols]).mean()
        assert agree > 0.995, strength


# ---- the real carphone clip ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def carphone_run(ffmpeg_exe, carphone_path, cpu_backend):
    """The first 60 frames at 320x320 (Pillow Lanczos) and their u2netp masks, once per module."""
    frames = decode_rgb(ffmpeg_exe, carphone_path, CARPHONE_FRAMES)
    pictures = np.stack([np.asarray(Image.fromarray(frame).resize((SIZE, SIZE), Image.LANCZOS)) for frame in frames])
    masks = np.concatenate([cpu_backend.run(picture[None]) for picture in pictures])
    assert masks.shape == (CARPHONE_FRAMES, SIZE, SIZE) and masks.dtype == np.uint8
    return pictures, masks


def still_pixels(pictures: np.ndarray) -> np.ndarray:
    """[n-1,H,W]: True where frames t and t+1 differ by < STILL_RGB in every channel
    everywhere within STILL_RADIUS pixels."""
    moving = np.abs(np.diff(pictures.astype(np.int16), axis=0)).max(-1) >= STILL_RGB
    padded = np.pad(moving, [(0, 0), (STILL_RADIUS, STILL_RADIUS), (STILL_RADIUS, STILL_RADIUS)])
    near = np.zeros_like(moving)
    for dy in range(2 * STILL_RADIUS + 1):
        for dx in range(2 * STILL_RADIUS + 1):
            near |= padded[:, dy:dy + moving.shape[1], dx:dx + moving.shape[2]]
    return ~near


def flicker(masks: np.ndarray, still: np.ndarray) -> float:
    return float(np.abs(np.diff(masks.astype(np.int16), axis=0))[still].mean())


def test_smoothing_lowers_flicker_on_a_real_clip(carphone_run, capsys):
    pictures, masks = carphone_run
    still = still_pixels(pictures)
    assert 0.3 < still.mean() < 0.9  # a real mix of still and moving picture
    raw = flicker(masks, still)
    report = {}
    for strength in (1, 2, 3):
        smooth = _stream(masks, strength, [4, 4, 1])[0]  # as the pipeline feeds it
        ious = [mask_iou(s, m) for s, m in zip(smooth, masks)]
        report[strength] = (1 - flicker(smooth, still) / raw, float(np.mean(ious)), float(np.min(ious)))
    with capsys.disabled():
        print(f"\ncarphone {CARPHONE_FRAMES} frames, still pixels {still.mean():.1%}, raw flicker {raw:.2f}/255")
        for strength, (drop, iou, worst) in report.items():
            print(f"  K={strength}: flicker -{drop:.1%}, IoU vs unsmoothed mean {iou:.4f} min {worst:.4f}")
    drop, iou, _ = report[DEFAULT_STRENGTH]
    assert drop >= 0.30 and iou >= 0.97
    assert report[1][0] < report[2][0] < report[3][0]  # stronger smooths more
