"""Reduced precision against FP32 on clips it was not made from.

Makes a set of clips with ffmpeg: from ``--clip`` (carphone.mp4: a person), its first
half and its second half (held out), a crowd (four copies, one shrunk, one hue-shifted)
and the person small in a 640x360 frame; and clips with no subject from ffmpeg's own
sources (test pattern, colour gradients, Mandelbrot, cellular automaton, "life", noise).
Then, on every third frame of each clip, decoded as a run decodes it, it compares with
the FP32 matte graph (masks at 128, IoU over all frames together, and the mean absolute
error), and prints each clip's range of top probabilities (the network's output before
the stretch):

- the FP16 graph (``build_engine.fp16``: the measured layers kept FP32) and the same
  network with every layer in FP16;
- the CPU INT8 graph of each calibration recipe: ``person`` calibrated on the first half
  of the clip; ``diverse`` on that half with the test pattern and the gradients.

Everything runs on ONNX Runtime's CPU, which rounds to FP16 at tensor boundaries: a proxy
for TensorRT's FP16 kernels. The exit status is non-zero only when the study itself fails.

Usage:
    python scripts/precision_study.py [--model PATH] [--clip PATH] [--frames N] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from trt_matte.accuracy import compare_masks
from trt_matte.build_engine.fp16 import KeptInFp32, convert_network_to_fp16
from trt_matte.build_engine.matte_graph import build_matte_graph, matte_graph_path
from trt_matte.build_engine.network import prepare_network
from trt_matte.calibration.calibrate import calibrate
from trt_matte.engine.onnxruntime_backend import OnnxRuntimeBackend
from trt_matte.files import atomic_write_bytes
from trt_matte.media.ffmpeg import ffmpeg_exe
from trt_matte.media.frame_reader import FrameReader
from trt_matte.media.probe import probe_video
from trt_matte.models import resolve_model
from trt_matte.runtime.guard import LOW_CONFIDENCE_PEAK

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
# ffmpeg's sources with no subject, each 40 frames at 320x240; colours, corners and seeds
# are given, since these sources otherwise draw new ones on every run.
PATTERNS = {
    "test pattern": "testsrc=size=320x240:rate=10",
    "gradients": "gradients=s=320x240:r=10:c0=0xff0000:c1=0x0000ff:x0=20:y0=30:x1=300:y1=200:nb_colors=2:speed=0.05",
    "mandelbrot": "mandelbrot=s=320x240:r=10",
    "cellular automaton": "cellauto=s=320x240:r=10:rule=110:seed=3",
    "life": "life=s=320x240:r=10:mold=10:ratio=0.1:seed=3",
    "noise": "color=c=gray:s=320x240:r=10,noise=alls=60:allf=t:all_seed=3",
}
PATTERN_FRAMES = 40
RECIPES = {"person": ("first half",), "diverse": ("first half", "test pattern", "gradients")}


def _ffmpeg(*arguments: str) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *arguments], check=True)


def make_clips(source: Path, folder: Path) -> dict[str, Path]:
    """The study's clips, named as the tables name them."""
    frames = probe_video(source).frame_count
    clips = {name: folder / f"{index}.mp4" for index, name in
             enumerate(["first half", "second half", "crowd", "small", *PATTERNS])}
    encode = ["-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p", "-an"]
    _ffmpeg("-i", str(source), "-frames:v", str(frames // 2), *encode, str(clips["first half"]))
    _ffmpeg("-i", str(source), "-vf", f"select=gte(n\\,{frames // 2})", "-fps_mode", "passthrough", *encode,
            str(clips["second half"]))
    crowd = ("[0:v]split=4[a][b][c][d];[b]scale=iw/2:ih/2,pad=iw*2:ih*2:iw/2:ih/2[b2];[c]hue=h=120[c2];"
             "[d]hflip[d2];[a][b2][c2][d2]xstack=inputs=4:layout=0_0|w0_0|0_h0|w0_h0")
    _ffmpeg("-i", str(source), "-filter_complex", crowd, *encode, str(clips["crowd"]))
    _ffmpeg("-i", str(source), "-vf", "scale=iw*0.6:-2,pad=640:360:(ow-iw)/2:ow/8:color=gray", *encode,
            str(clips["small"]))
    for name, graph in PATTERNS.items():
        _ffmpeg("-f", "lavfi", "-i", graph, "-frames:v", str(PATTERN_FRAMES), *encode, str(clips[name]))
    return clips


def every_third_frame(clip: Path) -> np.ndarray:
    return np.concatenate(list(FrameReader(clip).batches(16)))[1::3]


def masks(backend: OnnxRuntimeBackend, frames: np.ndarray) -> np.ndarray:
    return np.concatenate([backend.run(frame[None]) for frame in frames])


def everything_fp16_graph(model: Path, cache: Path) -> Path:
    target = cache / "everything-fp16.onnx"
    network = convert_network_to_fp16(prepare_network(model), KeptInFp32((), {}, 0.0))
    atomic_write_bytes(target, build_matte_graph(network).SerializeToString())
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(SHARED / "models" / "u2netp.onnx"), help="model name or ONNX path")
    parser.add_argument("--clip", type=Path, default=SHARED / "media" / "carphone.mp4", help="a clip of a person")
    parser.add_argument("--frames", type=int, default=48, help="calibration frames per recipe (default 48)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not args.clip.is_file():
        sys.exit(f"precision_study: clip not found: {args.clip}")
    resolved = resolve_model(args.model)
    model = resolved.path
    with tempfile.TemporaryDirectory(prefix="trt-matte-study-") as work:
        work_dir = Path(work)
        clips = make_clips(args.clip, work_dir)
        cache = work_dir / "cache"
        reference = OnnxRuntimeBackend(matte_graph_path(model, cache, peaks=True), device="cpu")
        graphs = {"FP16": matte_graph_path(model, cache, "fp16"), "FP16, every layer": everything_fp16_graph(model, cache)}
        for recipe, inputs in RECIPES.items():
            report = calibrate(model, resolved.label, [clips[name] for name in inputs], cache / recipe,
                               frames=args.frames)
            graphs[f"INT8 {recipe}"] = matte_graph_path(Path(report.folder) / "network-cpu.onnx", cache, "int8")
        candidates = {label: OnnxRuntimeBackend(path, device="cpu") for label, path in graphs.items()}
        results: dict[str, dict] = {}
        print(f"{'clip':20s} {'top prob':>11s}  " + "  ".join(f"{label:>17s}" for label in candidates))
        for name, clip in clips.items():
            frames = every_third_frame(clip)
            pairs = [reference.run_with_peaks(frame[None]) for frame in frames]
            fp32 = np.concatenate([mask for mask, _ in pairs])
            peaks = np.concatenate([peak for _, peak in pairs])
            row = {"frames": len(frames), "top_probability": [float(peaks.min()), float(peaks.max())],
                   "low_confidence_frames": int((peaks < LOW_CONFIDENCE_PEAK).sum())}
            for label, backend in candidates.items():
                accuracy = compare_masks(fp32, masks(backend, frames))
                row[label] = {"iou": accuracy.iou, "iou_worst": accuracy.iou_worst,
                              "mean_abs_error": accuracy.mean_abs_error, "foreground": accuracy.foreground,
                              "passes": accuracy.passes}
            results[name] = row
            cells = "  ".join(f"{row[label]['iou']:>6.3f} / {row[label]['mean_abs_error']:>5.2f} "
                              f"{'ok' if row[label]['passes'] else 'NO'}" for label in candidates)
            print(f"{name:20s} {peaks.min():>5.2f}-{peaks.max():<5.2f}  {cells}", flush=True)
    recipes = "; ".join(f"{recipe} = {' + '.join(inputs)}" for recipe, inputs in RECIPES.items())
    print(f"(IoU over all frames / mean abs error in levels of 255, against FP32, and whether the guard's gate "
          f"passes it; INT8 calibrated on: {recipes})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
