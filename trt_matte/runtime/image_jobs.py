"""The work of an images run: one job per picture, a pool of threads writing the
outputs, and the Pillow path that mattes a list of jobs on any backend.

The Pillow path is rembg's recipe on the Python side: decode with Pillow, apply the EXIF
orientation, convert to RGB, resize to 320x320 with LANCZOS, run the matte graph, resize
the mask back with LANCZOS. Decoding runs in a small thread pool ahead of inference, and
upsizing and PNG writing in another behind it (Pillow and zlib release the GIL), with
only a bounded number of images in flight.
"""
from __future__ import annotations

import itertools
import os
import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..engine.backend import Backend
from ..media.pictures import DECODE_ERRORS, Decoded, decode_failure_reason, decode_for_model, mask_at_size, write_matte

# Decoding big JPEGs is the slow part on the host; a few threads keep a GPU fed
# without holding many full-size images in memory at once.
DECODE_WORKERS = min(4, os.cpu_count() or 1)
# Encoding a PNG takes 16 ms for a 1080p mask and 73 ms for 12 MP, far longer than the
# GPU's share: writers run in threads (zlib and Pillow release the GIL), with at most
# twice as many images in flight as threads, so memory stays bounded (for 12 MP cutouts,
# mask and picture: 16 x 48 MB).
WRITE_WORKERS = min(8, os.cpu_count() or 1)

T = TypeVar("T")


@dataclass(frozen=True)
class ImageJob:
    source: Path
    target: Path


def report_failure(path: Path, reason: str) -> None:
    # tqdm.write keeps the line from tearing through the progress bar.
    tqdm.write(f"trt-matte: skipped {path}: {reason}", file=sys.stderr)


class OutputWriters:
    """Writes outputs on a few threads, oldest first, with a bounded number in flight.

    ``written`` counts finished writes and ``written_paths`` holds their targets (each
    write's first argument); the bar advances as each finishes. A failed
    write (MatteError) is raised by a later ``submit`` or on leaving the ``with`` block;
    after an error, writes not yet started are dropped (each one is atomic anyway).
    """

    def __init__(self, bar: tqdm, workers: int = WRITE_WORKERS):
        self.bar = bar
        self.written = 0
        self.written_paths: list[Path] = []
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="trt-matte-write")
        self._in_flight: deque[tuple[Path, Future[None]]] = deque()
        self._limit = 2 * workers

    def submit(self, write: Callable[..., None], target: Path, *args: object) -> None:
        self._in_flight.append((target, self._pool.submit(write, target, *args)))
        while len(self._in_flight) > self._limit:
            self._finish_oldest()

    def _finish_oldest(self) -> None:
        target, write = self._in_flight.popleft()
        write.result()
        self.written += 1
        self.written_paths.append(target)
        self.bar.update()

    def __enter__(self) -> OutputWriters:
        return self

    def __exit__(self, error_type: type | None, *_: object) -> None:
        try:
            while self._in_flight and error_type is None:
                self._finish_oldest()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def matte_jobs(jobs: list[ImageJob], backend: Backend, cutout: bool, failed: list[tuple[Path, str]],
                writers: OutputWriters) -> None:
    """Decode ahead in threads, run the backend a batch at a time, hand outputs to ``writers``."""
    pool = ThreadPoolExecutor(DECODE_WORKERS, thread_name_prefix="trt-matte-decode")
    try:
        # One batch queued behind the batch being inferred keeps the backend busy.
        decoding = _decode_ahead(pool, jobs, cutout, lookahead=backend.preferred_batch + DECODE_WORKERS)
        for batch in _batched(decoding, backend.preferred_batch):
            ready = _collect_decoded(batch, failed, writers.bar)
            if not ready:
                continue
            masks = host_masks(backend, np.stack([decoded.model_input for _, decoded in ready]),
                               [decoded.size for _, decoded in ready])
            for (job, decoded), mask in zip(ready, masks):
                writers.submit(_write_output, job.target, mask, decoded)
    finally:
        # On Ctrl-C or an error, drop decodes that have not started instead of finishing them.
        pool.shutdown(wait=True, cancel_futures=True)


def _decode_ahead(pool: ThreadPoolExecutor, jobs: list[ImageJob], keep_rgb: bool,
                  lookahead: int) -> Iterator[tuple[ImageJob, Future[Decoded]]]:
    """Yield jobs in order with their decode futures, at most ``lookahead`` submitted ahead."""
    pending: deque[tuple[ImageJob, Future[Decoded]]] = deque()
    for job in jobs:
        pending.append((job, pool.submit(decode_for_model, job.source, keep_rgb)))
        if len(pending) > lookahead:
            yield pending.popleft()
    while pending:
        yield pending.popleft()


def _batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _collect_decoded(batch: list[tuple[ImageJob, Future[Decoded]]], failed: list[tuple[Path, str]],
                     bar: tqdm) -> list[tuple[ImageJob, Decoded]]:
    """Wait for a batch's decodes; report the unreadable ones and return the rest."""
    ready = []
    for job, future in batch:
        try:
            ready.append((job, future.result()))
        except DECODE_ERRORS as exc:
            reason = decode_failure_reason(job.source, exc)
            failed.append((job.source, reason))
            report_failure(job.source, reason)
            bar.update()
    return ready


def host_masks(backend: Backend, rgb_batch: np.ndarray, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    """Each picture's mask for ``finished_mask``: 320x320 (the writer threads upsize it),
    or from a backend that shapes masks, finished at the picture's size (width, height)
    by the graph, one run per stretch of same-sized pictures, since shaping counts
    output pixels."""
    if not backend.shapes_masks:
        return list(backend.run(rgb_batch))
    masks: list[np.ndarray] = []
    for (width, height), same in itertools.groupby(sizes):
        count = len(list(same))
        masks.extend(backend.run_at_size(rgb_batch[len(masks):len(masks) + count], height, width))
    return masks


def finished_mask(mask: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """A ``host_masks`` mask at ``size`` (width, height): rembg's Lanczos upscale of a 320x320 one."""
    return Image.fromarray(mask) if mask.shape == (size[1], size[0]) else mask_at_size(mask, size)


def _write_output(target: Path, mask: np.ndarray, decoded: Decoded) -> None:
    write_matte(target, finished_mask(mask, decoded.size), decoded.rgb)


