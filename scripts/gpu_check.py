"""GPU check: trt-matte's GPU path tested, checked for accuracy and benchmarked.

Run on a GPU machine after ``pip install -e '.[gpu,test]'`` (add onnxruntime-gpu, in
place of onnxruntime, for the ONNX Runtime CUDA path and the frame-by-frame peer):

    python scripts/gpu_check.py [--model NAME|PATH] [--clip PATH] [--frames N] [--batch N]
                                [--steps tests,engine,accuracy,bench] [--tests-timeout S]
                                [--peer-frames N] [--work-dir DIR] [--json PATH] [--debug]

    python scripts/gpu_check.py                            # u2netp, carphone, 1800 frames at 1080p
    python scripts/gpu_check.py --steps tests              # each step fits a 10-minute slot...
    python scripts/gpu_check.py --steps engine,accuracy,bench --work-dir /tmp/gc --json gpu.json

The test assets default to ../shared beside the checkout (or $TRT_MATTE_SHARED); the
check never downloads a model by itself. Every step prints one PASS, FAIL or SKIP line
with its reason (WARN lines add notes), and --json is rewritten after every step, so a
run cut short keeps what it found:

1. environment (always): the GPU (cuda-python), TensorRT, ONNX Runtime's providers and
   packages, DALI with NVDEC (a one-frame H.264 decode: NVDEC needs the driver's
   libnvcuvid), ffmpeg, the model and the clip;
2. tests: the GPU tests, ``pytest -m gpu tests`` in a child process. The step cannot
   pass by skipping: a test skipped for a missing asset or DALI fails it; one skipped
   for TensorRT leaves the whole check INCOMPLETE; only a skip for an optional package
   (onnxruntime-gpu) is a warning, named;
3. engine: the TensorRT engine for the model (``ensure_engine``): build time and size;
   then the GPU backend the next steps use;
4. accuracy on the clip's 320x320 frames (ffmpeg's reader): GPU masks against the CPU
   FP32 matte graph, mean abs error <= 1/255, mean IoU at 128 >= 0.98, and no constant
   mask where the CPU's is not (masks are uint8, so a NaN or an FP16 overflow can only
   show that way: it spreads through the per-image min-max to the whole mask); then the
   whole GPU video path (DALI decode, engine, upsizing, encoder) against the CPU matte
   of the same clip, IoU over all frames >= 0.97 and mean abs error <= 3/255; a run
   that fell back to the ffmpeg reader fails;
5. bench, on a 1080p H.264 clip made from the clip (Lanczos, x264 crf 18, looped to
   ``--frames``; kept in --work-dir for the next run), all on the same GPU: (a) DALI
   decode + resize alone, (b) the engine alone per batch size (device buffers, 1080p
   output), (c) ffmpeg encode alone (the engine's 1080p masks, cycled), (d) trt-matte end
   to end (``matte_video``; a fall-back to the ffmpeg reader fails it), (e) rembg's way, frame by frame on ONNX Runtime CUDA, over
   ``--peer-frames`` frames (its rate is steady); then one table and the targets
   end-to-end >= 0.90 x the slowest of (a, best of b, c) and >= 30 x frame-by-frame.

Without TensorRT, steps 4, 5b and 5d run on ONNX Runtime CUDA's device backend (the
same zero-copy interface) and are labelled so, and the run ends INCOMPLETE (exit 1),
naming what did not run. Stages are timed as a file pays them:
DALI's reader set-up (it indexes the file) and the encoder's start and finish are
inside the timings; engine or session creation, DALI's one-time start-up and one
warm-up run are not.

Exit status: 0 when every step passed with TensorRT (and, with the bench step, both
targets were measured), 1 when a check failed, TensorRT or a target was missing, or CUDA cannot start,
2 when CUDA sees no GPU (one line, nothing checked). Failures print one line each;
``--debug`` adds their tracebacks.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from bench_cpu import (
    DEFAULT_CLIP,
    DEFAULT_MODEL_FILE,
    REPO_ROOT,
    BenchError,
    Check,
    make_test_clip,
    peer_session,
    positive_int,
    run_ffmpeg,
    run_peer,
)

from trt_matte.accuracy import mask_iou, mean_abs_error
from trt_matte.api import BackendRequest, open_backend
from trt_matte.build_engine.matte_graph import matte_graph_path
from trt_matte.build_engine.tensorrt_build import DEFAULT_MAX_BATCH, BuildRequest, ensure_engine
from trt_matte.cuda import DeviceBuffer, check, copy_async, current_device, device_name_and_capability, runtime_api
from trt_matte.engine.backend import Backend
from trt_matte.engine.onnxruntime_backend import OnnxRuntimeBackend
from trt_matte.errors import MatteError
from trt_matte.media.dali import dali_available
from trt_matte.media.dali_video import DaliFrameReader
from trt_matte.media.encoder import MatteEncoder
from trt_matte.media.ffmpeg import ffmpeg_exe
from trt_matte.media.frame_reader import FrameReader
from trt_matte.media.outputs import DEFAULT_CRF
from trt_matte.media.probe import VideoInfo, probe_video
from trt_matte.models import MODEL_SIZE, cache_dir, resolve_model
from trt_matte.onnxruntime_sessions import CPU_PROVIDER, CUDA_PROVIDER, preload_cuda_libraries
from trt_matte.runtime.video import matte_video
from trt_matte.tensorrt_api import import_tensorrt, tensorrt_available

# At several hundred fps, 1800 frames take seconds a stage: fixed start-up costs
# (ffmpeg processes, DALI's indexing, the final remux) stay a few percent of it.
DEFAULT_FRAMES = 1800
DEFAULT_PEER_FRAMES = 300
STEPS = ("tests", "engine", "accuracy", "bench")
ENGINE_BATCHES = (1, 4, 8, 16)
ACCURACY_FRAMES = 240  # the CPU reference runs them all; carphone has 120
MAX_MEAN_ABS_ERROR = 1.0  # 1/255 on 0..255 masks
MIN_MEAN_IOU = 0.98  # as tests/test_gpu.py
# The whole GPU video path (DALI decode, engine, upsizing, encoder) against the CPU matte:
# IoU over all frames together, as DESIGN.md defines it, and mean abs error.
MIN_VIDEO_IOU = 0.97
MAX_VIDEO_ABS_ERROR = 3.0
# What the GPU tests may skip for: a package this machine may lack on purpose (a WARN).
# Any other skip (a missing asset, DALI) means the machine was not set up: a FAIL. A
# skip for TensorRT leaves the check INCOMPLETE rather than failed.
OPTIONAL_SKIPS = ("onnxruntime-gpu",)
TENSORRT_SKIPS = ("tensorrt",)
MIN_E2E_VS_SLOWEST = 0.90
MIN_E2E_VS_PEER = 30.0
# The GPU tests build several engines; a lent machine runs a command for 10 minutes at most.
TESTS_TIMEOUT_S = 480
EXIT_FAILED, EXIT_NO_GPU = 1, 2
PASS, FAIL, SKIP, WARN = "PASS", "FAIL", "SKIP", "WARN"
# What a run without TensorRT could not check, named in its INCOMPLETE verdict.
NEEDS_TENSORRT = "the TensorRT engine (build, FP16 and INT8 accuracy, speed)"


# ---- reporting ------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    """What a step found: its line's detail, the value later steps use, and extra lines."""

    detail: str
    value: Any = None
    status: str = PASS
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Line:
    step: str
    status: str
    detail: str


