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

This module is the composition root: it picks the backend (``open_backend``), finds the
network a precision needs (the model, or its INT8 calibration) and hands it to the
engine builder, and wires the pipelines. Lower layers never choose for themselves.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import onnxruntime as ort
from PIL import Image
from tqdm import tqdm

from .build_engine.engine_cache import CachedEngine, EngineCache, EngineSpec
from .build_engine.matte_graph import NO_SHAPING, RECIPE_VERSION, MaskShape, matte_graph_path
from .build_engine.tensorrt_build import (DEFAULT_MAX_BATCH, DEFAULT_MAX_FRAME_SIDE, BuildRequest, ensure_engine,
                                          require_tensorrt_gpu)
from .calibration.calibrate import DEFAULT_FRAMES
from .calibration.calibrate import calibrate as calibrate_model
from .calibration.store import CalibrationReport, current_calibration, load_report, network_for
from . import cuda
from .cuda import gpu_count, gpu_names
from .engine.backend import Backend
from .engine.onnxruntime_backend import OnnxRuntimeBackend
from .errors import MatteError
from .files import CacheInUse, cache_for_cleaning
from .interrupts import import_held
from .media.frame_reader import FrameReader
from .media.outputs import DEFAULT_CRF, DEFAULT_OUTPUTS
from .media.pictures import model_input, to_rgb
from .media.probe import VideoInfo, probe_video
from .models import MODELS, cache_dir, resolve_model
from .onnxruntime_sessions import CUDA_PROVIDER
from .runtime.guard import PrecisionGuard
from .runtime.image_jobs import ImageJob, finished_mask, host_masks
from .runtime.images import ImagesReport, matte_image_jobs, process_images
from .runtime.segments import Segment, join_segments, matte_segment
from .runtime.stages import StagesStuck
from .runtime.video import VideoResult, matte_video
from .tensorrt_api import StaleEngine, tensorrt_available


# ---------------------------------------------------------------------------------------
# which backend runs: asking for something unavailable is an error, never a fallback

# The INT8 graph OpenVINO runs: the CPU flavour (uint8 activations, FP32 rest) ran at
# 24.8 fps with masks as close to FP32 as ONNX Runtime's; the TensorRT flavour (int8,
# FP16 rest) at 20.1 fps and IoU 0.76-0.95 (u2netp, 2-core AMD EPYC).
OPENVINO_FLAVOUR = "cpu"

BACKEND_CHOICES = ("auto", "tensorrt", "onnxruntime", "openvino")
# auto: FP16 on TensorRT, FP32 on ONNX Runtime and OpenVINO (whose CPU FP16 is slower, or bf16).
PRECISION_CHOICES = ("auto", "fp32", "fp16", "int8")
# "cuda:N" picks the N-th GPU CUDA sees (``parse_device``).
DEVICE_CHOICES = ("auto", "cpu", "cuda")

# x264's lossless setting: a hard matte's default (carphone thresholded: 71 KB at crf 0,
# 147 KB at crf 18, which rings into 16 levels at the edges).
LOSSLESS_CRF = 0

# What ``trt-matte cache`` lists and cleans: kind -> the cache's folder for it, and what it holds.
CACHE_FOLDERS = {"models": "models", "engines": "engines", "graphs": "graphs", "calibrations": "int8",
                 "openvino": "openvino", "logs": "logs"}
CACHE_CONTENTS = {"models": "downloaded models", "engines": "TensorRT engines", "graphs": "matte graphs",
                  "calibrations": "INT8 calibrations", "openvino": "compiled OpenVINO models",
                  "logs": "tracebacks of unexpected errors"}


