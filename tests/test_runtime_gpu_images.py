"""The GPU images path (runtime/gpu_images.py) on the CPU: DALI decodes and resizes with
device_id=None, ONNX Runtime on the CPU runs the matte graph, images.py plans and writes.

process_images takes this path only for GPU backends, so the folder tests switch its
hook on for a CPU backend. The GPU variant (nvJPEG, engine upsizing) runs only where a
GPU is visible.
"""
from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("nvidia.dali")

from conftest import dali_image_inputs, decode_rgb, mask_iou, mean_abs_error  # noqa: E402
from trt_matte.build_engine.matte_graph import matte_graph_path  # noqa: E402
from trt_matte.engine.onnxruntime_backend import OnnxRuntimeBackend  # noqa: E402
from trt_matte.runtime import images  # noqa: E402
from trt_matte.media.dali_images import DaliStopped, dali_can_take, image_batches  # noqa: E402
from trt_matte.media.pictures import decode_for_model  # noqa: E402
from trt_matte.runtime.gpu_images import _host_masks, _runs  # noqa: E402
from trt_matte.runtime.images import ImagesReport, process_images  # noqa: E402

# Evenly spread frames of carphone.mp4 (176x144), a person moving in a car.
FRAME_INDEXES = tuple(range(0, 120, 15))
ORIENTATION_TAG = 0x0112
ROTATE_90_CW_TO_DISPLAY = 6
# A batch size that divides none of the folder sizes below, so the last batch is padded.
ODD_BATCH = 3


@pytest.fixture(scope="module")
def frames(ffmpeg_exe, carphone_path) -> list[np.ndarray]:
    video = decode_rgb(ffmpeg_exe, carphone_path)
    return [video[index] for index in FRAME_INDEXES]


@pytest.fixture
def with_dali(monkeypatch):
    """process_images takes the DALI path whatever the backend (a CPU one runs DALI on the CPU)."""
    monkeypatch.setattr(images, "uses_dali", lambda backend: True)


@pytest.fixture(scope="module")
def batched_tiny_backend(tiny_model, cache_home):
    """The brightness stand-in for U²-Net, run ODD_BATCH images at a time."""
    backend = OnnxRuntimeBackend(matte_graph_path(tiny_model, cache_home), device="cpu")
    backend.preferred_batch = ODD_BATCH
    return backend


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def test_dali_resize_gives_the_masks_of_pillow_lanczos(tmp_path, frames, cpu_backend):
    """Real weights on real frames, as JPEG (upscaled to 320) and as 3x PNG copies
    (downscaled, where the antialiasing counts). DALI's Lanczos3 and Pillow's LANCZOS
    differ by rounding (mean 0.2/255), about as much as +-1 LSB of noise, which moves
    U²-Net's masks to a mean IoU of 0.981 on its own: 120 such pictures gave 0.986."""
    paths = []
    for index, frame in enumerate(frames):
        picture = Image.fromarray(frame)
        picture.save(tmp_path / f"{index}.jpg", quality=90)
        picture.resize((528, 432), Image.Resampling.BICUBIC).save(tmp_path / f"{index}_large.png")
        paths += [tmp_path / f"{index}.jpg", tmp_path / f"{index}_large.png"]
    dali_rgb, sizes = dali_image_inputs(paths, batch_size=4)
    pillow = [decode_for_model(path, keep_rgb=False) for path in paths]
    pillow_rgb = np.stack([decoded.model_input for decoded in pillow])
    assert sizes == [decoded.size[::-1] for decoded in pillow]
    assert mean_abs_error(dali_rgb, pillow_rgb) < 0.5
    dali_masks, pillow_masks = _masks(cpu_backend, dali_rgb), _masks(cpu_backend, pillow_rgb)
    assert np.mean([mask_iou(a, b) for a, b in zip(dali_masks, pillow_masks)]) >= 0.98
    assert np.mean([mean_abs_error(a, b) for a, b in zip(dali_masks, pillow_masks)]) <= 1.5


def _masks(backend, rgb: np.ndarray) -> np.ndarray:
    # A few at a time: ONNX Runtime's CPU memory grows with the batch.
    return np.concatenate([backend.run(rgb[start:start + 4]) for start in range(0, len(rgb), 4)])


