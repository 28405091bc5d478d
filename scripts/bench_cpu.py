"""CPU benchmark: trt-matte end to end against the bare model and a rembg-style peer.

One run, one clip, one model, one thread count:

1. ffmpeg makes a 1080p H.264 test clip (Lanczos, x264 crf 18) from ``--clip``,
   looping the source until it has ``--frames`` frames;
2. model-only: the matte graph's backend on pre-decoded 320x320 batches;
3. trt-matte: ``matte_video`` on the test clip (decode, inference and encode overlapped);
4. frame-by-frame: a rembg-style loop, one frame at a time with Pillow resizes and an
   ONNX Runtime session on the raw model file, between two ffmpeg pipes;
5. model-only and trt-matte again with the INT8 graph, calibrated (untimed) on
   ``--calibration-frames`` frames of ``--clip`` through ``trt_matte.calibrate``;

then prints frames, seconds, fps and peak RSS per stage, the INT8 calibration's accuracy,
and the targets (end-to-end >= 0.90 x model-only, >= 1.15 x frame-by-frame, peak RSS
<= 1.5 GB, INT8 end-to-end >= 2 x FP32 end-to-end).

Each stage runs in its own Python process (this script re-invoked with a hidden
``--stage``), so peak RSS is measured per stage. Session creation and one warm-up
inference are left out of every timing, so the three stages compare steady-state
throughput even on a short clip. The exit status is 0 whether targets pass or fail,
non-zero only when the benchmark itself fails.

Usage:
    python scripts/bench_cpu.py [--model NAME|PATH] [--threads N] [--frames N]
                                [--batch N] [--clip PATH [--no-upscale]] [--json PATH]
                                [--calibration-frames N | --no-int8]

    python scripts/bench_cpu.py                      # u2netp, 96 frames, ORT's default threads
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

import numpy as np
import onnxruntime as ort
from PIL import Image

from trt_matte.build_engine.matte_graph import IMAGENET_MEAN, IMAGENET_STD, matte_graph_path
from trt_matte.models import MODEL_SIZE
from trt_matte.calibration.store import current_calibration, load_report, network_for
from trt_matte.engine.backend import Backend
from trt_matte.engine.onnxruntime_backend import OnnxRuntimeBackend
from trt_matte.errors import MatteError
from trt_matte.models import cache_dir, resolve_model
from trt_matte.media.ffmpeg import ffmpeg_exe
from trt_matte.media.probe import probe_video
from trt_matte.media.outputs import DEFAULT_CRF, MATTE, X264_PRESETS
from trt_matte.media.frame_reader import DOWNSCALE_FILTER
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

FP32_STAGES = ("model-only", "trt-matte", "frame-by-frame")
INT8_STAGES = ("model-only int8", "trt-matte int8")
STAGES = FP32_STAGES + INT8_STAGES
MIN_E2E_VS_MODEL = 0.90
MIN_E2E_VS_PEER = 1.15
MIN_INT8_VS_FP32 = 2.0
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
    graph: str
    int8_graph: str | None
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

def _warm_backend(plan: Plan, graph: str) -> tuple[Backend, int]:
    """Open a matte graph's CPU backend and run it once: ORT sizes its buffers on the first run."""
    backend = OnnxRuntimeBackend(Path(graph), device="cpu", threads=plan.threads)
    batch_size = plan.batch or backend.preferred_batch
    backend.run(np.zeros((batch_size, MODEL_SIZE, MODEL_SIZE, 3), np.uint8))
    return backend, batch_size


def stage_model_only(plan: Plan, graph: str) -> tuple[int, float]:
    backend, batch_size = _warm_backend(plan, graph)
    frames = np.load(plan.batches)
    batches = [frames[start:start + batch_size] for start in range(0, len(frames), batch_size)]
    start = time.perf_counter()
    for batch in batches:
        backend.run(batch)
    return len(frames), time.perf_counter() - start


def stage_trt_matte(plan: Plan, graph: str) -> tuple[int, float]:
    backend, batch_size = _warm_backend(plan, graph)
    start = time.perf_counter()
    result = matte_video(Path(plan.clip), Path(plan.work_dir) / "trt-matte.mp4", backend,
                         batch_size=batch_size, progress=False)
    return result.frames, time.perf_counter() - start


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


STAGE_FUNCTIONS = {
    "model-only": lambda plan: stage_model_only(plan, plan.graph),
    "trt-matte": lambda plan: stage_trt_matte(plan, plan.graph),
    "frame-by-frame": stage_frame_by_frame,
    "model-only int8": lambda plan: stage_model_only(plan, plan.int8_graph),
    "trt-matte int8": lambda plan: stage_trt_matte(plan, plan.int8_graph),
}


