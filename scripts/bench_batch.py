"""One ``trt-matte batch`` run against separate ``trt-matte video`` runs on the same clips.

Makes ``--clips`` short clips with ffmpeg (``--frames`` frames each of ``--clip``, each
starting at another frame), then times, in one run on one machine: a ``trt-matte
batch`` of all of them (the model loaded once) and one ``trt-matte video`` process per
clip, one after another (what a shell loop does), same model, backend and options. Both
write mattes, which are compared frame for frame. Prints both wall times, frames/s and
the ratio (target: batch >= 1.3x the loop).

Usage:
    python scripts/bench_batch.py [--model NAME|PATH] [--clip PATH] [--clips N] [--frames N]
                                  [--backend auto|onnxruntime|openvino]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from trt_matte.media.ffmpeg import ffmpeg_exe

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
TARGET = 1.3


def make_clips(source: Path, folder: Path, clips: int, frames: int) -> list[Path]:
    made = []
    for index in range(clips):
        target = folder / f"clip{index:02d}.mp4"
        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(source), "-vf",
                        f"select=gte(n\\,{index * 3})", "-frames:v", str(frames), "-c:v", "libx264", "-crf", "18",
                        "-pix_fmt", "yuv420p", "-an", str(target)], check=True)
        made.append(target)
    return made


def timed(command: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def decoded(path: Path) -> np.ndarray:
    return np.frombuffer(subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo",
                                         "-pix_fmt", "gray", "-"], capture_output=True, check=True).stdout, np.uint8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(SHARED / "models" / "u2netp.onnx"))
    parser.add_argument("--clip", type=Path, default=SHARED / "media" / "carphone.mp4")
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args()
    trt_matte = [sys.executable, "-m", "trt_matte"]
    engine = ["--model", args.model, "--backend", args.backend, "-q"]
    with tempfile.TemporaryDirectory(prefix="trt-matte-bench-batch-") as work:
        folder = Path(work)
        for name in ("clips", "loop"):
            (folder / name).mkdir()
        clips = make_clips(args.clip, folder / "clips", args.clips, args.frames)
        # One untimed run first, so both sides find the model's graphs (and compiled blobs) cached.
        timed([*trt_matte, "video", str(clips[0]), "-o", str(folder / "warm.mp4"), *engine])
        batch_seconds = timed([*trt_matte, "batch", str(folder / "clips"), "-o", str(folder / "batch"), *engine])
        loop_seconds = sum(timed([*trt_matte, "video", str(clip), "-o", str(folder / "loop" / f"{clip.stem}.mp4"),
                                  *engine]) for clip in clips)
        same = all(np.array_equal(decoded(folder / "batch" / "clips" / f"{clip.stem}.matte.mp4"),
                                  decoded(folder / "loop" / f"{clip.stem}.mp4")) for clip in clips)
    frames = args.clips * args.frames
    ratio = loop_seconds / batch_seconds
    print(f"{args.clips} clips x {args.frames} frames, backend {args.backend}")
    print(f"  trt-matte batch          {batch_seconds:7.1f} s  {frames / batch_seconds:6.1f} frames/s")
    print(f"  trt-matte video, a loop  {loop_seconds:7.1f} s  {frames / loop_seconds:6.1f} frames/s")
    print(f"  batch / loop: {ratio:.2f}x (target >= {TARGET}x) -> {'PASS' if ratio >= TARGET else 'FAIL'}; "
          f"mattes {'identical' if same else 'DIFFER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
