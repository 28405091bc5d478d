"""The DALI image reader on the CPU (device_id=None): every file once, in order, at its
displayed size; the screen that keeps files DALI must not see away from it; and which
failures are blamed on a file."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("nvidia.dali")

from conftest import dali_image_inputs  # noqa: E402
from trt_matte.errors import MatteError  # noqa: E402
from trt_matte.media.dali_images import DaliStopped, _stopped, dali_can_take  # noqa: E402


@pytest.mark.parametrize("batch_size", [1, 2, 3, 4, 7, 8])
def test_every_file_exactly_once_in_order(tmp_path, batch_size):
    # Seven files told apart by their sizes; the reader's padding must never show.
    paths = []
    for index in range(7):
        path = tmp_path / f"{index}.png"
        Image.new("RGB", (20 + index, 10 + index), (30 * index, 0, 0)).save(path)
        paths.append(path)
    rgb, sizes = dali_image_inputs(paths, batch_size)
    assert sizes == [(10 + index, 20 + index) for index in range(7)]
    assert rgb.shape == (7, 320, 320, 3)
    np.testing.assert_array_equal(rgb[:, 160, 160, 0], [30 * index for index in range(7)])


def test_a_jpeg_with_data_after_its_end_marker_still_fits(tmp_path, synthetic_frames):
    path = tmp_path / "camera.jpg"
    Image.fromarray(synthetic_frames[0]).save(path, quality=90)
    path.write_bytes(path.read_bytes() + bytes(4096))  # padding some cameras append
    assert dali_can_take(path, None)


def test_a_cut_jpeg_is_caught_behind_its_thumbnails_end_marker(tmp_path, synthetic_frames):
    """An EXIF thumbnail is a whole JPEG, end marker included, near the file's start."""
    thumbnail = tmp_path / "thumbnail.jpg"
    Image.fromarray(synthetic_frames[1]).resize((40, 30)).save(thumbnail)
    main = tmp_path / "main.jpg"
    Image.fromarray(synthetic_frames[0]).save(main, quality=90)
    payload = b"Exif\0\0" + thumbnail.read_bytes()
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    whole = main.read_bytes()[:2] + app1 + main.read_bytes()[2:]  # after the start-of-image marker
    camera = tmp_path / "camera.jpg"
    camera.write_bytes(whole)
    assert dali_can_take(camera, None)
    camera.write_bytes(whole[: len(whole) * 3 // 4])
    assert not dali_can_take(camera, None)


def test_gpu_failures_are_not_blamed_on_files(tmp_path):
    paths = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    decoder_failure = ("Error in MIXED operator `nvidia.dali.fn.decoders.image` encountered:\n"
                       "{}\nCurrent pipeline object is no longer valid.")
    # A file's fault: its batch goes to the Pillow path...
    assert isinstance(_stopped(RuntimeError(decoder_failure.format("nvImageCodec failure")), paths, 0, 2),
                      DaliStopped)
    # ...but the GPU running out of memory would only recur there: the run stops with one line.
    for exc in (RuntimeError(decoder_failure.format("CUDA error: out of memory")), MemoryError("std::bad_alloc")):
        error = _stopped(exc, paths, 0, 2)
        assert isinstance(error, MatteError) and "\n" not in str(error)
