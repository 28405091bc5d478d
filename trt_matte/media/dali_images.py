"""Still images in, 320x320 RGB batches out, with NVIDIA DALI (the GPU path's reader).

    files --DALI file reader--> image decoder (nvJPEG on the GPU for JPEG; EXIF
      orientation applied) --> RGB at the displayed size --Lanczos3, antialiased,
      to 320x320--> dense uint8 [B,320,320,3] per batch (on the GPU with a device id)

One bad file kills a DALI pipeline, with no option to skip it, so ``dali_can_take``
screens files first (header parsed; a PNG's chunk CRCs read to the end; no pixels
decoded: 0.05 ms for a 12 MP JPEG and 7 ms for a 17 MB PNG, against 54 and 172 ms for
Pillow's full decode), and ``image_batches`` raises DaliStopped naming the files to
blame when one still kills it (a JPEG cut off inside its scan data passes the screen).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
from PIL import Image

from ..errors import MatteError
from .dali import DALI_ERRORS, dali_error, host_frames, pipeline_options, resized_for_model
from .pictures import DECODE_ERRORS

if TYPE_CHECKING:
    from nvidia.dali.pipeline import Pipeline
    from nvidia.dali.tensors import TensorCPU, TensorGPU, TensorListCPU, TensorListGPU

# The operators whose failures are one file's fault (unreadable or undecodable data)...
FILE_OPERATORS = ("nvidia.dali.fn.readers.file", "nvidia.dali.fn.decoders.image")
# ...unless the message shows the GPU failed (CUDA's error names start with "cuda").
GPU_FAILURES = ("out of memory", "cudaError", "CUDA error", "CUDA_ERROR")


class DaliStopped(Exception):
    """A file killed the pipeline: ``suspects`` are the file DALI named, or else every
    file of the batch that failed."""

    def __init__(self, suspects: list[Path]):
        super().__init__(f"DALI stopped on {', '.join(map(str, suspects))}")
        self.suspects = suspects


@dataclass(frozen=True)
class ImageBatch:
    """The real images of one DALI batch, in file order; the padded repeats are dropped.

    ``rgb`` is the whole padded batch, a dense contiguous uint8 [B,320,320,3] tensor
    (``TensorGPU`` on a GPU: hand ``rgb.data_ptr()`` to the engine). It is ready when
    the batch is yielded (DALI ran host-synchronously) and stays valid while this
    object is referenced.
    """

    sizes: list[tuple[int, int]]  # (height, width) of each image as displayed
    rgb: TensorCPU | TensorGPU
    full_size: TensorListCPU | None  # decoded pictures in host memory, for cutouts
    _owner: TensorListCPU | TensorListGPU = field(repr=False)

    def host_array(self) -> np.ndarray:
        """The real images as uint8 [n,320,320,3] in host memory (copied from a GPU)."""
        return host_frames(self.rgb, len(self.sizes))

    def pictures(self) -> list[Image.Image | None]:
        """Each decoded picture as RGB, or Nones when the pipeline was not asked for them."""
        if self.full_size is None:
            return [None] * len(self.sizes)
        return [Image.fromarray(np.asarray(self.full_size[index])) for index in range(len(self.sizes))]


def dali_can_take(path: Path, max_side: int | None) -> bool:
    """Whether the file looks decodable (without decoding it) and fits ``max_side``: a cheap
    screen, since one bad file kills a DALI pipeline."""
    try:
        with Image.open(path) as image:
            size, is_jpeg = image.size, image.format in ("JPEG", "MPO")
            # PNG: every chunk read and CRC-checked; JPEG and others: the header only.
            image.verify()
        if is_jpeg and not _ends_like_a_jpeg(path):
            return False
    except DECODE_ERRORS:
        return False
    return max_side is None or max(size) <= max_side


def _ends_like_a_jpeg(path: Path) -> bool:
    """Whether the JPEG's last scan is followed by an end-of-image marker. nvJPEG may
    decode a file cut off in its scan data into a half-grey picture, where Pillow reports
    it truncated. Neither marker can occur inside scan data (a 0xFF there is always
    followed by 0x00 or a restart marker), and the last scan is the main picture's, after
    any EXIF thumbnail's own scan and end marker. DALI reads the file next, from the cache."""
    data = path.read_bytes()
    return data.rfind(b"\xff\xd9") > data.rfind(b"\xff\xda")


