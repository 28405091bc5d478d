"""Mattes for a folder of still images, with rembg's numerics.

Per image, exactly rembg's recipe on the Python side: decode with Pillow, apply the
EXIF orientation, convert to RGB, resize to 320x320 with LANCZOS, run the matte graph,
resize the mask back to the oriented image size with LANCZOS. Decoding runs in a small
thread pool ahead of inference, and upsizing and PNG writing in another behind it
(Pillow and zlib release the GIL), with only a bounded number of images in flight.

With a GPU backend and DALI installed, dali_images.py decodes and resizes on the GPU
instead; it hands the files DALI cannot take back to the Pillow path here.
"""
from __future__ import annotations

import itertools
import os
import struct
import sys
import tempfile
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from ..build_engine.matte_graph import MODEL_SIZE
from ..engine import Backend
from ..errors import MatteError
from ..files import atomic_output

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
MASK_SUFFIX = ".png"
# Decoding big JPEGs is the slow part on the host; a few threads keep a GPU fed
# without holding many full-size images in memory at once.
DECODE_WORKERS = min(4, os.cpu_count() or 1)
# Encoding a PNG takes 16 ms for a 1080p mask and 73 ms for 12 MP, far longer than the
# GPU's share: writers run in threads (zlib and Pillow release the GIL), with at most
# twice as many images in flight as threads, so memory stays bounded (for 12 MP cutouts,
# mask and picture: 16 x 48 MB).
WRITE_WORKERS = min(8, os.cpu_count() or 1)
# 65535 / 255: maps 16-bit samples onto 0..255 (Pillow's own convert clips them at 255).
SIXTEEN_TO_EIGHT_BIT = 257
# What Pillow raises for files it cannot decode: unidentified or truncated files (OSError),
# corrupt headers (SyntaxError, struct.error), bad values (ValueError), oversized images.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)

T = TypeVar("T")


@dataclass(frozen=True)
class ImagesReport:
    processed: int  # outputs written
    skipped: int  # outputs that already existed (and overwrite was off)
    failed: list[tuple[Path, str]]  # inputs that produced no output, with the reason


@dataclass(frozen=True)
class _Job:
    source: Path
    target: Path


@dataclass(frozen=True)
class _Plan:
    jobs: list[_Job]
    skipped: int
    failed: list[tuple[Path, str]]


@dataclass(frozen=True)
class _Decoded:
    model_input: np.ndarray  # uint8 [320,320,3]
    size: tuple[int, int]  # (width, height) after EXIF orientation
    rgb: Image.Image | None  # the full oriented image, kept only for cutouts


def process_images(input_dir: Path, output_dir: Path | None, backend: Backend, *, recursive: bool = False,
                   cutout: bool = False, overwrite: bool = False, progress: bool = True) -> ImagesReport:
    """Write a mask (or, with ``cutout``, an RGBA cutout) PNG for every image in ``input_dir``.

    Outputs are named ``<stem>.png`` in ``output_dir`` (default: ``<input_dir>.masks`` beside
    it); with ``recursive`` the sub-folder structure is mirrored there, and an output folder
    inside ``input_dir`` is never read as input. Existing outputs are left alone (counted as
    skipped) unless ``overwrite``. When inputs share a stem (``a.jpg`` and ``a.png``), the
    first in sorted order gets the output and the others fail with a message naming it.
    Unreadable inputs are reported on stderr and in ``failed``; the rest still run.

    Raises MatteError when the input folder is missing or holds no images, or when the
    output folder cannot be created or written.
    """
    if not input_dir.exists():
        raise MatteError(f"input directory not found: {input_dir}")
    if not input_dir.is_dir():
        raise MatteError(f"{input_dir} is a file; 'trt-matte images' takes a folder of pictures")
    output_dir = default_output_dir(input_dir) if output_dir is None else output_dir
    if output_dir.resolve() == input_dir.resolve():
        raise MatteError(f"the output directory must differ from the input directory ({input_dir})")
    sources = find_images(input_dir, output_dir, recursive)
    if not sources:
        scope = "in or under" if recursive else "in"
        raise MatteError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) {scope} {input_dir}")
    _ensure_writable(output_dir)
    plan = _plan_outputs(sources, input_dir, output_dir, overwrite)
    failed = list(plan.failed)
    with tqdm(total=len(sources), unit="img", disable=not progress) as bar:
        for path, reason in plan.failed:
            _announce_failure(path, reason)
        bar.update(len(plan.failed) + plan.skipped)
        with OutputWriters(bar) as writers:
            _matte_all(plan.jobs, backend, cutout, failed, writers)
    return ImagesReport(processed=writers.written, skipped=plan.skipped, failed=failed)


