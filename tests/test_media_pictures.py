"""Pictures as rembg handles them: conversion to 8-bit RGB, the Lanczos resizes to and
from 320x320, what counts as an image, and why a file could not be read."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from trt_matte.media.pictures import (DECODE_ERRORS, decode_failure_reason, decode_for_model, find_images,
                                      mask_at_size, model_input, to_rgb)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK"])
def test_to_rgb_matches_pillow_convert_for_8_bit_modes(mode, synthetic_frames):
    image = Image.fromarray(synthetic_frames[0]).convert(mode)
    np.testing.assert_array_equal(np.asarray(to_rgb(image)), np.asarray(image.convert("RGB")))


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_to_rgb_scales_16_bit_gray(dtype):
    samples = np.array([[0, 128, 129, 32896, 65535]], dtype=dtype)
    rgb = np.asarray(to_rgb(Image.fromarray(samples)))
    np.testing.assert_array_equal(rgb[..., 0], [[0, 0, 1, 128, 255]])
    assert (rgb == rgb[..., :1]).all()


def test_model_input_and_mask_at_size_are_rembgs_lanczos_resizes(synthetic_frames):
    picture = Image.fromarray(synthetic_frames[0])
    small = model_input(picture)
    assert small.shape == (320, 320, 3) and small.dtype == np.uint8
    np.testing.assert_array_equal(small, np.asarray(picture.resize((320, 320), Image.Resampling.LANCZOS)))
    mask = mask_at_size(small[..., 0], picture.size)
    assert mask.size == picture.size and mask.mode == "L"


def test_decode_for_model_applies_the_exif_orientation(tmp_path, synthetic_frames):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned a quarter left: viewers turn it right
    stored = Image.fromarray(synthetic_frames[0]).transpose(Image.Transpose.ROTATE_90)
    stored.save(tmp_path / "turned.png", exif=exif)
    decoded = decode_for_model(tmp_path / "turned.png", keep_rgb=True)
    assert decoded.size == (176, 144)
    np.testing.assert_array_equal(np.asarray(decoded.rgb), synthetic_frames[0])
    assert decode_for_model(tmp_path / "turned.png", keep_rgb=False).rgb is None


@pytest.mark.parametrize("content, reason", [(b"", "empty file"), (b"plain text, not a picture", "not a readable image")])
def test_unreadable_files_get_a_reason_a_person_understands(tmp_path, content, reason):
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    with pytest.raises(DECODE_ERRORS) as failure:
        decode_for_model(path, keep_rgb=False)
    assert decode_failure_reason(path, failure.value) == reason


def test_find_images_by_suffix_in_order_skipping_the_output_folder(tmp_path):
    for name in ("b.JPG", "a.png", "notes.txt", "sub/c.webp", "masks/old.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert find_images(tmp_path, tmp_path / "masks", recursive=False) == [tmp_path / "a.png", tmp_path / "b.JPG"]
    assert find_images(tmp_path, tmp_path / "masks", recursive=True) == [
        tmp_path / "a.png", tmp_path / "b.JPG", tmp_path / "sub" / "c.webp"]