class Report:
    """The lines printed so far and the numbers behind them, saved as JSON after each line."""

    def __init__(self, debug: bool, json_path: Path | None, config: dict[str, Any]):
        self.debug = debug
        self.json_path = json_path
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.lines: list[Line] = []
        self.numbers: dict[str, Any] = {}
        self.environment: Environment | None = None
        self.timings: list[Timing] = []
        self.verdicts: list[Check] = []

    def add(self, step: str, status: str, detail: str, echo: bool = True) -> None:
        self.lines.append(Line(step, status, detail))
        if echo:
            print(f"{status}  {step}: {detail}", flush=True)
        self.save()

    def save(self) -> None:
        if self.json_path is None:
            return
        document = {
            "config": self.config,
            "environment": asdict(self.environment) if self.environment else None,
            "steps": [asdict(line) for line in self.lines],
            "results": self.numbers,
            "stages": [{**asdict(timing), "fps": timing.fps} for timing in self.timings],
            "ratios": [{**asdict(verdict), "passed": verdict.passed} for verdict in self.verdicts],
        }
        self.json_path.write_text(json.dumps(document, indent=2, default=str) + "\n")

    def note(self, text: str) -> None:
        print(f"      {text}", flush=True)

    def attempt(self, step: str, action: Callable[..., Outcome], *args: Any,
                needs: dict[str, Any] | None = None) -> Any:
        """Run one step and print its line; returns its value (None when skipped or raised).

        A step whose inputs (``needs``) are missing is skipped; an exception becomes its
        FAIL line, with the traceback only under --debug.
        """
        missing = [name for name, value in (needs or {}).items() if value is None]
        if missing:
            self.add(step, SKIP, f"needs {' and '.join(missing)} (see above)")
            return None
        try:
            outcome = action(*args)
        except Exception as exc:  # noqa: BLE001 -- any failure is one line; the next steps still run
            if self.debug:
                traceback.print_exc()
            self.add(step, FAIL, one_line(exc))
            return None
        self.add(step, outcome.status, outcome.detail)
        for warning in outcome.warnings:
            self.add(step, WARN, warning)
        for note in outcome.notes:
            self.note(note)
        return outcome.value

    def count(self, status: str) -> int:
        return sum(line.status == status for line in self.lines)


