"""CPU benchmark: trt-matte end to end on each CPU backend, against the bare model and a
rembg-style peer.

One run, one clip, one model, one thread count:

1. ffmpeg makes a 1080p H.264 test clip (Lanczos, x264 crf 18) from ``--clip``,
   looping the source until it has ``--frames`` frames;
2. for each variant (ONNX Runtime FP32 and INT8, OpenVINO FP32 and INT8 where OpenVINO
   is installed; INT8 calibrated, untimed, on ``--calibration-frames`` frames of
   ``--clip`` through ``trt_matte.calibrate``):
   model-only (the matte graph on pre-decoded 320x320 batches) and trt-matte
   (``matte_video`` on the test clip: decode, inference and encode overlapped);
3. frame-by-frame: a rembg-style loop, one frame at a time with Pillow resizes and an
   ONNX Runtime session on the raw model file, between two ffmpeg pipes;
4. decode alone (ffmpeg to 320x320 RGB) and encode alone (the matte encoder fed masks),
   whose CPU seconds per frame, with the model-only stage's, give what the cores allow
   end to end: cores / (decode + inference + encode CPU seconds per frame);

then prints frames, seconds, fps, CPU seconds per frame and peak RSS per stage, the INT8
calibration's accuracy, and the targets: end-to-end >= 0.90 x model-only and >= 1.15 x
frame-by-frame, peak RSS <= 1.5 GB, ONNX Runtime INT8 end-to-end >= 2 x FP32; OpenVINO
FP32 end-to-end >= 1.08 x ONNX Runtime FP32 with masks within 0.5/255, OpenVINO INT8
end-to-end >= 1.5 x ONNX Runtime INT8 and >= 3 x ONNX Runtime FP32, and OpenVINO's end
to end >= 85% of what the cores allow.

Each stage runs in its own Python process (this script re-invoked with a hidden
``--stage``), so peak RSS is measured per stage. Session creation and one warm-up
inference are left out of every timing, so the three stages compare steady-state
throughput even on a short clip. The exit status is 0 whether targets pass or fail,
non-zero only when the benchmark itself fails.

Usage:
    python scripts/bench_cpu.py [--model NAME|PATH] [--threads N] [--frames N]
                                [--batch N] [--clip PATH [--no-upscale]] [--json PATH]
                                [--calibration-frames N | --no-int8]

    python scripts/bench_cpu.py                      # u2netp, 96 frames, the runtimes' default threads
    python scripts/bench_cpu.py --threads 1 --json bench.json
    python scripts/bench_cpu.py --clip my1080p.mp4 --no-upscale   # the clip as-is, every frame
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort
from PIL import Image

from trt_matte.build_engine.matte_graph import IMAGENET_MEAN, IMAGENET_STD, matte_graph_path
from trt_matte.models import MODEL_SIZE
from trt_matte.calibration.store import current_calibration, load_report, network_for
from trt_matte.accuracy import mean_abs_error
from trt_matte.api import OPENVINO_FLAVOUR, openvino_available
from trt_matte.engine.backend import Backend
from trt_matte.engine.onnxruntime_backend import OnnxRuntimeBackend
from trt_matte.errors import MatteError
from trt_matte.models import cache_dir, resolve_model
from trt_matte.media.encoder import MatteEncoder
from trt_matte.media.ffmpeg import ffmpeg_exe
from trt_matte.media.frame_reader import DOWNSCALE_FILTER, FrameReader
from trt_matte.media.probe import probe_video
from trt_matte.media.outputs import DEFAULT_CRF, MATTE, X264_PRESETS
from trt_matte.runtime.video import matte_video

REPO_ROOT = Path(__file__).resolve().parent.parent
# The test assets (models/u2netp.onnx, media/carphone.mp4): ../shared beside the
# checkout, or wherever TRT_MATTE_SHARED points (a copied tree on another machine).
SHARED = Path(os.environ.get("TRT_MATTE_SHARED", REPO_ROOT.parent / "shared"))
DEFAULT_CLIP = SHARED / "media" / "carphone.mp4"
DEFAULT_MODEL_FILE = SHARED / "models" / "u2netp.onnx"
# Long enough that start-up (ffmpeg processes, probe, final remux: ~0.45 s) does not
# dominate: at 24 frames it cost end to end ~4 points of the model-only rate.
DEFAULT_FRAMES = 96
TEST_WIDTH, TEST_HEIGHT = 1920, 1080
TEST_CLIP_CRF = 18

# What runs each variant's graph: "ort fp32", "ort int8", "ov fp32", "ov int8".
RUNTIMES = {"ort": "onnxruntime", "ov": "openvino"}
PEER_STAGE, DECODE_STAGE, ENCODE_STAGE = "frame-by-frame", "decode alone", "encode alone"
MIN_E2E_VS_MODEL = 0.90
MIN_E2E_VS_PEER = 1.15
MIN_INT8_VS_FP32 = 2.0
MIN_OPENVINO_FP32 = 1.08  # x ONNX Runtime FP32 end to end
MAX_OPENVINO_FP32_MAE = 0.5  # /255, OpenVINO FP32 masks against ONNX Runtime's
MIN_OPENVINO_INT8 = 1.5  # x ONNX Runtime INT8 end to end
MIN_OPENVINO_INT8_VS_FP32 = 3.0  # x ONNX Runtime FP32 end to end
MIN_SHARE_OF_CORES = 0.85  # end to end against what the cores allow
DEFAULT_CALIBRATION_FRAMES = 32
MAX_RSS_MB = 1.5 * 1024
# Above this share of the CPUs busy with other work, fps comparisons mean little.
MAX_OTHERS_CPU = 0.10
KIB_PER_MB = 1024  # ru_maxrss and /proc's VmHWM are in KiB on Linux; MB here means MiB

# How often a stage samples its ffmpeg children's memory: often enough that a child's
# peak (VmHWM, which only grows) is read shortly before it exits.
SAMPLE_SECONDS = 0.05
PYTHON_EXE = os.readlink("/proc/self/exe")


class BenchError(Exception):
    """A failure of the benchmark itself (ffmpeg or a stage process failed)."""


@dataclass(frozen=True)
class Plan:
    """Everything a stage process needs; passed to it as JSON."""

    model: str
    graphs: dict[str, str]  # variant ("ort fp32", ...) -> its matte graph
    int8_accuracy: str | None
    clip: str
    clip_width: int
    clip_height: int
    clip_rate: str
    batches: str
    work_dir: str
    threads: int | None
    batch: int | None


@dataclass(frozen=True)
class StageResult:
    frames: int
    seconds: float
    cpu_seconds: float  # this stage's process and its ffmpeg children
    python_mb: float
    children_mb: float
    # Share of all CPUs that other processes kept busy during the stage: the machine
    # may be shared, and fps measured beside another job is not the pipeline's own.
    others_cpu: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    @property
    def rss_mb(self) -> float:
        return self.python_mb + self.children_mb

    @property
    def cpu_per_frame(self) -> float:
        return self.cpu_seconds / self.frames


# ---- ffmpeg helpers -------------------------------------------------------------------

def run_ffmpeg(args: list[str], purpose: str) -> bytes:
    """Run ffmpeg to completion and return its stdout; a failure becomes a BenchError."""
    command = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", *args]
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise BenchError(f"ffmpeg failed while {purpose}: {message[-1] if message else 'no message'}")
    return done.stdout


def make_test_clip(source: Path, target: Path, frames: int) -> None:
    """Lanczos to 1080p and x264 crf 18; the source loops so a short clip still fills ``frames``."""
    run_ffmpeg(["-stream_loop", "-1", "-i", str(source), "-map", "0:v:0", "-frames:v", str(frames),
                "-vf", f"scale={TEST_WIDTH}:{TEST_HEIGHT}:flags=lanczos,format=yuv420p",
                "-c:v", "libx264", "-crf", str(TEST_CLIP_CRF), "-an", "-y", str(target)],
               f"making the 1080p test clip from {source.name}")


def save_model_batches(clip: Path, target: Path) -> None:
    """Decode the clip as trt-matte does (Lanczos to 320x320 RGB), for the model-only stage."""
    raw = run_ffmpeg(["-i", str(clip), "-map", "0:v:0", "-fps_mode", "passthrough", "-vf", DOWNSCALE_FILTER,
                      "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"], f"decoding {clip.name}")
    np.save(target, np.frombuffer(raw, np.uint8).reshape(-1, MODEL_SIZE, MODEL_SIZE, 3))


# ---- CPU time and memory ----------------------------------------------------------

def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all CPUs, steal included), from /proc/stat."""
    user, nice, system, idle, iowait, irq, softirq, steal = (
        int(field) for field in Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and every child it has waited for (and theirs)."""
    usages = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(usage.ru_utime + usage.ru_stime for usage in usages)


@dataclass(frozen=True)
class CpuClock:
    wall: float
    machine_busy: float
    own: float

    @classmethod
    def now(cls) -> CpuClock:
        return cls(time.perf_counter(), machine_busy_seconds(), own_cpu_seconds())

    def others_share(self) -> float:
        """Share of all CPUs that processes outside this benchmark kept busy since this reading."""
        later = CpuClock.now()
        others = (later.machine_busy - self.machine_busy) - (later.own - self.own)
        return max(0.0, others / ((later.wall - self.wall) * (os.cpu_count() or 1)))


def _child_pids() -> list[int]:
    # ffmpeg may be started from any thread, and each thread keeps its own children list.
    pids = []
    for children in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        try:
            pids.extend(int(pid) for pid in children.read_text().split())
        except OSError:  # the thread ended between the glob and the read
            continue
    return pids


def _peak_kib(pid: int) -> int | None:
    """A child's peak RSS, once it runs ffmpeg.

    Between fork and exec a child is still this Python (after vfork it even shares its
    memory), so counting it then would count Python twice.
    """
    try:
        if os.readlink(f"/proc/{pid}/exe") == PYTHON_EXE:
            return None
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:  # the child exited between listing and reading
        return None
    return None  # a zombie: its memory is already gone


class ChildPeaks:
    """Tracks the peak RSS of each child process (the ffmpeg decoder and encoder).

    RUSAGE_CHILDREN cannot give this: it keeps only the largest child, and a child's
    figure includes the Python memory it was forked from. trt-matte runs its decoder
    and encoder at the same time, so each child's own peak is sampled from /proc and
    the peaks are summed: an upper bound on what they held at once.
    """

    def __init__(self) -> None:
        self._peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ChildPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            for pid in _child_pids():
                peak = _peak_kib(pid)
                if peak is not None:
                    self._peaks[pid] = max(peak, self._peaks.get(pid, 0))

    def total_mb(self) -> float:
        return sum(self._peaks.values()) / KIB_PER_MB


# ---- stages (each runs in its own process) --------------------------------------------

def _warm_backend(plan: Plan, variant: str) -> tuple[Backend, int]:
    """Open a variant's backend and run it once: runtimes size their buffers on the first run."""
    graph = Path(plan.graphs[variant])
    if variant.startswith("ov "):
        from trt_matte.engine.openvino_backend import OpenVinoBackend
        backend: Backend = OpenVinoBackend(graph, cache_dir() / "openvino", threads=plan.threads)
    else:
        backend = OnnxRuntimeBackend(graph, device="cpu", threads=plan.threads)
    batch_size = plan.batch or backend.preferred_batch
    backend.run(np.zeros((batch_size, MODEL_SIZE, MODEL_SIZE, 3), np.uint8))
    return backend, batch_size


def masks_file(plan: Plan, variant: str) -> Path:
    return Path(plan.work_dir) / f"masks {variant}.npy"


def stage_model_only(plan: Plan, variant: str) -> tuple[int, float]:
    backend, batch_size = _warm_backend(plan, variant)
    frames = np.load(plan.batches)
    batches = [frames[start:start + batch_size] for start in range(0, len(frames), batch_size)]
    start = time.perf_counter()
    masks = [backend.run(batch) for batch in batches]
    seconds = time.perf_counter() - start
    np.save(masks_file(plan, variant), np.concatenate(masks))  # compared across variants, untimed
    return len(frames), seconds


def stage_trt_matte(plan: Plan, variant: str) -> tuple[int, float]:
    backend, batch_size = _warm_backend(plan, variant)
    start = time.perf_counter()
    result = matte_video(Path(plan.clip), Path(plan.work_dir) / "trt-matte.mp4", backend,
                         batch_size=batch_size, progress=False, overwrite=True)
    return result.frames, time.perf_counter() - start


def stage_decode(plan: Plan) -> tuple[int, float]:
    start = time.perf_counter()
    frames = sum(len(batch) for batch in FrameReader(Path(plan.clip)).batches(8))
    return frames, time.perf_counter() - start


def stage_encode(plan: Plan) -> tuple[int, float]:
    masks = np.load(masks_file(plan, "ort fp32"))
    info = probe_video(Path(plan.clip))
    start = time.perf_counter()
    encoder = MatteEncoder(Path(plan.work_dir) / "encoded.mp4", info)
    for frame in range(0, len(masks), 8):
        encoder.write(masks[frame:frame + 8])
    encoder.finish()
    return len(masks), time.perf_counter() - start


def peer_session(model: str, providers: list[str], threads: int | None) -> tuple[ort.InferenceSession, str]:
    """A plain session on the raw model, as rembg makes one; warmed up once."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(model, options, providers=providers)
    input_name = session.get_inputs()[0].name
    session.run(None, {input_name: np.zeros((1, 3, MODEL_SIZE, MODEL_SIZE), np.float32)})  # warm-up
    return session, input_name


def peer_matte(session: ort.InferenceSession, input_name: str, frame: np.ndarray) -> np.ndarray:
    """One frame the way rembg's U²-Net session does it: full-size RGB -> full-size mask."""
    image = Image.fromarray(frame)
    small = np.asarray(image.resize((MODEL_SIZE, MODEL_SIZE), Image.Resampling.LANCZOS))
    unit = small / max(small.max(), 1e-6)
    normalized = (unit - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    tensor = normalized.transpose(2, 0, 1)[np.newaxis].astype(np.float32)
    prediction = session.run(None, {input_name: tensor})[0][0, 0]
    low, high = prediction.min(), prediction.max()
    # Like rembg, no guard against a constant map: the peer's numerics are rembg's own.
    mask = ((prediction - low) / (high - low) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(mask).resize(image.size, Image.Resampling.LANCZOS))


def _peer_pipes(clip: Path, width: int, height: int, rate: str, target: Path,
                frames: int | None) -> tuple[subprocess.Popen, subprocess.Popen]:
    base = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error"]
    limit = ["-frames:v", str(frames)] if frames else []
    decoder = subprocess.Popen(
        [*base, "-i", str(clip), "-map", "0:v:0", *limit, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
        stdout=subprocess.PIPE)
    # Same x264 preset and crf as trt-matte's matte encoder, so only the pipeline differs.
    encoder = subprocess.Popen(
        [*base, "-f", "rawvideo", "-pix_fmt", "gray", "-s", f"{width}x{height}",
         "-framerate", rate, "-i", "pipe:0", "-c:v", "libx264", "-preset", X264_PRESETS[MATTE],
         "-crf", str(DEFAULT_CRF), "-pix_fmt", "yuv420p", "-y", str(target)],
        stdin=subprocess.PIPE)
    return decoder, encoder


def run_peer(session: ort.InferenceSession, input_name: str, clip: Path, width: int, height: int, rate: str,
             target: Path, frames: int | None = None) -> tuple[int, float]:
    """The frame-by-frame peer over ``clip`` (its first ``frames`` frames, if given):
    ffmpeg decode -> ``peer_matte`` -> ffmpeg encode; returns (frames, seconds)."""
    frame_bytes = width * height * 3
    start = time.perf_counter()
    decoder, encoder = _peer_pipes(clip, width, height, rate, target, frames)
    done = 0
    try:
        while len(chunk := decoder.stdout.read(frame_bytes)) == frame_bytes:
            frame = np.frombuffer(chunk, np.uint8).reshape(height, width, 3)
            encoder.stdin.write(peer_matte(session, input_name, frame).tobytes())
            done += 1
        encoder.stdin.close()
        if decoder.wait() != 0 or encoder.wait() != 0:
            raise BenchError(f"the peer's ffmpeg failed (decoder {decoder.returncode}, encoder {encoder.returncode})")
    finally:
        for process in (decoder, encoder):
            if process.poll() is None:
                process.kill()
                process.wait()
    return done, time.perf_counter() - start


def stage_frame_by_frame(plan: Plan) -> tuple[int, float]:
    session, input_name = peer_session(plan.model, ["CPUExecutionProvider"], plan.threads)
    return run_peer(session, input_name, Path(plan.clip), plan.clip_width, plan.clip_height, plan.clip_rate,
                    Path(plan.work_dir) / "peer.mp4")


def stage_function(name: str) -> Callable[[Plan], tuple[int, float]]:
    """What a stage name runs: the fixed stages, or "model-only <variant>" / "trt-matte <variant>"."""
    fixed = {PEER_STAGE: stage_frame_by_frame, DECODE_STAGE: stage_decode, ENCODE_STAGE: stage_encode}
    if name in fixed:
        return fixed[name]
    kind, variant = name.split(" ", 1)
    run = {"model-only": stage_model_only, "trt-matte": stage_trt_matte}[kind]
    return lambda plan: run(plan, variant)


def stage_names(plan: Plan) -> list[str]:
    """In run order: the encode stage reads the masks the "ort fp32" model-only stage saved."""
    per_variant = [f"{kind} {variant}" for variant in plan.graphs for kind in ("model-only", "trt-matte")]
    return [*per_variant, PEER_STAGE, DECODE_STAGE, ENCODE_STAGE]


def run_stage(name: str, plan: Plan) -> None:
    """Inside the stage process: run it and print one JSON line for the parent."""
    run = stage_function(name)
    with ChildPeaks() as children:
        cpu_before = own_cpu_seconds()
        frames, seconds = run(plan)
        cpu_seconds = own_cpu_seconds() - cpu_before
    python_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB_PER_MB
    print(json.dumps({"frames": frames, "seconds": seconds, "cpu_seconds": cpu_seconds, "python_mb": python_mb,
                      "children_mb": children.total_mb()}))


def measure_stage(name: str, plan: Plan) -> StageResult:
    """In the parent: run one stage in a fresh Python process and read its JSON line."""
    clock = CpuClock.now()
    done = subprocess.run([sys.executable, __file__, "--stage", name, "--plan", json.dumps(asdict(plan))],
                          capture_output=True, text=True)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()
        raise BenchError(f"stage {name} failed: {tail[-1] if tail else f'exit status {done.returncode}'}")
    return StageResult(**json.loads(done.stdout.strip().splitlines()[-1]), others_cpu=clock.others_share())


# ---- the parent -----------------------------------------------------------------------

def model_path(spec: str | None) -> Path:
    if spec is None and DEFAULT_MODEL_FILE.is_file():
        return DEFAULT_MODEL_FILE
    return resolve_model(spec).path


def prepare(args: argparse.Namespace, work_dir: Path) -> Plan:
    """Build the matte graph, the test clip and the model-only batches, none of it timed."""
    if not args.clip.is_file():
        raise BenchError(f"no such clip: {args.clip}")
    model = model_path(args.model)
    runtimes = ["ort", "ov"] if openvino_available() else ["ort"]
    graphs = {f"{runtime} fp32": str(matte_graph_path(model, cache_dir())) for runtime in runtimes}
    int8_accuracy = None
    if not args.no_int8:
        int8_graphs, int8_accuracy = calibrated_graphs(model, args)
        graphs.update({f"{runtime} int8": int8_graphs[runtime] for runtime in runtimes})
    clip = args.clip
    if not args.no_upscale:
        clip = work_dir / f"test-{TEST_HEIGHT}p.mp4"
        make_test_clip(args.clip, clip, args.frames)
    info = probe_video(clip)
    batches = work_dir / "batches.npy"
    save_model_batches(clip, batches)
    return Plan(str(model), graphs, int8_accuracy, str(clip), info.width, info.height,
                str(info.average_rate),
                str(batches), str(work_dir), args.threads, args.batch)


def calibrated_graphs(model: Path, args: argparse.Namespace) -> tuple[dict[str, str], str]:
    """Each runtime's INT8 matte graph, calibrated on frames of the source clip, and the
    calibration's accuracy line.

    The calibration runs in its own process: a stage process forked from a parent that
    held the calibration's memory would start with that peak RSS on record.
    """
    done = subprocess.run([sys.executable, "-m", "trt_matte", "calibrate", str(args.clip), "--model", str(model),
                           "--frames", str(args.calibration_frames), "--quiet"], capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"calibration failed: {done.stderr.strip()}")
    report = load_report(current_calibration(model, cache_dir(), model.name))
    flavours = {"ort": "cpu", "ov": OPENVINO_FLAVOUR}
    graphs = {runtime: str(matte_graph_path(network_for(model, cache_dir(), "int8", flavour, accept_below_gate=True),
                                            cache_dir(), "int8"))
              for runtime, flavour in flavours.items()}
    accuracy = report.accuracy["cpu"]
    line = (f"INT8 graph vs FP32 on {report.held_back_frames} held-back frames: IoU {accuracy.iou:.4f} "
            f"(worst frame {accuracy.iou_worst:.4f}), mean abs error {accuracy.mean_abs_error:.2f}/255, "
            f"calibrated on {report.calibration_frames} frames")
    return graphs, line


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    limit: float
    at_least: bool  # the value must be >= limit; otherwise <= limit
    unit: str
    digits: int

    @property
    def passed(self) -> bool:
        return self.value >= self.limit if self.at_least else self.value <= self.limit

    def line(self) -> str:
        value = f"{self.value:.{self.digits}f}{self.unit}"
        target = f"{'>=' if self.at_least else '<='} {self.limit:.{self.digits}f}{self.unit}"
        return f"{self.name:<30}{value:>9}  target {target:<11}{'PASS' if self.passed else 'FAIL'}"


def cores_allow_fps(results: dict[str, StageResult], variant: str) -> float:
    """End-to-end frames/s the cores allow: decode, inference and encode each cost their
    CPU seconds per frame measured alone, and the pipeline overlaps them on every core."""
    spent = sum(results[name].cpu_per_frame for name in (DECODE_STAGE, f"model-only {variant}", ENCODE_STAGE))
    return (os.cpu_count() or 1) / spent


def checks(results: dict[str, StageResult], work_dir: Path) -> list[Check]:
    def e2e(variant: str) -> float:
        return results[f"trt-matte {variant}"].fps

    found = [
        Check("end-to-end / model-only", e2e("ort fp32") / results["model-only ort fp32"].fps, MIN_E2E_VS_MODEL,
              True, "", 3),
        Check("end-to-end / frame-by-frame", e2e("ort fp32") / results[PEER_STAGE].fps, MIN_E2E_VS_PEER, True,
              "x", 3),
        Check("trt-matte peak RSS", max(result.rss_mb for name, result in results.items()
                                        if name.startswith("trt-matte")), MAX_RSS_MB, False, " MB", 0),
    ]
    if "trt-matte ort int8" in results:
        found.append(Check("ORT INT8 / FP32 end-to-end", e2e("ort int8") / e2e("ort fp32"), MIN_INT8_VS_FP32,
                           True, "x", 3))
    if "trt-matte ov fp32" in results:
        masks_mae = mean_abs_error(np.load(work_dir / "masks ov fp32.npy"), np.load(work_dir / "masks ort fp32.npy"))
        found += [
            Check("OV FP32 / ORT FP32 e2e", e2e("ov fp32") / e2e("ort fp32"), MIN_OPENVINO_FP32, True, "x", 3),
            Check("OV FP32 masks vs ORT, MAE", masks_mae, MAX_OPENVINO_FP32_MAE, False, "", 3),
            Check("OV FP32 e2e / cores allow", e2e("ov fp32") / cores_allow_fps(results, "ov fp32"),
                  MIN_SHARE_OF_CORES, True, "", 3),
        ]
    if "trt-matte ov int8" in results:
        found += [
            Check("OV INT8 / ORT INT8 e2e", e2e("ov int8") / e2e("ort int8"), MIN_OPENVINO_INT8, True, "x", 3),
            Check("OV INT8 / ORT FP32 e2e", e2e("ov int8") / e2e("ort fp32"), MIN_OPENVINO_INT8_VS_FP32, True,
                  "x", 3),
            Check("OV INT8 e2e / cores allow", e2e("ov int8") / cores_allow_fps(results, "ov int8"),
                  MIN_SHARE_OF_CORES, True, "", 3),
        ]
    return found


def describe(plan: Plan) -> dict:
    return {"model": plan.model, "clip": f"{plan.clip_width}x{plan.clip_height}", "threads": plan.threads,
            "batch": plan.batch, "cpus": os.cpu_count(), "cpu": cpu_name(), "onnxruntime": ort.__version__,
            "openvino": _openvino_version(), "machine": platform.machine(), "int8_accuracy": plan.int8_accuracy}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _openvino_version() -> str | None:
    if not openvino_available():
        return None
    import openvino
    return openvino.__version__.split("-")[0]


def print_report(config: dict, results: dict[str, StageResult], verdicts: list[Check]) -> None:
    print(f"model {Path(config['model']).name}, clip {config['clip']}, "
          f"threads {config['threads'] or 'runtime default'}, batch {config['batch'] or 'backend default'}, "
          f"{config['cpus']} CPUs ({config['cpu']}), onnxruntime {config['onnxruntime']}, "
          f"openvino {config['openvino'] or 'not installed'}")
    print(f"{'stage':<22}{'frames':>7}{'seconds':>9}{'fps':>8}{'CPU s/frame':>12}{'peak RSS MB':>13}"
          f"{'other CPU':>11}  (RSS: python + ffmpeg)")
    for name, result in results.items():
        print(f"{name:<22}{result.frames:>7}{result.seconds:>9.2f}{result.fps:>8.2f}{result.cpu_per_frame:>12.3f}"
              f"{result.rss_mb:>13.0f}{result.others_cpu:>10.0%}  ({result.python_mb:.0f} + {result.children_mb:.0f})")
    fp32_e2e = results["trt-matte ort fp32"].fps
    print("end to end vs ONNX Runtime FP32: " + ", ".join(
        f"{name.removeprefix('trt-matte ')} {result.fps / fp32_e2e:.2f}x" for name, result in results.items()
        if name.startswith("trt-matte")))
    if config["int8_accuracy"]:
        print(config["int8_accuracy"])
    busiest = max(result.others_cpu for result in results.values())
    if busiest > MAX_OTHERS_CPU:
        print(f"warning: other processes kept up to {busiest:.0%} of the CPUs busy during a stage; "
              "the fps figures and ratios are not reliable, rerun on a quiet machine")
    print()
    for verdict in verdicts:
        print(verdict.line())


def write_json(path: Path, config: dict, results: dict[str, StageResult], verdicts: list[Check]) -> None:
    stages = {name: {**asdict(result), "fps": result.fps, "rss_mb": result.rss_mb}
              for name, result in results.items()}
    checked = [{**asdict(verdict), "passed": verdict.passed} for verdict in verdicts]
    path.write_text(json.dumps({"config": config, "stages": stages, "checks": checked}, indent=2) + "\n")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="registry name or .onnx path "
                        f"(default: {DEFAULT_MODEL_FILE} if present, else the registry default)")
    parser.add_argument("--threads", type=positive_int, help="inference threads (default: each runtime's own)")
    parser.add_argument("--frames", type=positive_int, default=DEFAULT_FRAMES,
                        help=f"frames in the test clip (default {DEFAULT_FRAMES})")
    parser.add_argument("--batch", type=positive_int, help="batch size (default: the backend's preferred)")
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help=f"source clip (default {DEFAULT_CLIP})")
    parser.add_argument("--no-upscale", action="store_true",
                        help="use --clip as-is, every frame, instead of a 1080p test clip")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    parser.add_argument("--calibration-frames", type=positive_int, default=DEFAULT_CALIBRATION_FRAMES,
                        help=f"frames of --clip the INT8 graph is calibrated on (default {DEFAULT_CALIBRATION_FRAMES})")
    parser.add_argument("--no-int8", action="store_true", help="leave out the INT8 stages")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.stage:
        run_stage(args.stage, Plan(**json.loads(args.plan)))
        return 0
    try:
        with tempfile.TemporaryDirectory(prefix="bench-cpu-") as work_dir:
            plan = prepare(args, Path(work_dir))
            results = {name: measure_stage(name, plan) for name in stage_names(plan)}
            verdicts = checks(results, Path(work_dir))
        config = describe(plan)
        print_report(config, results, verdicts)
        if args.json:
            write_json(args.json, config, results, verdicts)
    except (BenchError, MatteError, OSError) as exc:
        print(f"bench_cpu: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