def default_output_dir(input_dir: Path) -> Path:
    # abspath, not resolve: "photos/" and "." get a sibling by the name the user sees.
    absolute = Path(os.path.abspath(input_dir))
    return absolute.with_name(absolute.name + ".masks")


def find_images(input_dir: Path, output_dir: Path, recursive: bool) -> list[Path]:
    """Image files in sorted order (folder by folder), never looking inside ``output_dir``."""
    output_resolved = output_dir.resolve()
    found: list[Path] = []
    for folder, subfolders, filenames in os.walk(input_dir, onerror=_unreadable_folder):
        # os.walk descends into what is left in the list, in its order.
        subfolders[:] = sorted(name for name in subfolders
                               if recursive and Path(folder, name).resolve() != output_resolved)
        found.extend(Path(folder, name) for name in sorted(filenames)
                     if Path(name).suffix.lower() in IMAGE_SUFFIXES)
    return found


def _unreadable_folder(error: OSError) -> None:
    raise MatteError(f"cannot read directory {error.filename}: {error.strerror or error}")


def _ensure_writable(output_dir: Path) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise MatteError(f"output path exists and is not a directory: {output_dir}")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as exc:
        raise MatteError(f"cannot write to output directory {output_dir}: {exc.strerror or exc}") from None


def _plan_outputs(sources: list[Path], input_dir: Path, output_dir: Path, overwrite: bool) -> _Plan:
    """Pair sources with output paths; drop existing outputs and stem collisions."""
    jobs: list[_Job] = []
    skipped = 0
    failed: list[tuple[Path, str]] = []
    owner_of: dict[Path, Path] = {}
    source_set = set(sources)
    for source in sources:
        target = output_dir / source.relative_to(input_dir).with_suffix(MASK_SUFFIX)
        if target in owner_of:
            failed.append((source, f"same output name {target.name} as {owner_of[target]}; rename one of them"))
        elif target in source_set:
            # Only possible when the output folder nests inside the input tree.
            failed.append((source, f"its output {target} would overwrite an input image"))
        elif target.exists() and not overwrite:
            owner_of[target] = source
            skipped += 1
        else:
            owner_of[target] = source
            jobs.append(_Job(source, target))
    return _Plan(jobs, skipped, failed)


def _announce_failure(path: Path, reason: str) -> None:
    # tqdm.write keeps the line from tearing through the progress bar.
    tqdm.write(f"trt-matte: skipped {path}: {reason}", file=sys.stderr)


class OutputWriters:
    """Writes outputs on a few threads, oldest first, with a bounded number in flight.

    ``written`` counts finished writes; the bar advances as each finishes. A failed
    write (MatteError) is raised by a later ``submit`` or on leaving the ``with`` block;
    after an error, writes not yet started are dropped (each one is atomic anyway).
    """

    def __init__(self, bar: tqdm, workers: int = WRITE_WORKERS):
        self.bar = bar
        self.written = 0
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="trt-matte-write")
        self._in_flight: deque[Future[None]] = deque()
        self._limit = 2 * workers

    def submit(self, write: Callable[..., None], *args: object) -> None:
        self._in_flight.append(self._pool.submit(write, *args))
        while len(self._in_flight) > self._limit:
            self._finish_oldest()

    def _finish_oldest(self) -> None:
        self._in_flight.popleft().result()
        self.written += 1
        self.bar.update()

    def __enter__(self) -> OutputWriters:
        return self

    def __exit__(self, error_type: type | None, *_: object) -> None:
        try:
            while self._in_flight and error_type is None:
                self._finish_oldest()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _matte_all(jobs: list[_Job], backend: Backend, cutout: bool, failed: list[tuple[Path, str]],
               writers: OutputWriters) -> None:
    """GPU backends get DALI's decoding and resizing (dali_images.py); others the Pillow path."""
    if _decodes_with_dali(backend):
        from .dali_images import matte_jobs_with_dali
        matte_jobs_with_dali(jobs, backend, cutout, failed, writers)
    else:
        _matte_jobs(jobs, backend, cutout, failed, writers)