def one_line(exc: BaseException) -> str:
    """The message's first line; the exception's type too unless it is one of ours."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if first and isinstance(exc, (MatteError, BenchError)):
        return first
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def skip(reason: str) -> Outcome:
    return Outcome(reason, status=SKIP)


@dataclass(frozen=True)
class Timing:
    stage: str
    frames: int
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    def summary(self) -> str:
        return f"{self.frames} frames in {self.seconds:.2f} s, {self.fps:.1f} fps"


# ---- 1. environment -------------------------------------------------------------------

@dataclass
class Environment:
    gpu: str | None = None
    tensorrt: str | None = None
    cuda_provider: bool | None = None
    dali: str | None = None
    ffmpeg: str | None = None
    model: Path | None = None
    clip: Path | None = None


def check_gpu() -> Outcome:
    """The GPU's description (main() has made sure CUDA sees one)."""
    cudart = runtime_api()
    count = check(cudart.cudaGetDeviceCount(), "counting GPUs")
    name, capability = device_name_and_capability(0)
    driver = check(cudart.cudaDriverGetVersion(), "reading the driver's CUDA version")
    others = f", device 0 of {count}" if count > 1 else ""
    return Outcome(f"{name}, compute capability {capability}, driver for CUDA {driver // 1000}.{driver % 1000 // 10}"
                   f"{others}", f"{name} (sm {capability})")


def check_tensorrt() -> Outcome:
    if not tensorrt_available():
        return skip("absent; the GPU steps use ONNX Runtime CUDA where onnxruntime-gpu is installed")
    version = import_tensorrt().__version__
    return Outcome(version, version)


def check_onnxruntime() -> Outcome:
    import importlib.metadata
    packages = sorted(f"{dist.metadata['Name']} {dist.version}" for dist in importlib.metadata.distributions()
                      if (dist.metadata["Name"] or "").lower().startswith("onnxruntime"))
    providers = ort.get_available_providers()
    on_cuda = CUDA_PROVIDER in providers
    note = "" if on_cuda else " (no CUDA provider: onnxruntime-gpu is absent, or the CPU package shadows it)"
    warnings = ()
    if len(packages) > 1:
        warnings = (f"{' and '.join(packages)} are installed together and overwrite each other's files: "
                    "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu",)
    return Outcome(f"{ort.__version__} from {Path(ort.__file__).parent}, providers {', '.join(providers)}{note}",
                   on_cuda, warnings=warnings)


def check_dali() -> Outcome:
    """DALI, and NVDEC through it: one H.264 frame decoded on the GPU, since NVDEC needs the
    driver's libnvcuvid, which nothing else probes before the long steps."""
    if not dali_available():
        return Outcome("absent or broken: pip install -e '.[gpu]'", status=FAIL)
    import nvidia.dali
    with tempfile.TemporaryDirectory(prefix="gpu-check-nvdec-") as folder:
        clip = Path(folder) / "one-frame.mp4"
        run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-frames:v", "1", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", str(clip)], "making a one-frame H.264 clip")
        reader = DaliFrameReader(clip, 1, 1, device_id=current_device())
        try:
            frames = sum(batch.frames for batch in reader.batches())
        finally:
            reader.close()
    if frames != 1:
        return Outcome(f"{nvidia.dali.__version__}, but NVDEC decoded {frames} frames of 1", status=FAIL)
    return Outcome(f"{nvidia.dali.__version__}; NVDEC decoded a one-frame H.264 clip", nvidia.dali.__version__)


def check_ffmpeg() -> Outcome:
    executable = ffmpeg_exe()
    banner = run_ffmpeg(["-version"], "reading its version").decode(errors="replace").splitlines()
    version = banner[0].split(" Copyright")[0].removeprefix("ffmpeg version ") if banner else "unknown version"
    if "libx264" not in run_ffmpeg(["-encoders"], "listing its encoders").decode(errors="replace"):
        return Outcome(f"{executable} ({version}) has no libx264 encoder", status=FAIL)
    return Outcome(f"{executable} ({version})", executable)


def check_model(spec: str | None) -> Outcome:
    if spec is None and not DEFAULT_MODEL_FILE.is_file():
        return Outcome(f"no {DEFAULT_MODEL_FILE} (set TRT_MATTE_SHARED, or pass --model PATH or a registry "
                       "name: the check does not download by itself)", status=FAIL)
    model = DEFAULT_MODEL_FILE if spec is None else resolve_model(spec).path
    return Outcome(f"{model} ({model.stat().st_size / 1e6:.1f} MB)", model)


def check_clip(clip: Path) -> Outcome:
    info = probe_video(clip)
    return Outcome(f"{clip} ({info.frame_count} frames, {info.width}x{info.height})", clip)


