"""Mattes for a folder of still images, with rembg's numerics: which pictures, where
their outputs go, which already exist, and which path mattes them.

With a GPU backend and DALI installed, ``gpu_images`` decodes and resizes on the GPU and
hands what DALI cannot take to the Pillow path (``image_jobs``); every other backend
takes the Pillow path directly.
"""
from __future__ import annotations

import errno
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from ..engine.backend import Backend
from ..errors import MatteError
from ..files import disk_full_error, remove_stale_temporaries
from ..media.dali import dali_available
from ..media.pictures import (DECODE_ERRORS, IMAGE_SUFFIXES, decode_for_model, default_output_dir, find_images,
                              folders_named_like_images)
from ..models import MODEL_SIZE
from .guard import PrecisionGuard, spread_frame_numbers
from .image_jobs import ImageJob, OutputWriters, matte_jobs, report_failure

MASK_SUFFIX = ".png"


@dataclass(frozen=True)
class ImagesReport:
    processed: int  # outputs written
    skipped: int  # outputs that already existed (and overwrite was off)
    failed: list[tuple[Path, str]]  # inputs that produced no output, with the reason


@dataclass(frozen=True)
class _Plan:
    jobs: list[ImageJob]
    skipped: int
    failed: list[tuple[Path, str]]


def process_images(input_dir: Path, output_dir: Path | None, backend: Backend, *, recursive: bool = False,
                   cutout: bool = False, overwrite: bool = False, progress: bool = True,
                   guard: PrecisionGuard | None = None,
                   announce: Callable[[str], None] = lambda message: None) -> ImagesReport:
    """Write a mask (or, with ``cutout``, an RGBA cutout) PNG for every image in ``input_dir``.

    Outputs are named ``<stem>.png`` in ``output_dir`` (default: ``<input_dir>.masks`` beside
    it); with ``recursive`` the sub-folder structure is mirrored there, and an output folder
    inside ``input_dir`` is never read as input. Existing outputs are left alone (counted as
    skipped) unless ``overwrite``. When inputs share a stem (``a.jpg`` and ``a.png``), the
    first in sorted order gets the output and the others fail with a message naming it.
    Unreadable inputs are reported on stderr and in ``failed``; the rest still run.
    ``guard`` checks a reduced-precision ``backend`` against FP32 on a few of the images
    first, and the folder runs in FP32 when it falls below the gate (``runtime.guard``).

    Raises MatteError when the input folder is missing or holds no images, or when the
    output folder cannot be created or written.
    """
    output_dir, sources = find_inputs(input_dir, output_dir, recursive)
    _ensure_writable(output_dir)
    plan = _plan_outputs(sources, input_dir, output_dir, overwrite)
    remove_stale_temporaries({output_dir, *(job.target.parent for job in plan.jobs)}, announce)
    failed = [*plan.failed, *((folder, "a folder named like an image, not an image")
                              for folder in folders_named_like_images(input_dir, output_dir, recursive))]
    for path, reason in failed:
        report_failure(path, reason)
    # Only the images that get work count: skipped ones would make the rate meaningless.
    with tqdm(total=len(plan.jobs), unit="img", disable=not progress or not plan.jobs) as bar:
        written = matte_image_jobs(plan.jobs, backend, cutout=cutout, bar=bar, failed=failed, output_dir=output_dir,
                                   guard=guard)
    return ImagesReport(processed=written, skipped=plan.skipped, failed=failed)


def matte_image_jobs(jobs: list[ImageJob], backend: Backend, *, cutout: bool, bar: tqdm,
                     failed: list[tuple[Path, str]], output_dir: Path, guard: PrecisionGuard | None = None) -> int:
    """Write every job's output, advancing ``bar`` once per image written; the unreadable
    are added to ``failed``. Returns how many were written. ``guard`` checks a reduced
    precision first (the jobs then run in FP32 below the gate). A full disk is a one-line
    DiskFull naming ``output_dir``."""
    if guard is not None and jobs and not guard.holds_before_writing(backend, _spread_images(jobs)):
        backend = guard.reference
    writers = OutputWriters(bar)
    try:
        with writers:
            _matte_all(jobs, backend, cutout, failed, writers)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise disk_full_error(writers.written_paths, folder=output_dir) from None
    return writers.written


def find_inputs(input_dir: Path, output_dir: Path | None, recursive: bool) -> tuple[Path, list[Path]]:
    """(the output folder, the images to matte), or a one-line MatteError when the input
    folder is missing, not a folder, or holds no images; cheap, so the command line runs
    it before loading a model."""
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
    return output_dir, sources


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
    jobs: list[ImageJob] = []
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
            jobs.append(ImageJob(source, target))
    return _Plan(jobs, skipped, failed)


def _matte_all(jobs: list[ImageJob], backend: Backend, cutout: bool, failed: list[tuple[Path, str]],
               writers: OutputWriters) -> None:
    """GPU backends get DALI's decoding and resizing (gpu_images.py); others the Pillow path."""
    if uses_dali(backend):
        from .gpu_images import matte_jobs_with_dali  # CUDA imports only where a GPU backend runs
        matte_jobs_with_dali(jobs, backend, cutout, failed, writers)
    else:
        matte_jobs(jobs, backend, cutout, failed, writers)




def _spread_images(jobs: list[ImageJob]) -> np.ndarray:
    """The guard's pictures: some spread over the folder, decoded as the run decodes them
    (unreadable ones are left to the run to report)."""
    pictures = []
    for index in spread_frame_numbers(len(jobs)):
        try:
            pictures.append(decode_for_model(jobs[index].source, keep_rgb=False).model_input)
        except DECODE_ERRORS:
            continue
    return np.stack(pictures) if pictures else np.empty((0, MODEL_SIZE, MODEL_SIZE, 3), np.uint8)


def uses_dali(backend: Backend) -> bool:
    """Whether images for ``backend`` go through DALI: GPU backends, where DALI imports
    (importing it is only worth it then)."""
    return backend.takes_device_batches and dali_available()
