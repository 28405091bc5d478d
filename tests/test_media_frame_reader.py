"""ffmpeg's frames on a pipe: every frame once, in order, resized as rembg resizes
(RGB at the source size, then an antialiased Lanczos to 320x320) or whole."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import decode_rgb, make_clip, mean_abs_error
from trt_matte.errors import MatteError
from trt_matte.media.frame_reader import FrameReader, _any_frame_of


def test_model_frames_are_the_lanczos_resize_of_the_rgb_frames(ffmpeg_exe, tmp_path):
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", size="176x144", frames=7)
    reader = FrameReader(clip)
    batches = list(reader.batches(3))
    assert [len(batch) for batch in batches] == [3, 3, 1]
    frames = np.concatenate(batches)
    reader.check_frame_count(7)
    pillow = np.stack([np.asarray(Image.fromarray(frame).resize((320, 320), Image.Resampling.LANCZOS))
                       for frame in decode_rgb(ffmpeg_exe, clip)])
    assert frames.shape == (7, 320, 320, 3)
    # swscale's and Pillow's Lanczos differ in rounding and edge handling only.
    assert mean_abs_error(frames, pillow) < 1.5


def test_display_size_gives_whole_frames_as_ffmpeg_decodes_them(ffmpeg_exe, tmp_path):
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", size="98x54", frames=4)
    frames = np.concatenate(list(FrameReader(clip, display_size=(98, 54)).batches(8)))
    np.testing.assert_array_equal(frames, decode_rgb(ffmpeg_exe, clip))


def test_chosen_frames_only_in_their_order(ffmpeg_exe, tmp_path):
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", size="64x48", frames=150)
    every = np.concatenate(list(FrameReader(clip).batches(16)))
    wanted = sorted({0, 3, 77, 149, *range(10, 130, 1)})  # more than ffmpeg takes in a flat sum
    chosen = np.concatenate(list(FrameReader(clip, wanted).batches(16)))
    np.testing.assert_array_equal(chosen, every[wanted])


def test_a_short_read_is_named_as_damage(ffmpeg_exe, tmp_path):
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", frames=5)
    reader = FrameReader(clip)
    list(reader.batches(2))
    with pytest.raises(MatteError, match=r"decoded 5 frames but the container lists 6; the file is damaged"):
        reader.check_frame_count(6)


def test_the_select_expression_nests_instead_of_a_flat_sum():
    assert _any_frame_of([4]) == "eq(n,4)"
    assert _any_frame_of([1, 2, 3]) == "max(eq(n,1),max(eq(n,2),eq(n,3)))"
