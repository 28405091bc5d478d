"""Calibration frames: a seeded, evenly spread sample of the user's videos and images,
decoded and resized exactly as inference does (ffmpeg's Lanczos for video frames,
Pillow's for images), then split into calibration and held-back frames."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from ..errors import MatteError
from ..media.frame_reader import FrameReader
from ..media.pictures import (DECODE_ERRORS, IMAGE_SUFFIXES, decode_failure_reason, decode_for_model,
                              default_output_dir, find_images)
from ..media.probe import probe_video

# One frame in five is held back to check the quantized graph against FP32.
HOLD_BACK_EVERY = 5


@dataclass(frozen=True)
class Item:
    """One picture: a video frame (``frame`` is its 0-based number) or an image file."""
    path: Path
    frame: int | None = None


@dataclass(frozen=True)
class Sample:
    calibration: np.ndarray  # uint8 [N,320,320,3]
    held_back: np.ndarray  # uint8 [M,320,320,3]
    inputs: tuple[str, ...]
    skipped: tuple[str, ...]  # unreadable images, each "path: reason"

    def digest(self) -> str:
        """SHA-256 over every sampled frame: the calibration set's identity."""
        digest = hashlib.sha256()
        for frames in (self.calibration, self.held_back):
            digest.update(np.ascontiguousarray(frames).data)
        return digest.hexdigest()


def candidate_items(inputs: Sequence[Path]) -> list[Item]:
    """Every picture the inputs hold, in order: videos frame by frame, folders image by image.

    A picture named twice (the same file given twice, an image inside a folder also
    given) counts once, so it cannot land in both the calibration and held-back sets.
    """
    items: list[Item] = []
    for source in inputs:
        if source.is_dir():
            images = find_images(source, default_output_dir(source), recursive=True)
            if not images:
                raise MatteError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {source}")
            items.extend(Item(path) for path in images)
        elif source.suffix.lower() in IMAGE_SUFFIXES and source.is_file():
            items.append(Item(source))
        else:
            items.extend(Item(source, number) for number in range(probe_video(source).frame_count))
    return list(dict.fromkeys(Item(item.path.resolve(), item.frame) for item in items))


def spread_sample(items: list[Item], count: int, seed: int) -> list[Item]:
    """``count`` items, one drawn at random from each of ``count`` equal stretches of
    ``items`` (all of them when there are fewer), in their original order."""
    if len(items) <= count:
        return list(items)
    bounds = np.linspace(0, len(items), count + 1).astype(np.int64)
    generator = np.random.default_rng(seed)
    return [items[int(generator.integers(start, stop))] for start, stop in zip(bounds[:-1], bounds[1:])]


def _decode_video_frames(path: Path, numbers: list[int], bar: tqdm) -> dict[int, np.ndarray]:
    reader = FrameReader(path, numbers)
    frames: list[np.ndarray] = []
    try:
        for batch in reader.batches(16):
            frames.extend(batch)
            bar.update(len(batch))
    finally:
        reader.kill()
    if len(frames) != len(numbers):
        raise MatteError(f"{path}: read {len(frames)} of the {len(numbers)} sampled frames (damaged file?)")
    return dict(zip(sorted(numbers), frames))


def _decode_items(chosen: list[Item], progress: bool, skipped: list[str]) -> list[np.ndarray]:
    """Decode the chosen items, keeping their order; unreadable images are skipped."""
    decoded: dict[Item, np.ndarray] = {}
    with tqdm(total=len(chosen), unit="frame", desc="sampling", disable=not progress) as bar:
        videos: dict[Path, list[int]] = {}
        for item in chosen:
            if item.frame is None:
                try:
                    decoded[item] = decode_for_model(item.path, keep_rgb=False).model_input
                except DECODE_ERRORS as error:
                    skipped.append(f"{item.path}: {decode_failure_reason(item.path, error)}")
                bar.update()
            else:
                videos.setdefault(item.path, []).append(item.frame)
        for path, numbers in videos.items():
            for number, frame in _decode_video_frames(path, numbers, bar).items():
                decoded[Item(path, number)] = frame
    return [decoded[item] for item in chosen if item in decoded]


def sample_frames(inputs: Sequence[Path], calibration_frames: int, seed: int, *, progress: bool = False,
                  announce: Callable[[str], None] = lambda message: None) -> Sample:
    """``calibration_frames`` frames to calibrate on plus a quarter as many held back,
    spread over all inputs; the same inputs and seed always give the same frames."""
    if not inputs:
        raise MatteError("calibration needs at least one video, image or image folder")
    for source in inputs:
        if not source.exists():
            raise MatteError(f"input not found: {source}")
    wanted = calibration_frames + -(-calibration_frames // (HOLD_BACK_EVERY - 1))
    skipped: list[str] = []
    frames = _decode_items(spread_sample(candidate_items(inputs), wanted, seed), progress, skipped)
    for line in skipped:
        announce(f"skipped {line}")
    if len(frames) < HOLD_BACK_EVERY:
        raise MatteError(f"the inputs hold only {len(frames)} readable pictures; "
                         f"calibration needs at least {HOLD_BACK_EVERY}")
    held_back = frames[HOLD_BACK_EVERY - 1::HOLD_BACK_EVERY]
    calibration = [frame for index, frame in enumerate(frames) if index % HOLD_BACK_EVERY != HOLD_BACK_EVERY - 1]
    return Sample(np.stack(calibration), np.stack(held_back), tuple(str(source) for source in inputs),
                  tuple(skipped))