@pytest.fixture(scope="module")
def formats_folder(tmp_path_factory, frames) -> Path:
    folder = tmp_path_factory.mktemp("formats") / "photos"
    folder.mkdir()
    # Frame 60, whose mask hardly moves under +-1 LSB of input noise (IoU 0.998), so each
    # picture can be compared on its own; the first test compares the mean over many frames.
    picture = Image.fromarray(frames[FRAME_INDEXES.index(60)])
    picture.save(folder / "jpg.jpg", quality=90)
    picture.save(folder / "png.png")
    rgba = picture.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(picture.size))
    rgba.save(folder / "rgba.png")
    picture.convert("L").save(folder / "gray.png")
    # Stored turned a quarter left; orientation 6 tells viewers to turn it back right.
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = ROTATE_90_CW_TO_DISPLAY
    picture.transpose(Image.Transpose.ROTATE_90).save(folder / "exif6.jpg", quality=90, exif=exif)
    with Image.open(folder / "exif6.jpg") as stored:
        stored.transpose(Image.Transpose.ROTATE_270).save(folder / "upright.png")
    return folder


@pytest.fixture(scope="module")
def formats_masks(tmp_path_factory, formats_folder, cpu_backend) -> tuple[Path, Path, ImagesReport]:
    """The folder through the DALI path and through the Pillow path, real weights."""
    out = tmp_path_factory.mktemp("formats_out")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(images, "uses_dali", lambda backend: True)
        report = process_images(formats_folder, out / "dali", cpu_backend, progress=False)
    process_images(formats_folder, out / "pillow", cpu_backend, progress=False)
    return out / "dali", out / "pillow", report


def test_formats_match_the_pillow_path(formats_folder, formats_masks):
    dali, pillow, report = formats_masks
    assert report == ImagesReport(processed=6, skipped=0, failed=[])
    for source in formats_folder.iterdir():
        ours, reference = _read(dali / f"{source.stem}.png"), _read(pillow / f"{source.stem}.png")
        assert ours.shape == reference.shape == (144, 176)
        assert mask_iou(ours, reference) >= 0.98, source.name
        assert mean_abs_error(ours, reference) <= 2, source.name


def test_exif_orientation_6_jpeg_gives_the_displayed_mask(formats_masks):
    dali, _, _ = formats_masks
    # The stored picture turned upright by hand gives the same pixels, hence the same mask.
    np.testing.assert_array_equal(_read(dali / "exif6.png"), _read(dali / "upright.png"))


def test_gray_and_rgba_png_decode_as_rgb(formats_folder, formats_masks):
    dali, _, _ = formats_masks
    # Alpha is dropped, not composited, as Pillow's convert("RGB") does in rembg.
    np.testing.assert_array_equal(_read(dali / "rgba.png"), _read(dali / "png.png"))
    gray_input, _ = dali_image_inputs([formats_folder / "gray.png"], batch_size=1)
    assert (gray_input == gray_input[..., :1]).all()


