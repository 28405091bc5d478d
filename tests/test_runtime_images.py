"""process_images on pictures saved in many formats: real frames of carphone.mp4 with the
real weights, checked against rembg itself, and synthetic frames (ffmpeg's testsrc2)
with the tiny stand-in model for everything that does not need the real weights
(formats, orientation, broken files, skip and overwrite, folders), so those run on a
clean clone too. Each folder is processed once per module and shared by the asserts."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import decode_rgb, mask_iou, mean_abs_error, rembg_mask
from trt_matte.errors import MatteError
from trt_matte.media.pictures import find_images
from trt_matte.runtime.images import ImagesReport, process_images

# Frames of carphone.mp4 (176x144) that become the test images.
FRAME_INDEXES = (0, 30, 60)
ORIENTATION_TAG = 0x0112
ROTATE_90_CW_TO_DISPLAY = 6
# Each good image, and the file whose pixels rembg should see as the same picture: lossless
# copies of one frame share png.png's reference; 16-bit gray is the 8-bit gray scaled by 257.
REMBG_REFERENCE = {
    "jpg.jpg": "jpg.jpg",
    "png.png": "png.png",
    "bmp.bmp": "png.png",
    "tiff.tiff": "png.png",
    "rgba.png": "png.png",
    "webp.webp": "webp.webp",
    "gray.png": "gray.png",
    "gray16.png": "gray.png",
    "cmyk.jpg": "cmyk.jpg",
    "exif6.jpg": "exif6.jpg",
    "upright.png": "exif6.jpg",
    "odd.png": "odd.png",
}
BROKEN = ("empty.png", "text.jpg", "truncated.jpg")
COLLIDING = "jpg.png"  # same stem as jpg.jpg, which sorts first and wins


@pytest.fixture(scope="module")
def carphone_frames(ffmpeg_exe, carphone_path) -> list[np.ndarray]:
    video = decode_rgb(ffmpeg_exe, carphone_path, frames=max(FRAME_INDEXES) + 1)
    return [video[index] for index in FRAME_INDEXES]


@pytest.fixture(scope="module")
def frames(synthetic_frames) -> list[np.ndarray]:
    return list(synthetic_frames[:len(FRAME_INDEXES)])


def _save_good_images(folder: Path, frames: list[np.ndarray]) -> None:
    first, second, third = (Image.fromarray(frame) for frame in frames)
    first.save(folder / "jpg.jpg", quality=90)
    second.save(folder / "png.png")
    second.save(folder / "bmp.bmp")
    second.save(folder / "tiff.tiff")
    rgba = second.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(second.size))
    rgba.save(folder / "rgba.png")
    third.save(folder / "webp.webp", quality=80)
    gray = third.convert("L")
    gray.save(folder / "gray.png")
    Image.fromarray(np.asarray(gray).astype(np.uint16) * 257).save(folder / "gray16.png")
    first.convert("CMYK").save(folder / "cmyk.jpg", quality=90)
    # Stored turned a quarter left; orientation 6 tells viewers to turn it back right.
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = ROTATE_90_CW_TO_DISPLAY
    first.transpose(Image.Transpose.ROTATE_90).save(folder / "exif6.jpg", quality=90, exif=exif)
    # The same decoded pixels turned upright by hand: its mask is what exif6.jpg must give.
    with Image.open(folder / "exif6.jpg") as stored:
        stored.transpose(Image.Transpose.ROTATE_270).save(folder / "upright.png")
    third.crop((1, 1, 176, 144)).save(folder / "odd.png")


def _save_broken_files(folder: Path) -> None:
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("not a picture\n")
    jpeg = (folder / "jpg.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "notes.txt").write_text("ignored: not an image suffix\n")
    Image.new("RGB", (16, 16), (200, 30, 30)).save(folder / COLLIDING)


def _formats_run(folder: Path, frames: list[np.ndarray], backend) -> tuple[Path, Path, ImagesReport]:
    """One folder of good images in every format plus broken files, default output dir."""
    folder.mkdir()
    _save_good_images(folder, frames)
    _save_broken_files(folder)
    report = process_images(folder, None, backend, progress=False)
    return folder, folder.with_name("photos.masks"), report


@pytest.fixture(scope="module")
def formats_run(tmp_path_factory, frames, tiny_backend):
    return _formats_run(tmp_path_factory.mktemp("formats") / "photos", frames, tiny_backend)


@pytest.fixture(scope="module")
def carphone_formats_run(tmp_path_factory, carphone_frames, cpu_backend):
    return _formats_run(tmp_path_factory.mktemp("carphone_formats") / "photos", carphone_frames, cpu_backend)


@pytest.fixture(scope="module")
def rembg_masks(carphone_formats_run, rembg_session) -> dict[str, np.ndarray]:
    folder = carphone_formats_run[0]
    masks = {}
    for reference in sorted(set(REMBG_REFERENCE.values())):
        with Image.open(folder / reference) as image:
            masks[reference] = rembg_mask(rembg_session, image)
    return masks


def _read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as mask:
        assert mask.mode == "L"
        return np.asarray(mask)


@pytest.mark.parametrize("name", sorted(REMBG_REFERENCE))
def test_mask_matches_rembg(name, carphone_formats_run, rembg_masks):
    _, masks_dir, _ = carphone_formats_run
    ours = _read_mask(masks_dir / Path(name).with_suffix(".png"))
    reference = rembg_masks[REMBG_REFERENCE[name]]
    assert ours.shape == reference.shape
    assert mask_iou(ours, reference) >= 0.98
    assert mean_abs_error(ours, reference) <= 2


def test_report_counts_every_file(formats_run):
    folder, _, report = formats_run
    assert isinstance(report, ImagesReport)
    assert report.processed == len(REMBG_REFERENCE)
    assert report.skipped == 0
    assert sorted(path.name for path, _ in report.failed) == sorted(BROKEN + (COLLIDING,))
    reasons = {path.name: reason for path, reason in report.failed}
    assert reasons["empty.png"] == "empty file"
    assert reasons["text.jpg"] == "not a readable image"
    assert "truncated" in reasons["truncated.jpg"]
    assert "jpg.jpg" in reasons[COLLIDING]


def test_broken_files_leave_no_output(formats_run):
    _, masks_dir, _ = formats_run
    expected = {Path(name).with_suffix(".png").name for name in REMBG_REFERENCE}
    # No mask for broken inputs or notes.txt, and no temporary files left behind.
    assert {path.name for path in masks_dir.iterdir()} == expected


def test_broken_files_are_reported_on_stderr(tmp_path, tiny_backend, capsys):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "empty.png").write_bytes(b"")
    report = process_images(folder, tmp_path / "out", tiny_backend, progress=False)
    assert report == ImagesReport(processed=0, skipped=0, failed=[(folder / "empty.png", "empty file")])
    assert capsys.readouterr().err.strip() == f"trt-matte: skipped {folder / 'empty.png'}: empty file"


def test_lossless_copies_and_16_bit_gray_give_identical_masks(formats_run):
    _, masks_dir, _ = formats_run
    png = _read_mask(masks_dir / "png.png")
    for name in ("bmp.png", "tiff.png", "rgba.png"):
        np.testing.assert_array_equal(_read_mask(masks_dir / name), png)
    # 16-bit samples are scaled to 8 bits, not clipped at 255 as Pillow's convert does.
    np.testing.assert_array_equal(_read_mask(masks_dir / "gray16.png"), _read_mask(masks_dir / "gray.png"))


def test_exif_orientation_gives_mask_in_displayed_orientation(formats_run, frames):
    folder, masks_dir, _ = formats_run
    with Image.open(folder / "upright.png") as upright:
        # Turned by hand the right way, the stored pixels are the frame again (up to JPEG loss).
        assert mean_abs_error(np.asarray(upright), frames[0]) < 5
    rotated = _read_mask(masks_dir / "exif6.png")
    assert rotated.shape == (144, 176)
    np.testing.assert_array_equal(rotated, _read_mask(masks_dir / "upright.png"))


def test_odd_size_mask_has_image_size(formats_run):
    _, masks_dir, _ = formats_run
    assert _read_mask(masks_dir / "odd.png").shape == (143, 175)


def test_cutout_is_source_rgb_with_mask_as_alpha(tmp_path, formats_run, tiny_backend):
    folder, masks_dir, _ = formats_run
    single = tmp_path / "single"
    single.mkdir()
    shutil.copyfile(folder / "png.png", single / "png.png")
    report = process_images(single, tmp_path / "cutouts", tiny_backend, cutout=True, progress=False)
    assert report == ImagesReport(processed=1, skipped=0, failed=[])
    with Image.open(tmp_path / "cutouts" / "png.png") as cutout, Image.open(folder / "png.png") as source:
        assert cutout.mode == "RGBA"
        pixels = np.asarray(cutout)
        np.testing.assert_array_equal(pixels[..., :3], np.asarray(source))
    np.testing.assert_array_equal(pixels[..., 3], _read_mask(masks_dir / "png.png"))


def test_existing_outputs_are_skipped_unless_overwrite(tmp_path, formats_run, tiny_backend):
    folder, masks_dir, _ = formats_run
    single = tmp_path / "single"
    single.mkdir()
    shutil.copyfile(folder / "png.png", single / "png.png")
    out = tmp_path / "out"
    out.mkdir()
    placeholder = np.zeros((144, 176), np.uint8)
    Image.fromarray(placeholder).save(out / "png.png")

    report = process_images(single, out, tiny_backend, progress=False)
    assert report == ImagesReport(processed=0, skipped=1, failed=[])
    np.testing.assert_array_equal(_read_mask(out / "png.png"), placeholder)

    report = process_images(single, out, tiny_backend, overwrite=True, progress=False)
    assert report == ImagesReport(processed=1, skipped=0, failed=[])
    np.testing.assert_array_equal(_read_mask(out / "png.png"), _read_mask(masks_dir / "png.png"))


def test_recursive_mirrors_folders_and_skips_output_inside_input(tmp_path, formats_run, tiny_backend):
    folder, masks_dir, _ = formats_run
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    shutil.copyfile(folder / "jpg.jpg", tree / "sub" / "inner.jpg")
    out = tree / "masks"
    out.mkdir()
    shutil.copyfile(folder / "odd.png", out / "stale.png")  # an image the run must not read

    assert find_images(tree, out, recursive=False) == []
    report = process_images(tree, out, tiny_backend, recursive=True, progress=False)
    assert report == ImagesReport(processed=1, skipped=0, failed=[])
    assert sorted(path.relative_to(out).as_posix() for path in out.rglob("*")) == [
        "stale.png", "sub", "sub/inner.png"]
    np.testing.assert_array_equal(_read_mask(out / "sub" / "inner.png"), _read_mask(masks_dir / "jpg.png"))


def test_bad_directories_are_errors(tmp_path, tiny_backend):
    with pytest.raises(MatteError, match="not found"):
        process_images(tmp_path / "missing", None, tiny_backend, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here\n")
    with pytest.raises(MatteError, match="no images"):
        process_images(empty, None, tiny_backend, progress=False)
    assert not (tmp_path / "empty.masks").exists()

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (8, 8)).save(photos / "a.png")
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file where the output folder should go\n")
    with pytest.raises(MatteError, match="not a directory"):
        process_images(photos, blocker, tiny_backend, progress=False)
    with pytest.raises(MatteError, match="must differ"):
        process_images(photos, photos, tiny_backend, progress=False)


def test_unwritable_output_dir_is_an_error(tmp_path, tiny_backend):
    """A folder below a regular file cannot be made, for root too (CI runs as root)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (8, 8)).save(photos / "a.png")
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file\n")
    with pytest.raises(MatteError, match=f"cannot write to output directory {blocker / 'masks'}: Not a directory"):
        process_images(photos, blocker / "masks", tiny_backend, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["blocker", "photos"]


def test_a_folder_named_like_an_image_is_reported_not_ignored(tmp_path, tiny_backend, synthetic_frames, capsys):
    photos = tmp_path / "photos"
    (photos / "holiday.jpg").mkdir(parents=True)
    Image.fromarray(synthetic_frames[0]).save(photos / "a.png")
    report = process_images(photos, tmp_path / "out", tiny_backend, progress=False)
    assert report.processed == 1
    assert report.failed == [(photos / "holiday.jpg", "a folder named like an image, not an image")]
    assert f"skipped {photos / 'holiday.jpg'}: a folder named like an image" in capsys.readouterr().err
