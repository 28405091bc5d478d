"""The Python API; the command line is a thin layer over it.

    from trt_matte import Matter

    matter = Matter(model="u2netp")          # backend and device chosen as the CLI does
    matter.video("clip.mp4")                 # -> clip.matte.mp4, like `trt-matte clip.mp4`
    matter.images("photos", cutout=True)     # -> photos.masks/*.png
    mask = matter.mask(Image.open("me.jpg")) # numpy or PIL in, uint8 HxW mask out
    for frame, mask in matter.frames("clip.mp4"):
        ...                                  # full-size RGB frame and its mask, in order

    calibrate(["clip.mp4", "photos"], model="u2netp")   # INT8 from your own footage, then:
    Matter(model="u2netp", precision="int8")
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from .calibration import DEFAULT_FRAMES, CalibrationReport
from .calibration import calibrate as calibrate_model
from .engine import Backend, BackendRequest, check_explicit_tensorrt, open_backend
from .errors import MatteError
from .models import cache_dir, resolve_model
from .runtime.images import ImagesReport, mask_at_size, model_input, process_images, to_rgb
from .runtime.media import VideoInfo, local_path, probe_video
from .runtime.video import DEFAULT_CRF, DEFAULT_OUTPUTS, VideoResult, matte_video
from .runtime.ffmpeg_process import FfmpegProcess


class Matter:
    """One model on one backend, reused for every call."""

    def __init__(self, model: str | Path | None = None, *, backend: str = "auto", device: str = "auto",
                 threads: int | None = None, batch: int | None = None, precision: str = "auto",
                 force: bool = False, progress: bool = False,
                 announce: Callable[[str], None] = lambda message: None):
        """``precision``: auto (FP16 on TensorRT, FP32 on ONNX Runtime), fp32, fp16, or int8 (after
        ``calibrate``); ``force`` accepts an INT8 calibration below the accuracy gate."""
        check_explicit_tensorrt(backend, device)  # before a model download that would go unused
        resolved = resolve_model(None if model is None else str(model), progress=progress)
        self.model_label = resolved.label
        self.progress = progress
        self.announce = announce
        self.backend: Backend = open_backend(BackendRequest(
            resolved.path, cache_dir(), backend, device, threads, max_batch=batch, announce=announce,
            precision=precision, model_label=resolved.label, accept_below_gate=force))

    def describe(self) -> str:
        return self.backend.describe(self.model_label)

    def close(self) -> None:
        """Release GPU buffers now rather than at exit (CPU backends hold none)."""
        release = getattr(self.backend, "close", None)
        if release is not None:
            release()

    def __enter__(self) -> "Matter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def video(self, source: str | Path, output: str | Path | None = None, *, crf: int = DEFAULT_CRF,
              audio: bool = True, batch: int | None = None, outputs: Sequence[str] = DEFAULT_OUTPUTS,
              background: str | None = None, smooth: int = 0, probed: VideoInfo | None = None) -> VideoResult:
        """Write the matte of a video (default ``<stem>.matte.mp4`` beside it) and/or the other
        ``outputs`` (green, prores, webm, png); see ``runtime.video.matte_video``."""
        return matte_video(Path(source), None if output is None else Path(output), self.backend, batch_size=batch,
                           progress=self.progress, crf=crf, audio=audio, outputs=outputs, background=background,
                           smooth=smooth, probed=probed, announce=self.announce)

    def images(self, folder: str | Path, output: str | Path | None = None, *, recursive: bool = False,
               cutout: bool = False, overwrite: bool = False) -> ImagesReport:
        """A mask (or RGBA cutout) PNG per image in ``folder`` (default output ``<folder>.masks``)."""
        return process_images(Path(folder), None if output is None else Path(output), self.backend,
                              recursive=recursive, cutout=cutout, overwrite=overwrite, progress=self.progress)

    def mask(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """The uint8 mask (HxW, 0..255) of one picture: PIL image, or uint8 array HxW, HxWx3 or HxWx4."""
        picture = to_rgb(image if isinstance(image, Image.Image) else _image_from_array(image))
        mask_320 = self.backend.run(model_input(picture)[None])[0]
        return np.asarray(mask_at_size(mask_320, picture.size))

    def frames(self, source: str | Path, batch: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(RGB frame, mask) pairs at the displayed size, in order, for custom pipelines.

        Every frame crosses to Python at full size, so this is slower than ``video``.
        """
        info = probe_video(Path(source))
        decoder = FfmpegProcess(["-i", local_path(Path(source)), "-map", "0:v:0", "-fps_mode", "passthrough",
                                 "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
                                f"decoding {Path(source).name}", pipe_stdout=True)
        frame_bytes = info.width * info.height * 3
        batch = batch or self.backend.preferred_batch
        try:
            while chunk := decoder.process.stdout.read(frame_bytes * batch):
                frames = np.frombuffer(chunk, np.uint8, len(chunk) // frame_bytes * frame_bytes)
                frames = frames.reshape(-1, info.height, info.width, 3)
                masks = self.backend.run(np.stack([model_input(Image.fromarray(frame)) for frame in frames]))
                for frame, mask_320 in zip(frames, masks):
                    yield frame, np.asarray(mask_at_size(mask_320, (info.width, info.height)))
            decoder.finish()
        finally:
            decoder.kill()


def _image_from_array(pixels: np.ndarray) -> Image.Image:
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (3, 4)):
        raise MatteError(f"expected a uint8 HxW, HxWx3 or HxWx4 array, got {pixels.dtype} {pixels.shape}")
    return Image.fromarray(pixels)


def calibrate(inputs: Sequence[str | Path], *, model: str | Path | None = None, frames: int = DEFAULT_FRAMES,
              seed: int = 0, progress: bool = False,
              announce: Callable[[str], None] = lambda message: None) -> CalibrationReport:
    """Quantize the model to INT8 on frames sampled from ``inputs`` (videos, images, folders)
    and check it against FP32; ``precision="int8"`` then uses the result."""
    resolved = resolve_model(None if model is None else str(model), progress=progress)
    return calibrate_model(resolved.path, resolved.label, [Path(source) for source in inputs], cache_dir(),
                           frames=frames, seed=seed, progress=progress, announce=announce)