def _broken_folder(folder: Path, frames: list[np.ndarray]) -> list[str]:
    """Good pictures of two sizes among broken files; returns the good names."""
    folder.mkdir()
    good = []
    for index, frame in enumerate(frames[:5]):
        picture = Image.fromarray(frame)
        if index % 2:
            picture = picture.resize((200, 100))
        # One name DALI must take as it is: a space and non-ASCII letters.
        name = "gut ä 4.jpg" if index == 4 else f"good{index}.jpg"
        picture.save(folder / name, quality=90)
        good.append(name)
    jpeg = (folder / "good0.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # cut inside the scan data
    Image.fromarray(frames[0]).save(folder / "deflate.png")
    _spoil_png_data(folder / "deflate.png")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("not a picture\n")
    # A GIF under a PNG name: Pillow reads it, DALI stops without naming it.
    Image.fromarray(frames[5]).save(folder / "gif.png", format="GIF")
    good.append("gif.png")
    return good


def _spoil_png_data(path: Path) -> None:
    """Zero a PNG's compressed pixel data but keep every chunk's CRC right: the file passes
    Pillow's verify() and fails only when decoded."""
    data = path.read_bytes()
    spoiled, position = bytearray(data[:8]), 8
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        if kind == b"IDAT":
            body = body[:2] + bytes(length - 2)  # the zlib header kept, the deflate stream zeroed
        spoiled += struct.pack(">I4s", length, kind) + body + struct.pack(">I", zlib.crc32(kind + body))
        position += 12 + length
    path.write_bytes(bytes(spoiled))


def test_a_broken_file_does_not_stop_the_folder(tmp_path, synthetic_frames, batched_tiny_backend, with_dali):
    folder = tmp_path / "photos"
    good = _broken_folder(folder, synthetic_frames)
    # A JPEG cut off before its end marker never reaches DALI (nvJPEG may decode it half grey).
    assert not dali_can_take(folder / "cut.jpg", None)
    # Both pass the cheap check, so DALI meets them: the spoilt PNG it names...
    assert dali_can_take(folder / "deflate.png", None) and dali_can_take(folder / "gif.png", None)
    with pytest.raises(DaliStopped) as stopped:
        list(image_batches([folder / "good0.jpg", folder / "deflate.png", folder / "good2.jpg"], 2, None))
    assert stopped.value.suspects == [folder / "deflate.png"]
    # ...the GIF it does not, so its whole batch is suspect.
    with pytest.raises(DaliStopped) as stopped:
        list(image_batches([folder / "good0.jpg", folder / "gif.png", folder / "good2.jpg"], 2, None))
    assert stopped.value.suspects == [folder / "good0.jpg", folder / "gif.png"]

    report = process_images(folder, tmp_path / "dali", batched_tiny_backend, progress=False)
    assert report.processed == len(good)
    assert sorted(path.name for path, _ in report.failed) == ["cut.jpg", "deflate.png", "empty.jpg", "text.jpg"]
    # Complete outputs for the good files only, no temporary files left behind.
    assert sorted(path.name for path in (tmp_path / "dali").iterdir()) == sorted(
        f"{Path(name).stem}.png" for name in good)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(images, "uses_dali", lambda backend: False)
        pillow = process_images(folder, tmp_path / "pillow", batched_tiny_backend, progress=False)
    assert sorted(report.failed) == sorted(pillow.failed)  # the Pillow path's own messages
    for name in good:
        ours, reference = _read(tmp_path / "dali" / f"{Path(name).stem}.png"), _read(
            tmp_path / "pillow" / f"{Path(name).stem}.png")
        assert ours.shape == reference.shape
        assert mean_abs_error(ours, reference) <= 2, name


def test_cutout_is_the_decoded_rgb_with_the_mask(tmp_path, formats_folder, batched_tiny_backend, with_dali):
    single = tmp_path / "single"
    single.mkdir()
    for name in ("png.png", "exif6.jpg"):
        shutil.copyfile(formats_folder / name, single / name)
    process_images(single, tmp_path / "masks", batched_tiny_backend, progress=False)
    report = process_images(single, tmp_path / "cutouts", batched_tiny_backend, cutout=True, progress=False)
    assert report == ImagesReport(processed=2, skipped=0, failed=[])
    cutout = _read(tmp_path / "cutouts" / "png.png")
    np.testing.assert_array_equal(cutout[..., :3], _read(single / "png.png"))
    np.testing.assert_array_equal(cutout[..., 3], _read(tmp_path / "masks" / "png.png"))
    # The cutout of an EXIF-turned JPEG is upright, like its mask.
    turned = _read(tmp_path / "cutouts" / "exif6.png")
    np.testing.assert_array_equal(turned[..., :3], np.asarray(decode_for_model(single / "exif6.jpg", True).rgb))


def test_images_beyond_the_engines_size_limit_take_the_pillow_path(tmp_path, synthetic_frames, tiny_model, cache_home,
                                                                   with_dali):
    backend = OnnxRuntimeBackend(matte_graph_path(tiny_model, cache_home), device="cpu")
    backend.max_frame_side = 170  # as a TensorRT engine built with --max-size 170
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(synthetic_frames[0]).save(folder / "large.png")  # 176 wide
    Image.fromarray(synthetic_frames[0]).resize((170, 139)).save(folder / "small.png")
    assert process_images(folder, tmp_path / "out", backend, progress=False).processed == 2
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(images, "uses_dali", lambda backend: False)
        process_images(folder, tmp_path / "pillow", backend, progress=False)
    # The large one is the Pillow path's output, bit for bit.
    np.testing.assert_array_equal(_read(tmp_path / "out" / "large.png"), _read(tmp_path / "pillow" / "large.png"))
    assert _read(tmp_path / "out" / "small.png").shape == (139, 170)


def test_the_fake_device_mattes_a_folder_of_mixed_sizes_like_the_pillow_path(tmp_path, synthetic_frames, tiny_model,
                                                                             cache_home, tiny_backend):
    """The GPU variant proper (engine calls per run of same-sized images, one copy of the
    batch's masks to pinned memory) on the fake device; a cut JPEG still goes to the
    Pillow path, and every fake buffer is freed afterwards."""
    from fake_gpu import FakeGpuBackend
    from trt_matte import fake_cuda

    folder = tmp_path / "photos"
    folder.mkdir()
    sizes = [(176, 144), (176, 144), (175, 143), (120, 90), (176, 144)]
    for index, size in enumerate(sizes):
        Image.fromarray(synthetic_frames[index]).resize(size).save(folder / f"{index}.png")
    Image.fromarray(synthetic_frames[5]).save(folder / "cut.jpg", quality=90)
    (folder / "cut.jpg").write_bytes((folder / "cut.jpg").read_bytes()[:-300])
    before = fake_cuda.live_allocations()
    backend = FakeGpuBackend(matte_graph_path(tiny_model, cache_home),
                             matte_graph_path(tiny_model, cache_home, upsize=True), batch=ODD_BATCH)
    try:
        report = process_images(folder, tmp_path / "gpu", backend, progress=False)
        engine_calls = backend.calls
    finally:
        backend.close()
    assert fake_cuda.live_allocations() == before
    reference = process_images(folder, tmp_path / "pillow", tiny_backend, progress=False)
    assert report == reference and report.processed == len(sizes)
    # Two batches of three: runs (2 x 176x144, 175x143) and (120x90, 176x144); cut.jpg is Pillow's.
    assert engine_calls == 4
    for index, (width, height) in enumerate(sizes):
        ours, theirs = _read(tmp_path / "gpu" / f"{index}.png"), _read(tmp_path / "pillow" / f"{index}.png")
        assert ours.shape == theirs.shape == (height, width)
        assert mean_abs_error(ours, theirs) <= 3.0, index  # DALI and bicubic on the "GPU", Pillow's Lanczos


def test_masks_of_mixed_sizes_get_one_engine_call_per_run_at_aligned_addresses():
    sizes = [(144, 176), (144, 176), (143, 175), (144, 176)]
    runs, nbytes = _runs(sizes)
    assert [(run.first, run.count, run.height, run.width) for run in runs] == [
        (0, 2, 144, 176), (2, 1, 143, 175), (3, 1, 144, 176)]
    assert all(run.offset % 256 == 0 for run in runs)  # TensorRT's rule for tensor addresses
    # What the engine writes run by run reads back image by image, no mask overlapping another.
    buffer = np.zeros(nbytes, np.uint8)
    for run in runs:
        for index in range(run.count):
            start = run.offset + index * run.height * run.width
            buffer[start:start + run.height * run.width] = run.first + index + 1
    masks = [mask for run in runs for mask in _host_masks(buffer, run)]
    assert [mask.shape for mask in masks] == sizes
    assert [np.unique(mask).tolist() for mask in masks] == [[1], [2], [3], [4]]


@pytest.mark.gpu
def test_gpu_images_match_the_cpu_path(u2netp_path, cache_home, tmp_path, frames, cpu_backend):
    """nvJPEG + engine upsizing per image size vs the Pillow path with ONNX Runtime on the CPU."""
    pytest.importorskip("tensorrt")
    from trt_matte.api import BackendRequest, open_backend
    backend = open_backend(BackendRequest(u2netp_path, cache_home, backend="tensorrt", device="cuda"))
    folder = tmp_path / "photos"
    good = _broken_folder(folder, frames)
    report = process_images(folder, tmp_path / "gpu", backend, progress=False)
    reference = process_images(folder, tmp_path / "cpu", cpu_backend, progress=False)
    assert report.processed == reference.processed == len(good)
    assert sorted(report.failed) == sorted(reference.failed)
    ious = []
    for name in good:
        ours, theirs = _read(tmp_path / "gpu" / f"{Path(name).stem}.png"), _read(
            tmp_path / "cpu" / f"{Path(name).stem}.png")
        assert ours.shape == theirs.shape
        ious.append(mask_iou(ours, theirs))
    assert np.mean(ious) >= 0.98
