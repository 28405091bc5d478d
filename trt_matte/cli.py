"""Command line: ``trt-matte video IN``, ``trt-matte IN.mp4`` and ``trt-matte images DIR``.

Every failure the user can act on ends as one ``trt-matte: error: ...`` line and a
non-zero exit; a traceback only appears with ``TRT_MATTE_DEBUG=1``.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
import threading
import time
import traceback
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import argparse_addons

from .version import __version__
from .accuracy import GATE
from .api import (BACKEND_CHOICES, CACHE_CONTENTS, CACHE_FOLDERS, PRECISION_CHOICES, Matter, build, cache_entries,
                  calibrate, clean_cache, parse_device, resolved_crf)
from .batch.cluster import RayOptions, run_on_ray
from .batch.local import DEFAULT_BATCH_DIR, DONE, SKIPPED, run_batch
from .batch.plan import listed_paths, plan_batch
from .build_engine.matte_graph import MAX_SHAPING_PIXELS, PRECISIONS, MaskShape
from .build_engine.tensorrt_build import DEFAULT_MAX_BATCH, DEFAULT_MAX_FRAME_SIDE, MAX_FRAME_SIDE_LIMIT
from .calibration.calibrate import DEFAULT_FRAMES, MAX_FRAMES, MIN_FRAMES
from .errors import MatteError
from .files import disk_full_line, interrupted_line
from .media.outputs import (DEFAULT_CRF, check_output_paths, existing_outputs, is_format_list, kept_note,
                            output_paths, parse_background, parse_outputs)
from .media.excerpt import PREVIEW_SECONDS, excerpt, parse_time, preview_range
from .media.ffmpeg import ffmpeg_note
from .media.probe import probe_video
from .models import DEFAULT_MODEL, MODELS, cache_dir, resolve_model
from .runtime.guard import check_line
from .runtime.images import find_inputs
from .runtime.smoothing import DEFAULT_STRENGTH, MAX_STRENGTH

COMMANDS = ("build", "video", "images", "calibrate", "batch", "cache")
EXIT_FAILED = 1
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {text}")
    return value


def _device(text: str) -> str:
    try:
        parse_device(text)
    except MatteError as bad:
        raise argparse.ArgumentTypeError(str(bad)) from None
    return text


def _time(text: str) -> Fraction:
    try:
        return parse_time(text)
    except MatteError as bad:
        raise argparse.ArgumentTypeError(str(bad)) from None


def _add_stretch_floor(group: argparse._ActionsContainer) -> None:
    group.add_argument("--stretch-floor", type=_probability, default=0.0, metavar="F",
                       help="stretch each frame's mask over at least F of the network's 0..1 output, so frames "
                            "without a subject stay empty (0.5 suits green-screen work; default 0: rembg's masks)")


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and backend")
    group.add_argument("--model", metavar="NAME|PATH",
                       help=f"one of {', '.join(MODELS)} (default {DEFAULT_MODEL}), or a rembg U²-Net .onnx file")
    group.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                       help="inference backend (default: auto: TensorRT on an NVIDIA GPU, else OpenVINO on "
                            "the CPU where installed, else ONNX Runtime)")
    group.add_argument("--device", type=_device, default="auto", metavar="auto|cpu|cuda|cuda:N",
                       help="auto picks CUDA when the backend can use it, else the CPU; cuda:N the N-th GPU "
                            "CUDA sees, after CUDA_VISIBLE_DEVICES (default: auto)")
    group.add_argument("--threads", type=argparse_addons.Integer(1, 1024), metavar="N",
                       help="CPU inference threads (default: the runtime's choice, one per core)")
    group.add_argument("--batch", type=argparse_addons.Integer(1, 1024), metavar="N",
                       help="frames per inference call (default: 1 on the CPU, 16 on the GPU)")
    group.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                       help="auto: fp16 on TensorRT, fp32 on the CPU; int8 needs 'trt-matte calibrate' first")
    group.add_argument("--force", action="store_true",
                       help=f"with --precision int8, use a calibration below {GATE} against FP32")
    _add_stretch_floor(group)
    group.add_argument("-q", "--quiet", action="store_true", help="no progress bar or status lines")


def _add_shaping_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "mask shaping", "done in the graph at the output size, in this order; default: rembg's masks as they are")
    group.add_argument("--threshold", type=argparse_addons.Integer(1, 255), default=0, metavar="T",
                       help="a hard matte: 255 where the mask is at least T (1..255), else 0")
    pixels = argparse_addons.Integer(0, MAX_SHAPING_PIXELS)
    group.add_argument("--erode", type=pixels, default=0, metavar="N", help="shrink the foreground by N pixels")
    group.add_argument("--dilate", type=pixels, default=0, metavar="N",
                       help="grow the foreground by N pixels (after --erode: together they remove specks)")
    group.add_argument("--feather", type=pixels, default=0, metavar="N",
                       help="soften the edge: a blur reaching N pixels to each side of it")


class _OutputOrFormat(argparse.Action):
    """``-o/--output OUT``: where the outputs go. ``--output KIND[,KIND]``, the spelling of
    ``--format`` before version 0.2, still works: a value made only of output kinds is
    taken as formats, and a note says so."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: str,
                 option_string: str | None = None) -> None:
        if option_string == "--output" and is_format_list(value):
            namespace.kinds = [*(namespace.kinds or []), value]
            namespace.notes = [*getattr(namespace, "notes", []),
                               f"note: --output {value} is now written --format {value}"]
        else:
            namespace.output = Path(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trt-matte",
        description="Alpha mattes for videos and images with U²-Net. "
                    "'trt-matte IN.mp4' is short for 'trt-matte video IN.mp4'.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = commands.add_parser("build", help="build the TensorRT engine for this GPU (done on first use otherwise)")
    build.add_argument("--model", metavar="NAME|PATH",
                       help=f"one of {', '.join(MODELS)} (default {DEFAULT_MODEL}), or a rembg U²-Net .onnx file")
    build.add_argument("--precision", choices=PRECISIONS, default="fp16",
                       help="network precision (default: fp16); int8 builds from 'trt-matte calibrate''s graph")
    build.add_argument("--max-batch", type=argparse_addons.Integer(1, 256), default=DEFAULT_MAX_BATCH,
                       metavar="N", help=f"largest batch the engine takes (default: {DEFAULT_MAX_BATCH})")
    build.add_argument("--max-size", type=argparse_addons.Integer(64, MAX_FRAME_SIDE_LIMIT),
                       default=DEFAULT_MAX_FRAME_SIDE,
                       metavar="PIXELS", help=f"largest frame side, up to {MAX_FRAME_SIDE_LIMIT} "
                                              f"(default: {DEFAULT_MAX_FRAME_SIDE})")
    _add_stretch_floor(build)
    build.add_argument("--device", type=_device, default="cuda", metavar="cuda|cuda:N",
                       help="the GPU to build for: the N-th CUDA sees, after CUDA_VISIBLE_DEVICES (default: cuda:0)")
    build.add_argument("--overwrite", action="store_true", help="build again even when a cached engine fits")
    build.add_argument("--force", action="store_true",
                       help=f"with int8, accept a calibration below {GATE} against FP32")
    build.add_argument("-q", "--quiet", action="store_true", help="no progress or status lines")

    calibrate = commands.add_parser(
        "calibrate", help="make an INT8 graph from frames of your own footage (then: --precision int8)")
    calibrate.add_argument("inputs", type=Path, nargs="+", metavar="INPUT",
                           help="videos, images or folders of images to sample frames from")
    calibrate.add_argument("--frames", type=argparse_addons.Integer(MIN_FRAMES, MAX_FRAMES), default=DEFAULT_FRAMES,
                           metavar="N",
                           help=f"frames to calibrate on, spread over all inputs; a quarter as many more are "
                                f"held back to check accuracy (default: {DEFAULT_FRAMES})")
    calibrate.add_argument("--seed", type=argparse_addons.Integer(0, 2**32 - 1), default=0, metavar="S",
                           help="which frames are drawn; the same seed gives the same graph (default: 0)")
    calibrate.add_argument("--overwrite", action="store_true",
                           help="calibrate again when these frames were calibrated before (default: reuse)")
    calibrate.add_argument("--model", metavar="NAME|PATH",
                           help=f"one of {', '.join(MODELS)} (default {DEFAULT_MODEL}), or a rembg U²-Net .onnx file")
    calibrate.add_argument("-q", "--quiet", action="store_true", help="no progress bars; the report is still printed")

    video = commands.add_parser("video", help="write the matte of a video (default: IN.matte.mp4 beside it)")
    video.add_argument("input", type=Path, metavar="IN", help="the source video")
    # -o/--output says where the files go (as for images), --format what is written.
    video.add_argument("-o", "--output", dest="output", action=_OutputOrFormat, metavar="OUT",
                       help="output file (one --format), or a folder for <stem>.<kind> files "
                            "(default: beside IN)")
    video.add_argument("--format", dest="kinds", action="append", metavar="KIND[,KIND...]",
                       help="what to write, several allowed: matte (IN.matte.mp4), green (IN.green.mp4, "
                            "the source over --background), prores (IN.alpha.mov, ProRes 4444 + alpha), "
                            "webm (IN.alpha.webm, VP9 + alpha), png (IN.png/000001.png..., RGBA); "
                            "default: matte")
    video.add_argument("--background", metavar="COLOUR|FILE",
                       help="behind the green output: green (default), blue, black, white, #RRGGBB, "
                            "or an image or video file (scaled to cover, centred; a shorter video loops)")
    video.add_argument("--crf", type=argparse_addons.Integer(0, 51),
                       help=f"x264 quality of the matte and green outputs, lower is closer (default: {DEFAULT_CRF}; "
                            "0, lossless, with --threshold and no --feather: exactly 0 and 255, and smaller)")
    video.add_argument("--no-audio", action="store_true", help="leave the source's audio out of the outputs")
    part = video.add_argument_group("part of the clip", "times in seconds (1.5) or HH:MM:SS.mmm from the first frame")
    part.add_argument("--start", type=_time, metavar="T", help="matte from T (the outputs start there, at 0)")
    part.add_argument("--end", type=_time, metavar="T", help="matte up to T (the frame at T is left out)")
    part.add_argument("--preview", action="store_true",
                      help=f"matte {float(PREVIEW_SECONDS):g} seconds from the middle into IN.preview.* outputs, "
                           "to check the settings before a long run")
    video.add_argument("--calibrate-first", action="store_true",
                       help="with --precision int8: calibrate on this video's own frames first (reused when "
                            "made before), then matte it")
    video.add_argument("--overwrite", action="store_true",
                       help="replace outputs that already exist (default: keep them and say so)")
    video.add_argument("--smooth", type=argparse_addons.Integer(0, MAX_STRENGTH), default=0, metavar="K",
                       help=f"temporal smoothing against flicker: a centred, motion-gated median over 2K+1 frames "
                            f"({DEFAULT_STRENGTH} recommended; default 0, off)")
    _add_engine_options(video)
    _add_shaping_options(video)

    images = commands.add_parser("images", help="write a mask PNG (or an RGBA cutout) for every image in a folder")
    images.add_argument("input", type=Path, metavar="DIR", help="folder of jpg/png/webp/bmp/tiff images")
    images.add_argument("-o", "--output", type=Path, metavar="OUTDIR", help="output folder (default: DIR.masks)")
    images.add_argument("-r", "--recursive", action="store_true", help="include sub-folders, mirrored in OUTDIR")
    images.add_argument("--cutout", action="store_true", help="write RGBA cutouts instead of masks")
    images.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    _add_engine_options(images)
    _add_shaping_options(images)

    batch = commands.add_parser("batch", help="matte many videos and images in one run, resumable")
    batch.add_argument("inputs", type=Path, nargs="*", metavar="INPUT",
                       help="videos, images and folders of them (their trees are mirrored in OUTDIR)")
    batch.add_argument("--from-list", type=Path, action="append", default=[], metavar="FILE",
                       help="also the paths in FILE, one per line (relative to FILE's folder; # comments)")
    batch.add_argument("-o", "--output", type=Path, default=Path(DEFAULT_BATCH_DIR), metavar="OUTDIR",
                       help=f"where the outputs go (default: ./{DEFAULT_BATCH_DIR})")
    batch.add_argument("-r", "--recursive", action="store_true", help="include the folders' sub-folders")
    batch.add_argument("--overwrite", action="store_true",
                       help="make every output again (default: skip those a batch made with the same options)")
    batch.add_argument("--cutout", action="store_true", help="images: RGBA cutouts instead of masks")
    batch.add_argument("--crf", type=argparse_addons.Integer(0, 51),
                       help=f"videos: x264 quality of the mattes (default: {DEFAULT_CRF}; 0 with --threshold)")
    batch.add_argument("--no-audio", action="store_true", help="videos: leave the sources' audio out")
    batch.add_argument("--smooth", type=argparse_addons.Integer(0, MAX_STRENGTH), default=0, metavar="K",
                       help="videos: temporal smoothing against flicker (see 'video --help'; default 0)")
    batch.add_argument("--ray", action="store_true",
                       help="spread the files over a Ray cluster (RAY_ADDRESS, else a Ray of this machine's own); "
                            "pip install 'trt-matte[ray]'")
    batch.add_argument("--ray-address", metavar="ADDR", help="the Ray cluster to use (implies --ray)")
    batch.add_argument("--split", action="store_true",
                       help="with --ray: cut each video at keyframes and matte the pieces on several workers at "
                            "once; the output is the one a single worker writes")
    _add_engine_options(batch)
    _add_shaping_options(batch)

    cache = commands.add_parser("cache", help="list what the cache holds, or clean it")
    cache.add_argument("action", nargs="?", choices=("list", "clean"), default="list",
                       help="list (default) or clean")
    for kind, contents in CACHE_CONTENTS.items():
        cache.add_argument(f"--{kind}", dest="kinds", action="append_const", const=kind,
                           help=f"clean: remove the {contents}")
    cache.add_argument("--all", dest="kinds", action="store_const", const=list(CACHE_FOLDERS),
                       help="clean: remove everything (the next run rebuilds what it needs)")
    cache.add_argument("-q", "--quiet", action="store_true", help="clean: no summary line")
    return parser


def _with_default_command(argv: list[str]) -> list[str]:
    """``trt-matte IN.mp4`` means ``trt-matte video IN.mp4``."""
    first_word = next((arg for arg in argv if not arg.startswith("-")), None)
    if first_word is None or first_word in COMMANDS or argv[0] in ("-h", "--help", "--version"):
        return argv
    return ["video", *argv]


def _status(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(f"trt-matte: {message}", file=sys.stderr, flush=True)


def _matter_options(args: argparse.Namespace) -> dict:
    return {"model": args.model, "backend": args.backend, "device": args.device, "threads": args.threads,
            "batch": args.batch, "precision": args.precision, "force": args.force,
            "stretch_floor": args.stretch_floor, **_shaping(args)}


def _shaping(args: argparse.Namespace) -> dict:
    return {"threshold": args.threshold, "erode": args.erode, "dilate": args.dilate, "feather": args.feather}


def _matter(args: argparse.Namespace, progress: bool | None = None) -> Matter:
    matter = Matter(**_matter_options(args), progress=not args.quiet if progress is None else progress,
                    announce=lambda line: _status(args, line))
    _status(args, matter.describe())
    return matter


def _run_build(args: argparse.Namespace) -> int:
    cached, spec, label = build(args.model, precision=args.precision, max_batch=args.max_batch,
                                max_frame_side=args.max_size, overwrite=args.overwrite, accept_below_gate=args.force,
                                stretch_floor=args.stretch_floor, device=args.device,
                                progress=not args.quiet, announce=lambda line: _status(args, line))
    if not cached.fresh:
        _status(args, f"already built for {label} on {spec.gpu.name}: {cached.path} (--overwrite builds again)")
    return 0


def _note_ffmpeg(args: argparse.Namespace) -> None:
    note = ffmpeg_note()
    if note:
        _status(args, note)


def _run_calibrate(args: argparse.Namespace) -> int:
    _note_ffmpeg(args)
    report = calibrate(args.inputs, model=args.model, frames=args.frames, seed=args.seed, overwrite=args.overwrite,
                       progress=not args.quiet, announce=lambda line: _status(args, line))
    for line in report.lines():
        print(line)
    return 0


def _run_video(args: argparse.Namespace) -> int:
    for note in getattr(args, "notes", []):
        _status(args, note)
    _note_ffmpeg(args)
    # Bad options and a bad input fail before any model work.
    kinds = parse_outputs(args.kinds)
    background = parse_background(args.background, kinds)
    targets = output_paths(args.input, args.output, kinds, args.preview)
    check_output_paths(args.input, targets)
    if existing_outputs(targets, args.overwrite) == targets:  # nothing to do: no model to load
        for path in targets.values():
            _status(args, kept_note(path))
        return 0
    if args.preview and (args.start is not None or args.end is not None):
        raise MatteError("a preview picks its own seconds from the middle: leave out --start and --end")
    probed = probe_video(args.input)
    start, end = preview_range(probed) if args.preview else (args.start, args.end)
    excerpt(probed, start, end)  # an empty range fails here, before the model loads
    if args.preview:
        _status(args, f"preview: {float(start):.2f} to {float(end):.2f} s of {args.input.name}")
    if args.calibrate_first:
        _calibrate_on_input(args)
    with _matter(args) as matter:
        started = time.monotonic()
        result = matter.video(args.input, args.output, crf=args.crf, audio=not args.no_audio, batch=args.batch,
                              outputs=kinds, background=background, smooth=args.smooth, probed=probed,
                              overwrite=args.overwrite, start=args.start, end=args.end, preview=args.preview)
    seconds = time.monotonic() - started
    written = ", ".join(str(path) for path in result.outputs.values())
    _status(args, f"wrote {written} ({result.frames} frames, {result.frames / seconds:.1f} frames/s"
                  f"{result.damage_note()})")
    if result.precision_check is not None:
        _status(args, f"{result.precision.upper()} against FP32 on the frames checked: "
                      f"{check_line(result.precision_check, result.checked_frames, result.low_confidence_frames)}")
    return 0


def _calibrate_on_input(args: argparse.Namespace) -> None:
    if args.precision != "int8":
        raise MatteError("--calibrate-first goes with --precision int8")
    report = calibrate([args.input], model=args.model, progress=not args.quiet,
                       announce=lambda line: _status(args, line))
    for line in report.lines():
        _status(args, line)


def _run_images(args: argparse.Namespace) -> int:
    find_inputs(args.input, args.output, args.recursive)  # a bad folder fails before the model loads
    with _matter(args) as matter:
        report = matter.images(args.input, args.output, recursive=args.recursive, cutout=args.cutout,
                               overwrite=args.overwrite)
    redo = " (--overwrite makes them again)" if report.skipped else ""
    _status(args, f"{report.processed} written, {report.skipped} already there{redo}, {len(report.failed)} failed")
    return EXIT_FAILED if report.failed else 0


def _batch_options(args: argparse.Namespace, model_label: str) -> dict:
    """What shapes a batch's outputs: recorded per output, it decides what a rerun skips.
    The mask shaping steps are recorded only when taken, so reports from before they
    existed still match a run without them."""
    shaping = _shaping(args)
    return {"model": model_label, "precision": args.precision, "stretch_floor": args.stretch_floor,
            "crf": resolved_crf(args.crf, MaskShape(**shaping)), "audio": not args.no_audio, "smooth": args.smooth,
            "cutout": args.cutout, **{step: value for step, value in shaping.items() if value}}


def _run_batch(args: argparse.Namespace) -> int:
    inputs = [*args.inputs, *(path for listed in args.from_list for path in listed_paths(listed))]
    if not inputs:
        raise MatteError("name the videos, images or folders to matte (or --from-list FILE)")
    items = plan_batch(inputs, args.output, args.recursive)  # bad inputs fail before the model loads
    if args.ray or args.ray_address:
        if parse_device(args.device)[1] is not None:
            raise MatteError(f"--device {args.device} picks a GPU of this machine; under Ray each worker is given "
                             "its own GPU (leave --device out, or say cuda)")
        # The workers load the model; the driver only names it (fetching it once if needed).
        options = _batch_options(args, resolve_model(args.model).label)
        report = run_on_ray(items, args.output, _matter_options(args), options,
                            RayOptions(args.ray_address, args.threads), overwrite=args.overwrite,
                            progress=not args.quiet, split=args.split, announce=lambda line: _status(args, line))
    else:
        if args.split:
            raise MatteError("--split spreads each video over Ray workers: add --ray (or --ray-address)")
        with _matter(args, progress=False) as matter:
            report = run_batch(items, args.output, matter, _batch_options(args, matter.model_label),
                               overwrite=args.overwrite, progress=not args.quiet)
    failures = report.failures()
    _status(args, f"batch: {report.count(DONE)} done, {report.count(SKIPPED)} skipped (made before with these "
                  f"options), {len(failures)} failed; report in {report.path}")
    for source, reason in failures:
        _status(args, f"  failed {source}: {reason}")
    return EXIT_FAILED if failures else 0


def _run_cache(args: argparse.Namespace) -> int:
    if args.action == "clean":
        if not args.kinds:
            raise MatteError(f"say what to clean: {', '.join('--' + kind for kind in CACHE_FOLDERS)}, or --all")
        removed, freed = clean_cache(args.kinds)
        _status(args, f"removed {removed} cache entr{'y' if removed == 1 else 'ies'} ({_megabytes(freed)}) "
                      f"from {cache_dir()}")
        return 0
    if args.kinds:
        raise MatteError("--" + args.kinds[0] + " goes with 'trt-matte cache clean'")
    entries = cache_entries()
    print(f"{cache_dir()}: {len(entries)} entries, {_megabytes(sum(entry.bytes for entry in entries))}")
    now = time.time()
    for entry in entries:
        print(f"  {entry.kind:13s} {_megabytes(entry.bytes):>9s} {_age(now - entry.modified):>8s}  "
              f"{entry.path.relative_to(cache_dir())}: {entry.made_from}")
    return 0


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler or `kill`): cleaned up exactly like Ctrl-C."""


# Set by SIGTERM: Ray's ray.get and ray.wait turn any exception a signal handler raised
# into a plain KeyboardInterrupt, and the exit status must still say TERM.
_terminated = threading.Event()


def _terminate(signum: int, frame: object) -> None:
    _terminated.set()
    raise Terminated


@contextlib.contextmanager
def _terminate_like_ctrl_c() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may install signal handlers
        return
    _terminated.clear()
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_with_default_command(sys.argv[1:] if argv is None else argv))
    try:
        with _terminate_like_ctrl_c():
            return {"build": _run_build, "video": _run_video, "images": _run_images,
                    "calibrate": _run_calibrate, "batch": _run_batch, "cache": _run_cache}[args.command](args)
    except MatteError as exc:
        print(f"trt-matte: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as interrupt:
        return _interrupted(interrupt)
    except Exception as exc:  # the promise is one line, never a traceback
        interrupt = _interrupt_behind(exc)
        if interrupt is not None:
            return _interrupted(interrupt)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:  # a full disk, wherever it struck
            print(f"trt-matte: error: {disk_full_line(exc.filename)}", file=sys.stderr)
            return EXIT_FAILED
        if os.environ.get("TRT_MATTE_DEBUG"):
            raise
        print(f"trt-matte: error: unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              f"({_traceback_note(exc)})", file=sys.stderr)
        return EXIT_FAILED


def _interrupted(interrupt: KeyboardInterrupt) -> int:
    print(interrupted_line(), file=sys.stderr)
    return EXIT_TERMINATED if isinstance(interrupt, Terminated) or _terminated.is_set() else EXIT_INTERRUPTED


def _interrupt_behind(error: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C a library turned into its own error, if any: OpenVINO's extension
    module, interrupted while it loads, raises ImportError from the KeyboardInterrupt."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _traceback_note(error: BaseException) -> str:
    """Where the full traceback of an unexpected error went: a log file in the cache."""
    try:
        log = cache_dir() / CACHE_FOLDERS["logs"] / f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(traceback.format_exception(error)))
    except Exception:  # noqa: BLE001 -- no cache folder (no home, a full disk): say how to see it instead
        return "run with TRT_MATTE_DEBUG=1 for the traceback"
    return f"traceback in {log}"


if __name__ == "__main__":
    sys.exit(main())