def image_batches(paths: list[Path], batch_size: int, device_id: int | None,
                  keep_full_size: bool = False) -> Iterator[ImageBatch]:
    """Every file of ``paths`` exactly once, in order, decoded, oriented and resized.

    ``device_id=None`` runs DALI on the CPU. Raises DaliStopped when a file kills the
    pipeline (the batches before it were yielded) and MatteError on other DALI failures.
    """
    names = [str(path) for path in paths]
    pipe = _images_pipeline(names, batch_size, device_id, keep_full_size)
    try:
        pipe.build()
    except DALI_ERRORS as exc:
        # Building reads no file: a failure here is DALI's or the GPU's, and would recur.
        raise dali_error(paths[0], exc) from exc
    # readers.file pads the last batch with repeats of the last file and then wraps into
    # the next epoch: run exactly ceil(n / B) times and keep the real samples only.
    for start in range(0, len(paths), batch_size):
        try:
            outputs = pipe.run()
        except DALI_ERRORS as exc:
            raise _stopped(exc, paths, start, batch_size) from exc
        yield _real_images(outputs, names[start:start + batch_size])


def _images_pipeline(names: list[str], batch_size: int, device_id: int | None, keep_full_size: bool) -> Pipeline:
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(**pipeline_options(batch_size, device_id))
    def images_pipeline():
        encoded, _ = fn.readers.file(files=names, random_shuffle=False, pad_last_batch=True)
        # "mixed": nvJPEG on the GPU for JPEG; DALI decodes other formats on the CPU inside the
        # same operator. Gray, palette and RGBA pictures come out as 3-channel RGB, as Pillow's
        # convert("RGB") gives them (alpha dropped).
        picture = fn.decoders.image(encoded, device="cpu" if device_id is None else "mixed",
                                    output_type=types.RGB, adjust_orientation=True)
        outputs = (resized_for_model(picture), picture.shape(), fn.get_property(encoded, key="source_info"))
        return (*outputs, picture.cpu()) if keep_full_size else outputs

    return images_pipeline()


def _stopped(exc: Exception, paths: list[Path], start: int, batch_size: int) -> Exception:
    """The DaliStopped to raise for a pipeline failure in the batch at ``start``, or a
    MatteError when the failure is not a file's fault."""
    message = str(exc)
    if isinstance(exc, MemoryError) or any(sign in message for sign in GPU_FAILURES):
        # Not the file's fault: moving files to the Pillow path would only repeat it.
        return dali_error(paths[start], exc)
    # Readers run ahead, so the named file may lie beyond this batch; the longest match
    # wins because "a.jpg" is also in a message naming "a.jpg.jpg".
    named = [path for path in paths[start:] if str(path) in message]
    if named:
        return DaliStopped([max(named, key=lambda path: len(str(path)))])
    if any(operator in message for operator in FILE_OPERATORS):
        return DaliStopped(paths[start:start + batch_size])
    return dali_error(paths[start], exc)


def _real_images(outputs: tuple, names: list[str]) -> ImageBatch:
    """The batch's first ``len(names)`` samples, checked to be those files: a slip in
    DALI's order would otherwise put masks in the wrong files, silently."""
    rgb, shapes, sources, *full_size = outputs
    sizes = []
    for index, name in enumerate(names):
        delivered = np.asarray(sources[index]).tobytes().decode()
        if delivered != name:
            raise MatteError(f"DALI returned {delivered} where {name} was due")
        height, width, _ = np.asarray(shapes[index]).tolist()
        sizes.append((height, width))
    return ImageBatch(sizes, rgb.as_tensor(), full_size[0] if full_size else None, rgb)