def run_stage(name: str, plan: Plan) -> None:
    """Inside the stage process: run it and print one JSON line for the parent."""
    with ChildPeaks() as children:
        frames, seconds = STAGE_FUNCTIONS[name](plan)
    python_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB_PER_MB
    print(json.dumps({"frames": frames, "seconds": seconds, "python_mb": python_mb,
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
    graph = matte_graph_path(model, cache_dir())
    int8_graph, int8_accuracy = (None, None) if args.no_int8 else calibrated_graph(model, args)
    clip = args.clip
    if not args.no_upscale:
        clip = work_dir / f"test-{TEST_HEIGHT}p.mp4"
        make_test_clip(args.clip, clip, args.frames)
    info = probe_video(clip)
    batches = work_dir / "batches.npy"
    save_model_batches(clip, batches)
    return Plan(str(model), str(graph), int8_graph, int8_accuracy, str(clip), info.width, info.height,
                str(info.average_rate),
                str(batches), str(work_dir), args.threads, args.batch)


def calibrated_graph(model: Path, args: argparse.Namespace) -> tuple[str, str]:
    """The INT8 matte graph, calibrated on frames of the source clip, and its accuracy line.

    The calibration runs in its own process: a stage process forked from a parent that
    held the calibration's memory would start with that peak RSS on record.
    """
    done = subprocess.run([sys.executable, "-m", "trt_matte", "calibrate", str(args.clip), "--model", str(model),
                           "--frames", str(args.calibration_frames), "--quiet"], capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"calibration failed: {done.stderr.strip()}")
    report = load_report(current_calibration(model, cache_dir(), model.name))
    network = network_for(model, cache_dir(), "int8", "cpu", accept_below_gate=True)
    accuracy = report.accuracy["cpu"]
    line = (f"INT8 graph vs FP32 on {report.held_back_frames} held-back frames: IoU {accuracy.iou_mean:.4f} "
            f"(min {accuracy.iou_min:.4f}), mean abs error {accuracy.mean_abs_error:.2f}/255, "
            f"calibrated on {report.calibration_frames} frames")
    return str(matte_graph_path(network, cache_dir(), "int8")), line


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


def checks(results: dict[str, StageResult]) -> list[Check]:
    e2e = results["trt-matte"]
    found = [
        Check("end-to-end / model-only", e2e.fps / results["model-only"].fps, MIN_E2E_VS_MODEL, True, "", 3),
        Check("end-to-end / frame-by-frame", e2e.fps / results["frame-by-frame"].fps, MIN_E2E_VS_PEER, True,
              "x", 3),
        Check("trt-matte peak RSS", e2e.rss_mb, MAX_RSS_MB, False, " MB", 0),
    ]
    if "trt-matte int8" in results:
        found.append(Check("INT8 / FP32 end-to-end", results["trt-matte int8"].fps / e2e.fps, MIN_INT8_VS_FP32,
                           True, "x", 3))
    return found


def describe(plan: Plan) -> dict:
    return {"model": plan.model, "clip": f"{plan.clip_width}x{plan.clip_height}", "threads": plan.threads,
            "batch": plan.batch, "cpus": os.cpu_count(), "onnxruntime": ort.__version__,
            "machine": platform.machine(), "int8_accuracy": plan.int8_accuracy}


def print_report(config: dict, results: dict[str, StageResult], verdicts: list[Check]) -> None:
    print(f"model {Path(config['model']).name}, clip {config['clip']}, "
          f"threads {config['threads'] or 'ORT default'}, batch {config['batch'] or 'backend default'}, "
          f"{config['cpus']} CPUs, onnxruntime {config['onnxruntime']}")
    print(f"{'stage':<16}{'frames':>7}{'seconds':>9}{'fps':>8}{'peak RSS MB':>13}{'other CPU':>11}"
          "  (RSS: python + ffmpeg)")
    for name, result in results.items():
        print(f"{name:<16}{result.frames:>7}{result.seconds:>9.2f}{result.fps:>8.2f}{result.rss_mb:>13.0f}"
              f"{result.others_cpu:>10.0%}  ({result.python_mb:.0f} + {result.children_mb:.0f})")
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
    parser.add_argument("--threads", type=positive_int, help="ONNX Runtime intra-op threads (default: ORT's)")
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
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
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
            stages = FP32_STAGES if plan.int8_graph is None else STAGES
            results = {name: measure_stage(name, plan) for name in stages}
        config = describe(plan)
        verdicts = checks(results)
        print_report(config, results, verdicts)
        if args.json:
            write_json(args.json, config, results, verdicts)
    except (BenchError, MatteError, OSError) as exc:
        print(f"bench_cpu: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
