"""Pictures with Pillow, exactly as rembg handles them: which files count as images,
decoding with the EXIF orientation applied, conversion to RGB, the Lanczos resizes to
and from the model's 320x320, and mask or cutout PNGs written atomically."""
from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps

from ..errors import MatteError
from ..files import atomic_output
from ..models import MODEL_SIZE

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
# 65535 / 255: maps 16-bit samples onto 0..255 (Pillow's own convert clips them at 255).
SIXTEEN_TO_EIGHT_BIT = 257
# What Pillow raises for files it cannot decode: unidentified or truncated files (OSError),
# corrupt headers (SyntaxError, struct.error), bad values (ValueError), oversized images.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)


@dataclass(frozen=True)
class Decoded:
    model_input: np.ndarray  # uint8 [320,320,3]
    size: tuple[int, int]  # (width, height) after EXIF orientation
    rgb: Image.Image | None  # the full oriented image, kept only for cutouts


def default_output_dir(input_dir: Path) -> Path:
    # abspath, not resolve: "photos/" and "." get a sibling by the name the user sees.
    absolute = Path(os.path.abspath(input_dir))
    return absolute.with_name(absolute.name + ".masks")


def find_images(input_dir: Path, output_dir: Path, recursive: bool) -> list[Path]:
    """Image files in sorted order (folder by folder), never looking inside ``output_dir``."""
    return [path for path in files_below(input_dir, output_dir, recursive) if path.suffix.lower() in IMAGE_SUFFIXES]


def files_below(input_dir: Path, output_dir: Path, recursive: bool) -> list[Path]:
    """Every file in ``input_dir`` (and its sub-folders with ``recursive``), in sorted order
    folder by folder, never looking inside ``output_dir``."""
    return [Path(folder, name) for folder, _, files in _walk(input_dir, output_dir, recursive) for name in files]


def folders_named_like_images(input_dir: Path, output_dir: Path, recursive: bool) -> list[Path]:
    """Folders whose names end like an image's (``x.jpg/``): reported, since a user who
    sees the name expects a mask for it."""
    return [Path(folder, name) for folder, folders, _ in _walk(input_dir, output_dir, recursive, every_folder=True)
            for name in folders if Path(name).suffix.lower() in IMAGE_SUFFIXES]


def _walk(input_dir: Path, output_dir: Path, recursive: bool,
          every_folder: bool = False) -> Iterator[tuple[str, list[str], list[str]]]:
    """os.walk in sorted order, into sub-folders only when ``recursive`` and never into
    ``output_dir``; with ``every_folder`` each listing names all sub-folders."""
    output_resolved = output_dir.resolve()
    for folder, subfolders, filenames in os.walk(input_dir, onerror=_unreadable_folder):
        listed = sorted(subfolders)
        # os.walk descends into what is left in the list, in its order.
        subfolders[:] = [name for name in listed if recursive and Path(folder, name).resolve() != output_resolved]
        yield folder, (listed if every_folder else subfolders), sorted(filenames)


def _unreadable_folder(error: OSError) -> None:
    raise MatteError(f"cannot read directory {error.filename}: {error.strerror or error}")


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


def decode_for_model(path: Path, keep_rgb: bool) -> Decoded:
    """Fully decode (so truncation fails here), orient, and resize to the model input."""
    with Image.open(path) as image:
        image.load()
        rgb = to_rgb(ImageOps.exif_transpose(image))
    return Decoded(model_input(rgb), rgb.size, rgb if keep_rgb else None)


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


def write_matte(target: Path, mask: Image.Image, rgb: Image.Image | None) -> None:
    """Write ``mask`` as a grayscale PNG, or with ``rgb`` (same size) as an RGBA cutout, atomically."""
    if rgb is not None:
        rgb.putalpha(mask)
        output = rgb
    else:
        output = mask
    try:
        with atomic_output(target, deliverable=True) as temp_path:
            output.save(temp_path, format="PNG")
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise  # the caller names the full disk with what the whole run wrote
        raise MatteError(f"cannot write {target}: {exc.strerror or exc}") from None
