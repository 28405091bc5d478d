"""The writer pool of an images run: parallel, bounded, and a failed write stops the rest."""
from __future__ import annotations

import threading
import time

import pytest

from trt_matte.errors import MatteError
from trt_matte.runtime.image_jobs import OutputWriters


class _CountingBar:
    def __init__(self):
        self.n = 0

    def update(self, count: int = 1) -> None:
        self.n += count


def test_output_writers_run_in_parallel_with_bounded_images_in_flight():
    workers, started, lock = 3, [], threading.Lock()
    running = peak = 0

    def slow_write(index: int) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            started.append(index)
        time.sleep(0.02)
        with lock:
            running -= 1

    bar = _CountingBar()
    with OutputWriters(bar, workers) as writers:
        for index in range(20):
            writers.submit(slow_write, index)
            # Submitted but not finished: at most twice as many as there are threads.
            assert index + 1 - writers.written <= 2 * workers
    assert writers.written == bar.n == 20
    assert sorted(started) == list(range(20))
    assert peak == workers


def test_a_failed_write_is_raised_and_later_writes_are_dropped():
    written_paths = []

    def write(index: int) -> None:
        if index == 2:
            raise MatteError("cannot write x: disk full")
        time.sleep(0.01)
        written_paths.append(index)

    with pytest.raises(MatteError, match="disk full"):
        with OutputWriters(_CountingBar(), workers=1) as writers:
            for index in range(50):
                writers.submit(write, index)
    # The error surfaced while at most two more writes were queued behind the failed one.
    assert written_paths[:2] == [0, 1]
    assert max(written_paths) <= 4