@dataclass(frozen=True)
class BackendRequest:
    model_path: Path
    cache_dir: Path
    backend: str = "auto"
    device: str = "auto"
    threads: int | None = None
    # The CUDA device (CUDA_VISIBLE_DEVICES numbering) from --device cuda:N; None: the first.
    gpu: int | None = None
    # TensorRT: the engine's largest batch (its profile); None keeps the default.
    max_batch: int | None = None
    announce: Callable[[str], None] = lambda message: None
    precision: str = "auto"
    model_label: str | None = None
    # int8: use a calibration even when its IoU against FP32 is below the gate.
    accept_below_gate: bool = False
    # The matte graph's bound on the per-frame stretch (0: rembg's numerics).
    stretch_floor: float = 0.0
    # The host graph also returns each frame's top probability (``Backend.run_with_peaks``).
    peaks: bool = False
    # Threshold, erode, dilate, feather: in the graph, at the output size (see ``Backend``).
    shape: MaskShape = NO_SHAPING


def parse_device(text: str) -> tuple[str, int | None]:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` -> (device kind, GPU index or None)."""
    kind, colon, index = text.partition(":")
    if kind not in DEVICE_CHOICES or (colon and (kind != "cuda" or not index.isdigit())):
        raise MatteError(f"--device takes auto, cpu, cuda or cuda:N (N = 0, 1, ...), not {text!r}")
    return kind, int(index) if colon else None


def check_gpu(index: int) -> None:
    """A one-line MatteError naming the GPUs there are, when CUDA sees no GPU ``index``.
    Without cuda-python nothing can be listed: the backend says it, if ONNX Runtime's
    CUDA provider is asked for a GPU that is not there."""
    try:
        cuda.runtime_api()
    except MatteError:
        return
    names = gpu_names()
    if index < len(names):
        return
    seen = ", ".join(f"cuda:{number} ({name})" for number, name in enumerate(names)) or "no GPU"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    limited = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
    raise MatteError(f"there is no GPU cuda:{index} here: CUDA sees {seen}{limited}")


def open_backend(request: BackendRequest) -> Backend:
    """Pick and open a backend.

    auto: TensorRT when it is installed and a GPU is visible; else ONNX Runtime's CUDA
    provider when onnxruntime-gpu has one and the device is not ``cpu``; else OpenVINO
    on the CPU when it is installed; else ONNX Runtime on the CPU.
    """
    if (request.backend not in BACKEND_CHOICES or request.device not in DEVICE_CHOICES
            or request.precision not in PRECISION_CHOICES):
        raise ValueError(f"unknown backend {request.backend!r}, device {request.device!r} "
                         f"or precision {request.precision!r}")
    if request.gpu is not None:
        check_gpu(request.gpu)
    chosen = _chosen_backend(request.backend, request.device)
    opener = {"tensorrt": _open_tensorrt, "openvino": _open_openvino, "onnxruntime": _open_onnxruntime}[chosen]
    backend = opener(request)
    backend.precision = _resolved_precision(request.precision, chosen == "tensorrt")
    backend.shapes_masks = request.shape.active
    return backend


def _chosen_backend(backend: str, device: str) -> str:
    if backend != "auto":
        return backend
    if device != "cpu" and tensorrt_available() and gpu_count() > 0:
        return "tensorrt"
    if device == "cuda" or (device == "auto" and CUDA_PROVIDER in ort.get_available_providers()):
        return "onnxruntime"
    return "openvino" if openvino_available() else "onnxruntime"


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def check_explicit_openvino(backend: str, device: str) -> None:
    """Refuse an explicit OpenVINO request this install cannot serve, in one line."""
    if backend != "openvino":
        return
    if device == "cuda":
        raise MatteError("--backend openvino runs on the CPU; use --backend tensorrt or onnxruntime for the GPU")
    if not openvino_available():
        raise MatteError("--backend openvino needs OpenVINO: pip install openvino (it has no wheel for this "
                         "platform when that fails; --backend onnxruntime runs everywhere)")


def _open_openvino(request: BackendRequest) -> Backend:
    check_explicit_openvino("openvino", request.device)
    import_held("openvino")  # loaded only where it runs
    from .engine.openvino_backend import OpenVinoBackend

    precision = _resolved_precision(request.precision, tensorrt=False)
    if precision == "fp16":
        raise MatteError("OpenVINO runs fp32 or int8 here (FP16 is the GPU's); use --precision fp32 or int8")
    network = network_for(request.model_path, request.cache_dir, precision, OPENVINO_FLAVOUR,
                          model_label=request.model_label, accept_below_gate=request.accept_below_gate)
    graph = _host_graph(network, request, precision)
    return OpenVinoBackend(graph, request.cache_dir / CACHE_FOLDERS["openvino"], threads=request.threads)


def reference_request(request: BackendRequest, reduced: Backend) -> BackendRequest:
    """The FP32 backend a reduced-precision one is checked against: the same runtime on the
    CPU; on a GPU, ONNX Runtime (CUDA where installed, else the CPU), never a second engine."""
    on_cpu = reduced.device == "cpu" and not reduced.takes_device_batches
    return replace(request, backend=reduced.name if on_cpu else "onnxruntime",
                   device="cpu" if on_cpu else "auto", precision="fp32", accept_below_gate=False, peaks=True)


def _resolved_precision(precision: str, tensorrt: bool) -> str:
    if precision != "auto":
        return precision
    return "fp16" if tensorrt else "fp32"


def _open_onnxruntime(request: BackendRequest) -> Backend:
    precision = _resolved_precision(request.precision, tensorrt=False)
    network = network_for(request.model_path, request.cache_dir, precision, "cpu", model_label=request.model_label,
                          accept_below_gate=request.accept_below_gate)
    graph = _host_graph(network, request, precision)
    gpu = request.gpu or 0
    backend = OnnxRuntimeBackend(graph, device=request.device, threads=request.threads, gpu_index=gpu)
    if backend.device == "cuda" and gpu_pipeline_available():
        from .engine.onnxruntime_cuda import OnnxRuntimeCudaBackend  # cuda-python only where it runs
        upsizing = matte_graph_path(network, request.cache_dir, precision, upsize=True,
                                    stretch_floor=request.stretch_floor, shape=request.shape)
        return OnnxRuntimeCudaBackend(graph, upsizing, threads=request.threads, gpu_index=gpu)
    return backend


def _host_graph(network: Path, request: BackendRequest, precision: str) -> Path:
    """The graph a host backend runs: 320x320 masks, or with mask shaping the upsizing
    graph (``Backend.run_at_size``)."""
    return matte_graph_path(network, request.cache_dir, precision, upsize=request.shape.active,
                            stretch_floor=request.stretch_floor, peaks=request.peaks, shape=request.shape)


def gpu_pipeline_available() -> bool:
    """Whether the zero-copy video stages can run: cuda-python and DALI importable."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in ("cuda.bindings", "nvidia.dali"))
    except ModuleNotFoundError:  # find_spec imports the parent package ("cuda", "nvidia")
        return False


def check_explicit_tensorrt(backend: str, device: str) -> None:
    """Refuse an explicit TensorRT request this machine cannot serve, in one line; cheap,
    so callers run it before downloading a model that would go unused."""
    if backend != "tensorrt":
        return
    if device == "cpu":
        raise MatteError("--backend tensorrt runs on an NVIDIA GPU; use --backend onnxruntime for the CPU")
    require_tensorrt_gpu()


def _open_tensorrt(request: BackendRequest) -> Backend:
    from .engine.tensorrt_backend import TensorRTBackend  # cuda-python only where it runs

    check_explicit_tensorrt("tensorrt", request.device)
    gpu = request.gpu or 0
    cuda.use_device(gpu)  # the engine is built for, and loaded on, this GPU
    precision = _resolved_precision(request.precision, tensorrt=True)
    network = network_for(request.model_path, request.cache_dir, precision, "tensorrt",
                          model_label=request.model_label, accept_below_gate=request.accept_below_gate)
    build_request = BuildRequest(network, precision, max_batch=request.max_batch or DEFAULT_MAX_BATCH,
                                 stretch_floor=request.stretch_floor, shape=request.shape)
    cached, spec = ensure_engine(build_request, request.cache_dir, announce=request.announce)
    try:
        return TensorRTBackend(cached.path, spec.max_batch, spec.max_frame_side, build_request.max_batch, gpu)
    except StaleEngine as stale:
        request.announce(f"{stale}; rebuilding it")
        EngineCache(request.cache_dir).discard(spec)
        cached, spec = ensure_engine(build_request, request.cache_dir, rebuild=True, announce=request.announce)
        return TensorRTBackend(cached.path, spec.max_batch, spec.max_frame_side, build_request.max_batch, gpu)


# ---------------------------------------------------------------------------------------
# engines and calibrations


def build(model: str | Path | None = None, *, precision: str = "fp16", max_batch: int = DEFAULT_MAX_BATCH,
          max_frame_side: int = DEFAULT_MAX_FRAME_SIDE, overwrite: bool = False, accept_below_gate: bool = False,
          stretch_floor: float = 0.0, device: str = "cuda",
          progress: bool = False, announce: Callable[[str], None] = lambda message: None
          ) -> tuple[CachedEngine, EngineSpec, str]:
    """The TensorRT engine for ``model`` on this GPU (``device``: cuda or cuda:N), built
    unless a cached one fits (or ``overwrite``): (the cached engine, its spec, the model's label)."""
    kind, gpu = parse_device(device)
    if kind == "cpu":
        raise MatteError("a TensorRT engine is built on a GPU: --device cuda or cuda:N")
    require_tensorrt_gpu()  # before a model download that would be wasted
    if gpu is not None:
        check_gpu(gpu)
    cuda.use_device(gpu or 0)
    with _cache_held():
        resolved = resolve_model(None if model is None else str(model), progress=progress)
        network = network_for(resolved.path, cache_dir(), precision, "tensorrt", model_label=resolved.label,
                              accept_below_gate=accept_below_gate)
        cached, spec = ensure_engine(BuildRequest(network, precision, max_batch, max_frame_side,
                                                  stretch_floor=stretch_floor), cache_dir(),
                                     rebuild=overwrite, announce=announce)
    return cached, spec, resolved.label


@contextlib.contextmanager
def _cache_held() -> Iterator[None]:
    """The cache held shared (``files.CacheInUse``) for the block."""
    hold = CacheInUse(cache_dir())
    try:
        yield
    finally:
        hold.release()


class Matter:
    """One model on one backend, reused for every call."""

    def __init__(self, model: str | Path | None = None, *, backend: str = "auto", device: str = "auto",
                 threads: int | None = None, batch: int | None = None, precision: str = "auto",
                 force: bool = False, stretch_floor: float = 0.0, threshold: int = 0, erode: int = 0,
                 dilate: int = 0, feather: int = 0, progress: bool = False,
                 announce: Callable[[str], None] = lambda message: None):
        """``precision``: auto (FP16 on TensorRT, FP32 on the CPU), fp32, fp16, or int8 (after
        ``calibrate``). Videos in a reduced precision are checked against FP32 on their
        own frames and written in FP32 when below the accuracy gate (``runtime.guard``);
        ``force`` keeps the reduced precision then, and accepts an INT8 calibration below
        the gate. ``stretch_floor`` F > 0 divides each frame's output by at least F instead
        of its own range: frames without a subject stay dark (see README, "Empty frames").
        ``threshold`` (1..255: a hard matte), ``erode``, ``dilate`` and ``feather`` (pixels)
        shape every mask at its output size, in the graph (``MaskShape``); 0 leaves them out.
        ``device``: auto, cpu, cuda, or cuda:N for the N-th GPU CUDA sees."""
        shape = MaskShape(threshold, erode, dilate, feather)  # bad values fail before any loading
        device, gpu = parse_device(device)
        check_explicit_tensorrt(backend, device)  # before a model download that would go unused
        check_explicit_openvino(backend, device)
        if gpu is not None:
            check_gpu(gpu)
        self._cache_hold = CacheInUse(cache_dir())  # released by close()
        try:
            resolved = resolve_model(None if model is None else str(model), progress=progress)
            self.model_label = resolved.label
            self.progress = progress
            self.announce = announce
            self._request = BackendRequest(resolved.path, cache_dir(), backend, device, threads, gpu, max_batch=batch,
                                           announce=announce, precision=precision, model_label=resolved.label,
                                           accept_below_gate=force, stretch_floor=stretch_floor, shape=shape)
            self.backend: Backend = open_backend(self._request)
        except BaseException:
            self._cache_hold.release()
            raise
        self._reference: Backend | None = None  # FP32, opened for the guard on first use

    def _hint_own_calibration(self, source: Path) -> None:
        """INT8 calibrated on other footage may not hold on this one: say how to calibrate
        on it (a hint, never a prompt: batch runs have no terminal)."""
        if self.backend.precision != "int8":
            return
        report = load_report(current_calibration(self._request.model_path, cache_dir(), self.model_label))
        if source.resolve() not in {Path(name).resolve() for name in report.inputs}:
            made_from = ", ".join(Path(name).name for name in report.inputs[:3])
            model = self.model_label if self.model_label in MODELS else self._request.model_path
            self.announce(f"note: the INT8 calibration was made from {made_from}, not {source.name}; the run is "
                          f"checked against FP32; 'trt-matte calibrate {source} --model {model}' (or "
                          "--calibrate-first) calibrates on it")

    def _guard(self) -> PrecisionGuard | None:
        """A fresh guard for one run when the backend runs a reduced precision."""
        if self.backend.precision == "fp32":
            return None
        if self._reference is None:
            self._reference = open_backend(reference_request(self._request, self.backend))
        return PrecisionGuard(self._reference, self._request.accept_below_gate, self.announce)

    def describe(self) -> str:
        return self.backend.describe(self.model_label)

    def close(self) -> None:
        """Release the backends' GPU memory now rather than at exit; safe to call twice."""
        try:
            self.backend.close()
            if self._reference is not None:
                self._reference.close()
        finally:
            self._cache_hold.release()

    def __enter__(self) -> "Matter":
        return self

    def __exit__(self, error_type: type | None, error: BaseException | None, traceback: object) -> None:
        if isinstance(error, StagesStuck):
            return  # a pipeline thread may still use the backend's memory: leave it to the process exit
        try:
            self.close()
        except Exception:
            if error is None:
                raise  # otherwise the error that ended the block is the one to report

    def video(self, source: str | Path, output: str | Path | None = None, *, crf: int | None = None,
              audio: bool = True, batch: int | None = None, outputs: Sequence[str] = DEFAULT_OUTPUTS,
              background: str | None = None, smooth: int = 0, probed: VideoInfo | None = None,
              overwrite: bool = False, start: Fraction | float | None = None,
              end: Fraction | float | None = None, preview: bool = False) -> VideoResult:
        """Write the matte of a video (default ``<stem>.matte.mp4`` beside it) and/or the other
        ``outputs`` (green, prores, webm, png); outputs that exist are kept unless
        ``overwrite``. ``crf``: the x264 outputs' quality; by default DEFAULT_CRF, or 0
        (lossless) with a hard matte (``threshold`` without ``feather``), which keeps it
        exactly 0 and 255 and is smaller too. ``start`` and ``end`` (seconds from the first
        frame) matte only that part, timed from ``start``; ``preview`` a few seconds from the
        middle, into ``<stem>.preview.<kind>`` outputs. See ``runtime.video.matte_video``."""
        self._hint_own_calibration(Path(source))
        return matte_video(Path(source), None if output is None else Path(output), self.backend, batch_size=batch,
                           progress=self.progress, crf=self._crf(crf), audio=audio, outputs=outputs, background=background,
                           smooth=smooth, probed=probed, overwrite=overwrite, guard=self._guard(),
                           start=_exact(start), end=_exact(end), preview=preview, announce=self.announce)

    def _crf(self, crf: int | None) -> int:
        return resolved_crf(crf, self._request.shape)

    def segment(self, source: Path, target: Path, first: int, count: int, info: VideoInfo | None = None) -> Segment:
        """A split run's share: the masks of frames ``first`` to ``first + count - 1`` of
        ``source`` into the mask file ``target`` (``runtime.segments``)."""
        return matte_segment(Path(source), Path(target), self.backend, first, count, info=info, guard=self._guard(),
                             announce=self.announce)

    def join(self, source: Path, target: Path, segments: list[Segment], *, crf: int | None = None,
             audio: bool = True, smooth: int = 0, info: VideoInfo | None = None) -> VideoInfo:
        """The matte of ``source`` from its segments' masks, as ``video`` would write it."""
        return join_segments(Path(source), Path(target), segments, crf=self._crf(crf), audio=audio, smooth=smooth,
                             info=info)

    def images(self, folder: str | Path, output: str | Path | None = None, *, recursive: bool = False,
               cutout: bool = False, overwrite: bool = False) -> ImagesReport:
        """A mask (or RGBA cutout) PNG per image in ``folder`` (default output ``<folder>.masks``)."""
        return process_images(Path(folder), None if output is None else Path(output), self.backend,
                              recursive=recursive, cutout=cutout, overwrite=overwrite, progress=self.progress,
                              guard=self._guard(), announce=self.announce)

    def image_jobs(self, jobs: list[ImageJob], *, bar: tqdm, output_dir: Path,
                   cutout: bool = False) -> list[tuple[Path, str]]:
        """Write each job's mask (or cutout) PNG, as ``images`` does for a folder, advancing
        ``bar`` per image (``output_dir``: the folder a full disk is reported for); returns
        the pictures that could not be read, with the reason."""
        failed: list[tuple[Path, str]] = []
        matte_image_jobs(jobs, self.backend, cutout=cutout, bar=bar, failed=failed, output_dir=output_dir,
                         guard=self._guard())
        return failed

    def mask(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """The uint8 mask (HxW, 0..255) of one picture: PIL image, or uint8 array HxW, HxWx3 or HxWx4."""
        picture = to_rgb(image if isinstance(image, Image.Image) else _image_from_array(image))
        return self._masks_at(model_input(picture)[None], picture.size)[0]

    def frames(self, source: str | Path, batch: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(RGB frame, mask) pairs at the displayed size, in order, for custom pipelines.

        Every frame crosses to Python at full size, so this is slower than ``video``.
        """
        info = probe_video(Path(source))
        reader = FrameReader(Path(source), display_size=(info.width, info.height))
        try:
            for frames in reader.batches(batch or self.backend.preferred_batch):
                rgb_batch = np.stack([model_input(Image.fromarray(frame)) for frame in frames])
                yield from zip(frames, self._masks_at(rgb_batch, (info.width, info.height)))
        finally:
            reader.kill()

    def _masks_at(self, rgb_batch: np.ndarray, size: tuple[int, int]) -> list[np.ndarray]:
        """Masks at ``size`` (width, height): rembg's Lanczos upscale, or the graph's own
        upsizing where it shapes the masks."""
        return [np.asarray(finished_mask(mask, size)) for mask in host_masks(self.backend, rgb_batch,
                                                                             [size] * len(rgb_batch))]


def resolved_crf(crf: int | None, shape: MaskShape) -> int:
    """The x264 quality a video run uses: ``crf``, else DEFAULT_CRF, or lossless for a hard matte."""
    return crf if crf is not None else LOSSLESS_CRF if shape.hard else DEFAULT_CRF


def _exact(seconds: Fraction | float | None) -> Fraction | None:
    """A time as a Fraction; a float by its shortest decimal (1.1 -> 11/10, not 1.1000000000000000888)."""
    return None if seconds is None else Fraction(seconds if isinstance(seconds, Fraction) else repr(float(seconds)))


def _image_from_array(pixels: np.ndarray) -> Image.Image:
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (3, 4)):
        raise MatteError(f"expected a uint8 HxW, HxWx3 or HxWx4 array, got {pixels.dtype} {pixels.shape}")
    return Image.fromarray(pixels)


def calibrate(inputs: Sequence[str | Path], *, model: str | Path | None = None, frames: int = DEFAULT_FRAMES,
              seed: int = 0, overwrite: bool = False, progress: bool = False,
              announce: Callable[[str], None] = lambda message: None) -> CalibrationReport:
    """Quantize the model to INT8 on frames sampled from ``inputs`` (videos, images, folders)
    and check it against FP32; ``precision="int8"`` then uses the result. The same frames
    calibrated before reuse that calibration unless ``overwrite``."""
    with _cache_held():
        resolved = resolve_model(None if model is None else str(model), progress=progress)
        return calibrate_model(resolved.path, resolved.label, [Path(source) for source in inputs], cache_dir(),
                               frames=frames, seed=seed, overwrite=overwrite, progress=progress, announce=announce)


@dataclass(frozen=True)
class CacheEntry:
    kind: str  # a key of CACHE_FOLDERS
    path: Path
    bytes: int
    modified: float  # seconds since the epoch
    made_from: str


def cache_entries() -> list[CacheEntry]:
    """Everything the cache holds, kind by kind, each with what made it."""
    def under(kind: str, pattern: str) -> list[Path]:
        return sorted((cache_dir() / CACHE_FOLDERS[kind]).glob(pattern))

    return [*(_entry("models", path, "a model file (downloaded or copied)") for path in under("models", "*.onnx")),
            *(_engine_entry(sidecar) for sidecar in under("engines", "*/*.json")),
            *(_entry("graphs", path, _graph_origin(path.name)) for path in under("graphs", "*.onnx")),
            *(_calibration_entry(folder) for folder in under("calibrations", "*/*") if folder.is_dir()),
            *(_entry("openvino", path, "OpenVINO's compiled model") for path in under("openvino", "*")),
            *(_entry("logs", path, "the traceback of an unexpected error") for path in under("logs", "*"))]


def clean_cache(kinds: Sequence[str]) -> tuple[int, int]:
    """Remove the cache's folders for ``kinds``; (entries removed, bytes freed). A one-line
    MatteError, removing nothing, while another trt-matte process uses the cache."""
    unknown = sorted(set(kinds) - set(CACHE_FOLDERS))
    if unknown:
        raise ValueError(f"unknown cache kinds {unknown}")
    with cache_for_cleaning(cache_dir()):
        removed = [entry for entry in cache_entries() if entry.kind in kinds]
        for kind in kinds:
            shutil.rmtree(cache_dir() / CACHE_FOLDERS[kind], ignore_errors=True)
    return len(removed), sum(entry.bytes for entry in removed)


def _entry(kind: str, path: Path, made_from: str) -> CacheEntry:
    size = sum(item.stat().st_size for item in path.rglob("*") if item.is_file()) if path.is_dir() \
        else path.stat().st_size
    return CacheEntry(kind, path, size, path.stat().st_mtime, made_from)


def _graph_origin(name: str) -> str:
    """``matte-v5-int8-floor0.5-<digest>.onnx`` -> what made it."""
    parts = name.removesuffix(".onnx").split("-")
    variant = " ".join(parts[2:-1])
    stale = "" if parts[1] == f"v{RECIPE_VERSION}" else f"; from an older trt-matte ({parts[1]}), no longer used"
    return f"the matte graph ({variant}) of the network with SHA-256 {parts[-1]}...{stale}"


def _engine_entry(sidecar_path: Path) -> CacheEntry:
    try:
        spec = json.loads(sidecar_path.read_text())["spec"]
        made = (f"TensorRT {spec['tensorrt_version']} {spec['precision']} engine for {spec['gpu']['name']}, "
                f"batches up to {spec['max_batch']}, frames up to {spec['max_frame_side']} px")
    except (OSError, ValueError, KeyError, TypeError):
        made = "a TensorRT engine whose description cannot be read"
    engine = sidecar_path.with_suffix(".engine")
    entry = _entry("engines", sidecar_path, made)
    return replace(entry, path=engine, bytes=entry.bytes + (engine.stat().st_size if engine.is_file() else 0))


def _calibration_entry(folder: Path) -> CacheEntry:
    try:
        report = load_report(folder)
        sources = ", ".join(Path(name).name for name in report.inputs[:3]) + (" ..." if len(report.inputs) > 3 else "")
        made = (f"INT8 calibration of {report.model} on {report.calibration_frames} frames of {sources}; "
                f"CPU graph IoU {report.accuracy['cpu'].iou:.3f}")
    except (OSError, ValueError, KeyError, TypeError, MatteError):
        made = "an INT8 calibration whose report cannot be read"
    return _entry("calibrations", folder, made)