def check_environment(report: Report, args: argparse.Namespace) -> Environment:
    return Environment(
        gpu=report.attempt("1 gpu", check_gpu),
        tensorrt=report.attempt("1 tensorrt", check_tensorrt),
        cuda_provider=report.attempt("1 onnxruntime", check_onnxruntime),
        dali=report.attempt("1 dali", check_dali),
        ffmpeg=report.attempt("1 ffmpeg", check_ffmpeg),
        model=report.attempt("1 model", check_model, args.model),
        clip=report.attempt("1 clip", check_clip, args.clip))


# ---- 2. the GPU tests -----------------------------------------------------------------

def run_gpu_tests(timeout_s: int) -> Outcome:
    # -rfEs: the reasons of skips (warnings here) and the names of failures and errors.
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "tests", "-q", "-rfEs", "-p", "no:cacheprovider"]
    try:
        done = subprocess.run(command, check=False, cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise BenchError(f"the GPU tests ran past {timeout_s} s (--tests-timeout)") from None
    lines = done.stdout.strip().splitlines() or done.stderr.strip().splitlines() or ["no output"]
    counts = {word: int(number) for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", lines[-1])}
    fatal, tensorrt, optional = classify_skips(lines)
    passed = done.returncode == 0 and counts.get("passed", 0) > 0 and not fatal
    summary = ", ".join(f"{number} {word}" for word, number in counts.items()) or lines[-1]
    if fatal:
        summary += f"; {len(fatal)} skipped for what this machine should have (assets, DALI): not a pass"
    return Outcome(
        summary, {**counts, "tensorrt_skips": len(tensorrt)}, PASS if passed else FAIL,
        warnings=tuple(f"skipped {line}" for line in (*fatal, *tensorrt, *optional)),
        notes=tuple(line for line in lines if line.startswith(("FAILED", "ERROR"))))


def classify_skips(lines: list[str]) -> tuple[list[str], list[str], list[str]]:
    """pytest's ``SKIPPED [n] file:line: reason`` lines, split into (fatal: the check cannot
    pass with them; TensorRT absent: the check is incomplete; optional packages)."""
    fatal, tensorrt, optional = [], [], []
    for line in lines:
        if not line.startswith("SKIPPED"):
            continue
        reason = line.removeprefix("SKIPPED ").split(": ", 1)[-1]
        if any(name in reason for name in OPTIONAL_SKIPS):
            optional.append(line.removeprefix("SKIPPED "))
        elif any(re.search(rf"\b{name}\b", reason) for name in TENSORRT_SKIPS) and "tensorrt_bindings" not in reason:
            tensorrt.append(line.removeprefix("SKIPPED "))
        else:
            fatal.append(line.removeprefix("SKIPPED "))
    return fatal, tensorrt, optional


# ---- 3. engine and backend ------------------------------------------------------------

def build_engine(model: Path, max_batch: int, tensorrt: str | None, announce: Callable[[str], None]) -> Outcome:
    if tensorrt is None:
        return skip("TensorRT is absent")
    started = time.perf_counter()
    cached, spec = ensure_engine(BuildRequest(model, max_batch=max_batch), cache_dir(), announce=announce)
    seconds = time.perf_counter() - started
    build_seconds = seconds if cached.fresh else cached.sidecar.get("build_seconds")
    megabytes = cached.path.stat().st_size / 1e6
    how = f"built in {seconds:.0f} s" if cached.fresh else f"found in the cache (built in {build_seconds} s)"
    return Outcome(f"{how}, {megabytes:.1f} MB, batch 1..{spec.max_batch}, frames up to {spec.max_frame_side} px "
                   f"a side: {cached.path}",
                   {"path": str(cached.path), "megabytes": megabytes, "built_now": cached.fresh,
                    "build_seconds": build_seconds, "max_batch": spec.max_batch})


def open_gpu_backend(env: Environment, max_batch: int, announce: Callable[[str], None]) -> Outcome:
    if env.tensorrt:
        kind = "tensorrt"
    elif env.cuda_provider:
        kind = "onnxruntime"
    else:
        return Outcome("neither TensorRT nor onnxruntime-gpu is installed: pip install -e '.[gpu]'", status=FAIL)
    backend = open_backend(BackendRequest(env.model, cache_dir(), backend=kind, device="cuda", max_batch=max_batch,
                                          announce=announce))
    if not backend.takes_device_batches:
        raise BenchError(f"{backend.describe(env.model.name)} has no device interface "
                         "(are cuda-python and DALI importable?)")
    ignored = "" if backend.preferred_batch == max_batch else f" (--batch {max_batch} sizes TensorRT engines only)"
    return Outcome(f"{backend.describe(env.model.name)}, batch {backend.preferred_batch}{ignored}", backend)


def engine_label(backend: Backend) -> str:
    return "TensorRT FP16" if backend.name == "tensorrt" else "ORT CUDA FP32"


# ---- 4. accuracy ----------------------------------------------------------------------

def read_frames(clip: Path, limit: int) -> np.ndarray:
    """The first ``limit`` frames as trt-matte's ffmpeg reader makes them: uint8 [n,320,320,3]."""
    reader = FrameReader(clip)
    batches: list[np.ndarray] = []
    try:
        for batch in reader.batches(limit):
            batches.append(batch)
            if sum(map(len, batches)) >= limit:
                break
    finally:
        reader.kill()
    return np.concatenate(batches)[:limit]


def run_batched(backend: Backend, frames: np.ndarray) -> np.ndarray:
    size = backend.preferred_batch
    return np.concatenate([backend.run(frames[start:start + size]) for start in range(0, len(frames), size)])


def compare_masks(gpu: np.ndarray, cpu: np.ndarray) -> dict[str, float]:
    errors = np.abs(gpu.astype(np.int16) - cpu.astype(np.int16)).mean(axis=(1, 2))
    ious = [mask_iou(a, b) for a, b in zip(gpu, cpu, strict=True)]
    constant = sum(int(a.min() == a.max() and b.min() != b.max()) for a, b in zip(gpu, cpu, strict=True))
    return {"frames": len(gpu), "mean_abs_error": float(errors.mean()), "worst_frame_abs_error": float(errors.max()),
            "mean_iou": float(np.mean(ious)), "min_iou": float(np.min(ious)), "constant_masks": constant}


def check_accuracy(backend: Backend, model: Path, clip: Path) -> Outcome:
    reference = OnnxRuntimeBackend(matte_graph_path(model, cache_dir()), device="cpu")
    frames = read_frames(clip, ACCURACY_FRAMES)
    found = compare_masks(run_batched(backend, frames), run_batched(reference, frames))
    passed = (found["mean_abs_error"] <= MAX_MEAN_ABS_ERROR and found["mean_iou"] >= MIN_MEAN_IOU
              and found["constant_masks"] == 0)
    return Outcome(
        f"{engine_label(backend)} vs CPU FP32 on {found['frames']} frames: mean abs error "
        f"{found['mean_abs_error']:.3f} (<= {MAX_MEAN_ABS_ERROR}, worst frame {found['worst_frame_abs_error']:.2f}), "
        f"IoU@128 mean {found['mean_iou']:.4f} (>= {MIN_MEAN_IOU}, min {found['min_iou']:.4f}), "
        f"{found['constant_masks']} constant masks (NaN/overflow)",
        found, PASS if passed else FAIL)


def check_video_accuracy(backend: Backend, model: Path, clip: Path, work_dir: Path) -> Outcome:
    """The whole GPU video path (DALI decode and resize, engine, upsizing, encoder) against
    the CPU matte of the same clip, both read back with ffmpeg; a run that fell back to
    the ffmpeg reader did not test DALI, and fails."""
    notes: list[str] = []
    gpu = matte_video(clip, work_dir / "accuracy-gpu.mkv", backend, progress=False, crf=0, announce=notes.append)
    reference = OnnxRuntimeBackend(matte_graph_path(model, cache_dir()), device="cpu")
    cpu = matte_video(clip, work_dir / "accuracy-cpu.mkv", reference, progress=False, crf=0)
    ours, theirs = (decode_gray(result.output) for result in (gpu, cpu))
    found = {"frames": len(ours), "iou": mask_iou(ours, theirs), "mean_abs_error": mean_abs_error(ours, theirs),
             "fell_back": bool(notes)}
    passed = (len(ours) == len(theirs) == gpu.frames and not notes and found["iou"] >= MIN_VIDEO_IOU
              and found["mean_abs_error"] <= MAX_VIDEO_ABS_ERROR)
    return Outcome(f"{engine_label(backend)} video path vs CPU matte, {found['frames']} frames: IoU over all "
                   f"frames {found['iou']:.4f} (>= {MIN_VIDEO_IOU}), mean abs error {found['mean_abs_error']:.2f} "
                   f"(<= {MAX_VIDEO_ABS_ERROR})" + (f"; NOT through DALI: {notes[0]}" if notes else ""),
                   found, PASS if passed else FAIL)


def decode_gray(path: Path) -> np.ndarray:
    info = probe_video(path)
    raw = run_ffmpeg(["-i", str(path), "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                     f"reading {path.name} back")
    return np.frombuffer(raw, np.uint8).reshape(-1, info.height, info.width)


# ---- 5. benchmarks --------------------------------------------------------------------

def make_1080p_clip(clip: Path, frames: int, work_dir: Path) -> Outcome:
    target = work_dir / f"test-1080p-{frames}.mp4"
    if target.is_file():  # made by an earlier run with the same --work-dir
        info = probe_video(target)
        if info.frame_count == frames:
            return Outcome(f"{target.name}: {info.frame_count} frames, {info.width}x{info.height} H.264, "
                           "kept from an earlier run", (target, info))
    started = time.perf_counter()
    make_test_clip(clip, target, frames)
    info = probe_video(target)
    return Outcome(f"{target.name}: {info.frame_count} frames, {info.width}x{info.height} H.264, made in "
                   f"{time.perf_counter() - started:.0f} s", (target, info))


def bench_dali(clip: Path, info: VideoInfo, batch: int, dali: str | None) -> Outcome:
    if dali is None:
        return skip("DALI is absent")
    # DALI's one-time start-up (libraries, CUDA context, NVDEC) is no cost of this file.
    DaliFrameReader(clip, info.frame_count, batch, device_id=current_device()).close()
    started = time.perf_counter()
    reader = DaliFrameReader(clip, info.frame_count, batch, device_id=current_device())
    try:
        frames = sum(decoded.frames for decoded in reader.batches())
    finally:
        reader.close()
    timing = Timing("a DALI decode+resize", frames, time.perf_counter() - started)
    return Outcome(f"batch {batch}, {timing.summary()}", timing)


def time_engine(backend: Backend, rgb: np.ndarray, info: VideoInfo, frames: int, output: int) -> Timing:
    """The engine alone on one pre-uploaded batch, repeated until ``frames`` frames are done."""
    size = len(rgb)
    address = backend.upload(rgb)
    backend.enqueue(address, size, info.height, info.width, output)  # warm-up for this shape
    backend.stream.synchronize()
    runs = math.ceil(frames / size)
    started = time.perf_counter()
    for _ in range(runs):
        backend.enqueue(address, size, info.height, info.width, output)
    backend.stream.synchronize()
    return Timing(f"b engine {engine_label(backend)}, batch {size}", runs * size, time.perf_counter() - started)


def bench_engine(backend: Backend, clip: Path, info: VideoInfo, frames: int) -> Outcome:
    """Each batch size in turn; also returns the largest batch's 1080p masks for step 5c."""
    sizes = sorted({size for size in (*ENGINE_BATCHES, backend.preferred_batch) if size <= backend.preferred_batch})
    rgb = np.resize(read_frames(clip, sizes[-1]), (sizes[-1], MODEL_SIZE, MODEL_SIZE, 3))
    output = DeviceBuffer(sizes[-1] * info.height * info.width)
    try:
        timings = [time_engine(backend, rgb[:size], info, frames, output.address) for size in sizes]
        masks = np.empty((sizes[-1], info.height, info.width), np.uint8)
        copy_async(masks.ctypes.data, output.address, masks.nbytes, "cudaMemcpyDeviceToHost", backend.stream)
        backend.stream.synchronize()
    finally:
        output.close()
    rates = ", ".join(f"batch {size} {timing.fps:.0f} fps" for size, timing in zip(sizes, timings, strict=True))
    return Outcome(f"{engine_label(backend)}, {info.width}x{info.height} mattes: {rates}", (timings, masks))


def bench_encode(masks: np.ndarray, info: VideoInfo, target: Path) -> Outcome:
    started = time.perf_counter()
    encoder = MatteEncoder(target, info, full_size=True)
    try:
        for start in range(0, info.frame_count, len(masks)):
            encoder.write(masks[:info.frame_count - start])
        encoder.finish()
    finally:
        encoder.kill()
    timing = Timing("c ffmpeg encode", encoder.frames_written, time.perf_counter() - started)
    return Outcome(f"x264 crf {DEFAULT_CRF}, {len(masks)} masks cycled, {timing.summary()}", timing)


def bench_end_to_end(backend: Backend, clip: Path, info: VideoInfo, target: Path) -> Outcome:
    notes: list[str] = []
    started = time.perf_counter()
    # Probed already, as the CLI probes before the run: 5a pays no probe either.
    result = matte_video(clip, target, backend, progress=False, probed=info, announce=notes.append)
    timing = Timing(f"d trt-matte e2e, {engine_label(backend)}", result.frames, time.perf_counter() - started)
    if notes:  # the ffmpeg reader stood in for DALI: not the GPU path this step measures
        return Outcome(f"{timing.summary()}, but NOT through DALI: {notes[0]}", status=FAIL)
    return Outcome(timing.summary(), timing)


def bench_frame_by_frame(model: Path, clip: Path, info: VideoInfo, target: Path, cuda_provider: bool,
                         frames: int) -> Outcome:
    """rembg's way, one frame at a time: ffmpeg -> Pillow -> ORT CUDA on the raw model -> Pillow -> ffmpeg."""
    if not cuda_provider:
        return skip("onnxruntime-gpu is absent, and ONNX Runtime on the CPU is no fair peer for a GPU pipeline")
    preload_cuda_libraries()
    session, input_name = peer_session(str(model), [CUDA_PROVIDER, CPU_PROVIDER], None)
    if session.get_providers()[0] != CUDA_PROVIDER:
        raise BenchError("ONNX Runtime's CUDA provider could not start for the peer")
    done, seconds = run_peer(session, input_name, clip, info.width, info.height, str(info.average_rate), target,
                             frames)
    timing = Timing("e frame-by-frame, ORT CUDA", done, seconds)
    return Outcome(timing.summary(), timing)


def ratio_checks(report: Report, stages: dict[str, Timing | None], engine: list[Timing]) -> list[Check]:
    """The two targets (printed with the table; recorded here); one without its stages is skipped."""
    verdicts = []
    parts = [stages["a"], max(engine, key=lambda timing: timing.fps, default=None), stages["c"]]
    if stages["d"] is None or None in parts:
        report.add("5 e2e / slowest stage", SKIP, "needs 5a, 5b, 5c and 5d")
    else:
        slowest = min(parts, key=lambda timing: timing.fps)
        verdicts.append(Check(f"e2e / slowest ({slowest.stage})", stages["d"].fps / slowest.fps,
                              MIN_E2E_VS_SLOWEST, True, "", 3))
    if stages["d"] is None or stages["e"] is None:
        report.add("5 e2e / frame-by-frame", SKIP, "needs 5d and 5e")
    else:
        verdicts.append(Check("e2e / frame-by-frame", stages["d"].fps / stages["e"].fps, MIN_E2E_VS_PEER, True,
                              "x", 1))
    for verdict in verdicts:
        report.add(f"5 {verdict.name}", PASS if verdict.passed else FAIL, f"{verdict.value:.3f}", echo=False)
    return verdicts


def print_table(timings: list[Timing], verdicts: list[Check]) -> None:
    print()
    print(f"{'stage':<40}{'frames':>7}{'seconds':>9}{'fps':>9}")
    for timing in timings:
        print(f"{timing.stage:<40}{timing.frames:>7}{timing.seconds:>9.2f}{timing.fps:>9.1f}")
    print()
    for verdict in verdicts:
        print(verdict.line())


def run_benchmarks(report: Report, args: argparse.Namespace, env: Environment, backend: Backend | None,
                   work_dir: Path) -> None:
    made = report.attempt("5 test clip", make_1080p_clip, env.clip, args.frames, work_dir, needs={"a clip": env.clip})
    clip, info = made or (None, None)
    batch = backend.preferred_batch if backend else args.batch
    gpu_ready = {"a GPU backend": backend, "the test clip": clip}
    stages: dict[str, Timing | None] = {
        "a": report.attempt("5a DALI decode+resize", bench_dali, clip, info, batch, env.dali,
                            needs={"the test clip": clip})}
    engine, masks = report.attempt("5b engine alone", bench_engine, backend, clip, info, args.frames,
                                   needs=gpu_ready) or ([], None)
    stages["c"] = report.attempt("5c ffmpeg encode", bench_encode, masks, info, work_dir / "encoded.mp4",
                                 needs={"the 1080p masks of 5b": masks})
    stages["d"] = report.attempt("5d end to end", bench_end_to_end, backend, clip, info, work_dir / "matte.mp4",
                                 needs=gpu_ready)
    stages["e"] = report.attempt("5e frame by frame", bench_frame_by_frame, env.model, clip, info,
                                 work_dir / "peer.mp4", env.cuda_provider, args.peer_frames,
                                 needs={"a model": env.model, "the test clip": clip})
    report.timings = [timing for timing in (stages["a"], *engine, stages["c"], stages["d"], stages["e"]) if timing]
    report.verdicts = ratio_checks(report, stages, engine)
    report.save()
    if report.timings:
        print_table(report.timings, report.verdicts)


def run_gpu_steps(report: Report, args: argparse.Namespace, env: Environment, work_dir: Path) -> None:
    if "tests" in args.steps:
        report.numbers["tests"] = report.attempt("2 gpu tests", run_gpu_tests, args.tests_timeout)
    if "engine" in args.steps:
        report.numbers["engine"] = report.attempt("3 engine", build_engine, env.model, args.batch, env.tensorrt,
                                                  report.note, needs={"a model": env.model})
    if "accuracy" not in args.steps and "bench" not in args.steps:
        return
    backend = report.attempt("3 backend", open_gpu_backend, env, args.batch, report.note,
                             needs={"a model": env.model})
    try:
        if "accuracy" in args.steps:
            report.numbers["accuracy"] = report.attempt("4 accuracy", check_accuracy, backend, env.model, env.clip,
                                                        needs={"a GPU backend": backend, "a clip": env.clip})
            report.numbers["video_accuracy"] = report.attempt(
                "4 video accuracy", check_video_accuracy, backend, env.model, env.clip, work_dir,
                needs={"a GPU backend": backend, "a clip": env.clip})
        if "bench" in args.steps:
            run_benchmarks(report, args, env, backend, work_dir)
    finally:
        if backend is not None:
            backend.close()


# ---- the run --------------------------------------------------------------------------

def steps_list(text: str) -> tuple[str, ...]:
    steps = tuple(step.strip() for step in text.split(",") if step.strip())
    unknown = sorted(set(steps) - set(STEPS))
    if unknown or not steps:
        raise argparse.ArgumentTypeError(f"steps are a comma list of {', '.join(STEPS)}")
    return steps


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help=f"registry name or .onnx path (default: {DEFAULT_MODEL_FILE})")
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP,
                        help=f"source clip for accuracy and the 1080p test clip (default {DEFAULT_CLIP})")
    parser.add_argument("--frames", type=positive_int, default=DEFAULT_FRAMES,
                        help=f"frames in the 1080p test clip (default {DEFAULT_FRAMES})")
    parser.add_argument("--peer-frames", type=positive_int, default=DEFAULT_PEER_FRAMES,
                        help=f"frames the frame-by-frame peer runs (default {DEFAULT_PEER_FRAMES})")
    parser.add_argument("--batch", type=positive_int, default=DEFAULT_MAX_BATCH,
                        help=f"the TensorRT engine's largest batch (default {DEFAULT_MAX_BATCH})")
    parser.add_argument("--steps", type=steps_list, default=STEPS,
                        help=f"which steps after the environment, a comma list (default {','.join(STEPS)})")
    parser.add_argument("--tests-timeout", type=positive_int, default=TESTS_TIMEOUT_S,
                        help=f"seconds the GPU tests may take (default {TESTS_TIMEOUT_S})")
    parser.add_argument("--work-dir", type=Path,
                        help="keep the 1080p test clip and outputs here between runs (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write every result to this file, after every step")
    parser.add_argument("--debug", action="store_true", help="print the traceback of every failure")
    return parser.parse_args(argv)


def unusable_gpu() -> tuple[str, int] | None:
    """Why nothing can be checked here and the exit status to say it with, or None
    when CUDA sees a GPU. No device, or no driver (which CUDA reports as one too old:
    the message names it), is EXIT_NO_GPU; anything else is a failure to fix."""
    try:
        cudart = runtime_api()
    except MatteError as missing:
        return str(missing), EXIT_FAILED
    error, count = cudart.cudaGetDeviceCount()
    if error == cudart.cudaError_t.cudaSuccess and count:
        return None
    name = cudart.cudaGetErrorName(error)[1].decode()
    if error in (cudart.cudaError_t.cudaSuccess, cudart.cudaError_t.cudaErrorNoDevice):
        return "CUDA sees no GPU: nothing was checked", EXIT_NO_GPU
    if error == cudart.cudaError_t.cudaErrorInsufficientDriver:
        return (f"CUDA sees no GPU ({name}: no NVIDIA driver, or one older than r580): nothing was checked",
                EXIT_NO_GPU)
    return f"CUDA cannot start ({name}): nothing was checked", EXIT_FAILED


def final_verdict(report: Report, steps: tuple[str, ...], tensorrt: bool = True) -> int:
    failed = report.count(FAIL)
    print(f"\ngpu_check: {report.count(PASS)} passed, {failed} failed, {report.count(SKIP)} skipped, "
          f"{report.count(WARN)} warnings")
    if not tensorrt:
        print(f"gpu_check: INCOMPLETE: TensorRT is not installed, so {NEEDS_TENSORRT} did not run; "
              "everything else ran on ONNX Runtime CUDA")
    if "bench" in steps:
        measured = {verdict.name.split(" (")[0]: verdict for verdict in report.verdicts}
        words = [f"{name} {measured[name].value:.3f} {'PASS' if measured[name].passed else 'FAIL'}"
                 if name in measured else f"{name} not measured"
                 for name in ("e2e / slowest", "e2e / frame-by-frame")]
        complete = len(measured) == 2
        print(f"gpu_check: targets: {'; '.join(words)}{'' if complete else ' -> INCOMPLETE'}")
        if not complete:
            return EXIT_FAILED
    return EXIT_FAILED if failed or not tensorrt else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    unusable = unusable_gpu()
    if unusable is not None:
        reason, status = unusable
        print(f"gpu_check: {reason}", file=sys.stderr)
        return status
    config = {"model": args.model or str(DEFAULT_MODEL_FILE), "clip": str(args.clip), "frames": args.frames,
              "peer_frames": args.peer_frames, "batch": args.batch, "steps": list(args.steps)}
    report = Report(args.debug, args.json, config)
    report.environment = env = check_environment(report, args)
    report.save()
    if env.gpu is not None:
        if args.work_dir is not None:
            args.work_dir.mkdir(parents=True, exist_ok=True)
            run_gpu_steps(report, args, env, args.work_dir)
        else:
            with tempfile.TemporaryDirectory(prefix="gpu-check-") as work_dir:
                run_gpu_steps(report, args, env, Path(work_dir))
    return final_verdict(report, args.steps, tensorrt=env.tensorrt is not None)


if __name__ == "__main__":
    sys.exit(main())