def _decodes_with_dali(backend: Backend) -> bool:
    if not backend.takes_device_batches:
        return False
    from .dali_video import dali_available  # imports DALI: only worth it with a GPU backend
    return dali_available()


def _matte_jobs(jobs: list[_Job], backend: Backend, cutout: bool, failed: list[tuple[Path, str]],
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
            masks = backend.run(np.stack([decoded.model_input for _, decoded in ready]))
            for (job, decoded), mask in zip(ready, masks):
                writers.submit(_write_output, job.target, mask, decoded)
    finally:
        # On Ctrl-C or an error, drop decodes that have not started instead of finishing them.
        pool.shutdown(wait=True, cancel_futures=True)


def _decode_ahead(pool: ThreadPoolExecutor, jobs: list[_Job], keep_rgb: bool,
                  lookahead: int) -> Iterator[tuple[_Job, Future[_Decoded]]]:
    """Yield jobs in order with their decode futures, at most ``lookahead`` submitted ahead."""
    pending: deque[tuple[_Job, Future[_Decoded]]] = deque()
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


def _collect_decoded(batch: list[tuple[_Job, Future[_Decoded]]], failed: list[tuple[Path, str]],
                     bar: tqdm) -> list[tuple[_Job, _Decoded]]:
    """Wait for a batch's decodes; report the unreadable ones and return the rest."""
    ready = []
    for job, future in batch:
        try:
            ready.append((job, future.result()))
        except DECODE_ERRORS as exc:
            reason = decode_failure_reason(job.source, exc)
            failed.append((job.source, reason))
            _announce_failure(job.source, reason)
            bar.update()
    return ready


def decode_failure_reason(path: Path, error: Exception) -> str:
    if isinstance(error, Image.UnidentifiedImageError):
        # Pillow's message repeats the path; say what it means instead.
        return "empty file" if _is_empty(path) else "not a readable image"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def decode_for_model(path: Path, keep_rgb: bool) -> _Decoded:
    """Fully decode (so truncation fails here), orient, and resize to the model input."""
    with Image.open(path) as image:
        image.load()
        rgb = to_rgb(ImageOps.exif_transpose(image))
    return _Decoded(model_input(rgb), rgb.size, rgb if keep_rgb else None)


def model_input(rgb: Image.Image) -> np.ndarray:
    """rembg's downscale: antialiased LANCZOS to uint8 [320,320,3]."""
    return np.asarray(rgb.resize((MODEL_SIZE, MODEL_SIZE), Image.Resampling.LANCZOS))


def mask_at_size(mask_320: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """rembg's upscale: the 320x320 mask to ``size`` (width, height) with LANCZOS."""
    return Image.fromarray(mask_320).resize(size, Image.Resampling.LANCZOS)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB as rembg's ``img.convert("RGB")`` gives it (alpha dropped, not composited),
    except that 16-bit and 32-bit integer gray is scaled to 8 bits instead of clipped at 255."""
    if image.mode == "I" or image.mode.startswith("I;16"):
        samples = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        gray = ((samples + SIXTEEN_TO_EIGHT_BIT // 2) // SIXTEEN_TO_EIGHT_BIT).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    return image.convert("RGB")


def _write_output(target: Path, mask_320: np.ndarray, decoded: _Decoded) -> None:
    write_matte(target, mask_at_size(mask_320, decoded.size), decoded.rgb)


def write_matte(target: Path, mask: Image.Image, rgb: Image.Image | None) -> None:
    """Write ``mask`` as a grayscale PNG, or with ``rgb`` (same size) as an RGBA cutout, atomically."""
    if rgb is not None:
        rgb.putalpha(mask)
        output = rgb
    else:
        output = mask
    try:
        with atomic_output(target) as temp_path:
            output.save(temp_path, format="PNG")
    except OSError as exc:
        raise MatteError(f"cannot write {target}: {exc.strerror or exc}") from None
