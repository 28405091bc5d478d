"""CPU milliseconds per frame of ``--smooth K`` at the model's size and at 1080p.

Random masks keep the motion gate on everywhere: the worst case. The numbers in
``trt_matte/runtime/smoothing.py``'s docstring come from this script; a timing belongs
here rather than in the test suite, whose machines vary.

    python scripts/bench_smoothing.py
"""
from __future__ import annotations

import time

import numpy as np

from trt_matte.runtime.smoothing import MAX_STRENGTH, MaskSmoother

SIZES = ((320, 320, 16), (1080, 1920, 8))  # height, width, batch
REPEATS = 3


def cost_ms(height: int, width: int, batch: int, strength: int) -> float:
    masks = np.random.default_rng(0).integers(0, 256, (batch, height, width), dtype=np.uint8)
    smoother = MaskSmoother(strength)
    smoother.push(masks)  # fills the lookahead: later pushes run the whole network
    started = time.process_time()
    for _ in range(REPEATS):
        smoother.push(masks)
    return (time.process_time() - started) / (REPEATS * batch) * 1e3


def main() -> None:
    for height, width, batch in SIZES:
        for strength in range(1, MAX_STRENGTH + 2):
            print(f"{width}x{height} K={strength}: {cost_ms(height, width, batch, strength):.2f} ms/frame")


if __name__ == "__main__":
    main()
