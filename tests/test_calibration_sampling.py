"""INT8 calibration frames: a seeded sample spread over videos and folders, decoded as
inference decodes them, split into calibration and held-back frames."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_clip
from trt_matte.calibration.sampling import HOLD_BACK_EVERY, Item, candidate_items, sample_frames, spread_sample
from trt_matte.errors import MatteError
from trt_matte.media.frame_reader import FrameReader


def test_spread_sample_draws_one_item_per_stretch_and_follows_the_seed():
    items = [Item(Path("clip.mp4"), number) for number in range(1000)]
    first = spread_sample(items, 10, seed=3)
    assert first == spread_sample(items, 10, seed=3)
    assert first != spread_sample(items, 10, seed=4)
    assert [item.frame // 100 for item in first] == list(range(10))  # one per tenth of the clip
    assert spread_sample(items[:7], 10, seed=3) == items[:7]


def test_sampled_frames_are_the_inference_decode_of_the_chosen_frames(ffmpeg_exe, tmp_path):
    # 140 frames wanted from one clip: more than ffmpeg takes in a flat select expression.
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", size="96x72", frames=170)
    sample = sample_frames([clip], 112, seed=5)
    chosen = spread_sample(candidate_items([clip]), 140, seed=5)
    every_frame = np.concatenate(list(FrameReader(clip).batches(8)))
    expected = every_frame[[item.frame for item in chosen]]
    held = [index for index in range(140) if index % HOLD_BACK_EVERY == HOLD_BACK_EVERY - 1]
    assert np.array_equal(sample.held_back, expected[held])
    assert np.array_equal(sample.calibration, np.delete(expected, held, axis=0))
    assert sample_frames([clip], 112, seed=5).digest() == sample.digest()
    assert sample_frames([clip], 112, seed=6).digest() != sample.digest()
    # The same clip named twice is sampled as once: no frame twice, none in both sets.
    assert sample_frames([clip, tmp_path / ".." / tmp_path.name / "clip.mp4"], 112, seed=5).digest() == sample.digest()


def test_sampling_mixes_videos_and_folders_and_skips_broken_images(ffmpeg_exe, tmp_path):
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", frames=20)
    photos = tmp_path / "photos"
    (photos / "nested").mkdir(parents=True)
    for index in range(3):
        Image.new("RGB", (90 + index, 60), (40 * index, 90, 200)).save(photos / "nested" / f"{index}.png")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    notices: list[str] = []
    sample = sample_frames([clip, photos], 100, seed=0, announce=notices.append)
    assert len(sample.calibration) + len(sample.held_back) == 20 + 3  # every readable picture
    assert len(sample.held_back) == (20 + 3) // HOLD_BACK_EVERY
    assert [line for line in notices if "broken.jpg" in line] == notices and len(notices) == 1


@pytest.mark.parametrize("make_inputs, message", [
    (lambda tmp: [tmp / "missing.mp4"], "input not found"),
    (lambda tmp: [tmp], "no images"),
    (lambda tmp: [], "at least one"),
])
def test_sampling_errors_are_one_clear_message(tmp_path, make_inputs, message):
    with pytest.raises(MatteError, match=message):
        sample_frames(make_inputs(tmp_path), 10, seed=0)


def test_too_few_pictures_is_an_error(ffmpeg_exe, tmp_path):
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", frames=3)
    with pytest.raises(MatteError, match="only 3 readable pictures"):
        sample_frames([clip], 10, seed=0)
