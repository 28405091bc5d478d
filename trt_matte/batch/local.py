"""A batch on one machine: one process, the model loaded once (one ``Matter``), the
images matted together (batched, as ``trt-matte images`` does), then each video.

The report, ``trt-matte-batch.json`` in the output folder, is rewritten (atomically)
after every video and after the images, so a batch stopped at any point is resumed by
running it again: an output that exists with the size the report recorded, made with the
same options, is skipped unless ``overwrite``. An output that exists without such a
record is not replaced either (it may be the user's own file) but fails, naming
``--overwrite``.
"""
from __future__ import annotations

import contextlib
import errno
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from ..api import Matter
from ..errors import MatteError
from ..files import DiskFull, atomic_write_bytes, disk_full_error, note_kept_output
from ..runtime.image_jobs import ImageJob
from .plan import IMAGE, BatchItem

# The output folder when none is named.
DEFAULT_BATCH_DIR = "mattes"
REPORT_NAME = "trt-matte-batch.json"
REPORT_VERSION = 1
DONE, SKIPPED, FAILED = "done", "skipped", "failed"


@dataclass
class Outcome:
    source: str
    kind: str
    status: str
    options: dict[str, Any]
    reason: str = ""
    frames: int = 0
    seconds: float = 0.0
    bytes: int = 0


@dataclass
class BatchReport:
    path: Path
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # output below the folder -> outcome
    # A previous batch's records of the outputs this one makes again: saved until replaced,
    # so a batch stopped before it got to them still knows them for what they are.
    earlier: dict[str, Outcome] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(outcome.status == status for outcome in self.outcomes.values())

    def failures(self) -> list[tuple[str, str]]:
        return [(outcome.source, outcome.reason) for outcome in self.outcomes.values() if outcome.status == FAILED]

    def save(self) -> None:
        document = {"version": REPORT_VERSION,
                    "outputs": {name: asdict(outcome)
                                for name, outcome in sorted({**self.earlier, **self.outcomes}.items())}}
        atomic_write_bytes(self.path, (json.dumps(document, indent=2) + "\n").encode())


def load_report(output_dir: Path) -> BatchReport:
    """The report a previous batch left in ``output_dir`` (an empty one when there is none
    or it cannot be read: then nothing counts as made before)."""
    path = output_dir / REPORT_NAME
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("version") != REPORT_VERSION:
            return BatchReport(path)
        return BatchReport(path, {name: Outcome(**fields) for name, fields in document["outputs"].items()})
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return BatchReport(path)


def prepare(items: list[BatchItem], output_dir: Path, options: dict[str, Any],
            overwrite: bool) -> tuple[BatchReport, list[BatchItem]]:
    """(the report with what is skipped or refused already in it, the items to make)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    previous = load_report(output_dir)
    report = BatchReport(previous.path)
    todo = []
    for item in items:
        reason = _not_to_redo(item, output_dir, previous.outcomes.get(item.name), options, overwrite)
        if reason is None:
            todo.append(item)
            if item.name in previous.outcomes:
                report.earlier[item.name] = previous.outcomes[item.name]
        elif reason:
            report.outcomes[item.name] = Outcome(str(item.source), item.kind, FAILED, options, reason)
        else:
            report.outcomes[item.name] = previous.outcomes[item.name]
            report.outcomes[item.name].status = SKIPPED
    return report, todo


def output_versions(todo: list[BatchItem], output_dir: Path) -> dict[str, tuple[int, int] | None]:
    """Each output's (inode, modification time) before the batch runs, None where absent:
    an output renamed into place since differs."""
    versions: dict[str, tuple[int, int] | None] = {}
    for item in todo:
        try:
            status = (output_dir / item.target).stat()
        except OSError:
            versions[item.name] = None
            continue
        versions[item.name] = (status.st_ino, status.st_mtime_ns)
    return versions


def keep_what_finished(report: BatchReport, todo: list[BatchItem], output_dir: Path, options: dict[str, Any],
                       before: dict[str, tuple[int, int] | None]) -> None:
    """The batch is stopping early (Ctrl-C, a full disk): outputs that took their names
    but whose outcome was not yet recorded (the rest of an image group; a Ctrl-C held
    through a video's renames; on Ray, a task done but not yet collected) are recorded
    as done, so the next run skips them instead of refusing them as not the batch's own.
    The report is saved if it can be: the run is failing already."""
    unrecorded = [item for item in todo if item.name not in report.outcomes]
    now = output_versions(unrecorded, output_dir)
    for item in unrecorded:
        if now[item.name] is not None and now[item.name] != before[item.name]:
            size = (output_dir / item.target).stat().st_size
            report.outcomes[item.name] = Outcome(str(item.source), item.kind, DONE, options, bytes=size)
            note_kept_output()
    with contextlib.suppress(OSError):
        report.save()


def task_groups(todo: list[BatchItem], images_per_group: int) -> list[list[BatchItem]]:
    """The work in pieces one ``matte_group`` call takes: the images together, up to
    ``images_per_group`` at a time (batched inference), then each video alone."""
    images = [item for item in todo if item.kind == IMAGE]
    step = max(1, images_per_group)
    return [*(images[start:start + step] for start in range(0, len(images), step)),
            *([item] for item in todo if item.kind != IMAGE)]


def matte_group(group: list[BatchItem], output_dir: Path, matter: Matter, options: dict[str, Any],
                bar: tqdm) -> list[tuple[str, Outcome]]:
    """Make one group's outputs; (output name, outcome) for each item. A full disk raises."""
    if group[0].kind == IMAGE:
        return _run_images(group, output_dir, matter, options, bar)
    outcome = _run_video(group[0], output_dir, matter, options)
    bar.update()
    return [(group[0].name, outcome)]


class Throughput:
    """Frames/s over the whole batch, for the progress bar."""

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._frames = 0

    def add(self, frames: int) -> str:
        self._frames += frames
        return f"{self._frames / max(time.monotonic() - self._started, 1e-9):.1f} frames/s"


def frames_in(outcomes: list[tuple[str, Outcome]]) -> int:
    return sum(outcome.frames for _, outcome in outcomes)


def progress_bar(todo: list[BatchItem], progress: bool) -> tqdm:
    return tqdm(total=len(todo), unit="file", disable=not progress or not todo, file=sys.stderr)


def run_batch(items: list[BatchItem], output_dir: Path, matter: Matter, options: dict[str, Any], *,
              overwrite: bool = False, progress: bool = True) -> BatchReport:
    """Matte ``items`` into ``output_dir`` with ``matter``; ``options`` (what shapes the
    outputs: model, precision...) are recorded per output and decide what is resumed.
    ``matter`` must show no progress bars of its own: the batch has one."""
    report, todo = prepare(items, output_dir, options, overwrite)
    before = output_versions(todo, output_dir)
    throughput = Throughput()
    try:
        with progress_bar(todo, progress) as bar:
            for group in task_groups(todo, images_per_group=len(todo)):
                outcomes = matte_group(group, output_dir, matter, options, bar)
                report.outcomes.update(outcomes)
                report.save()
                bar.set_postfix_str(throughput.add(frames_in(outcomes)))
    except BaseException:
        keep_what_finished(report, todo, output_dir, options, before)
        raise
    report.save()
    return report


def _not_to_redo(item: BatchItem, output_dir: Path, earlier: Outcome | None, options: dict[str, Any],
                 overwrite: bool) -> str | None:
    """None: make the output; "": skip it (made before with these options); else why it fails."""
    target = output_dir / item.target
    if overwrite or not target.exists():
        return None
    if earlier is None:
        return f"{target} exists and no batch made it (--overwrite replaces it)"
    if earlier.status in (DONE, SKIPPED) and earlier.options == options and earlier.bytes == target.stat().st_size:
        return ""
    return None  # made by a batch with other options, or cut short: made again


def _run_images(items: list[BatchItem], output_dir: Path, matter: Matter, options: dict[str, Any],
                bar: tqdm) -> list[tuple[str, Outcome]]:
    started = time.monotonic()
    jobs = [ImageJob(item.source, output_dir / item.target) for item in items]
    failed = dict(matter.image_jobs(jobs, cutout=bool(options.get("cutout")), bar=bar, output_dir=output_dir))
    seconds = round((time.monotonic() - started) / len(items), 3)
    return [(item.name, Outcome(str(item.source), item.kind, FAILED, options, failed[job.source])
             if job.source in failed else
             Outcome(str(item.source), item.kind, DONE, options, frames=1, seconds=seconds,
                     bytes=job.target.stat().st_size))
            for item, job in zip(items, jobs)]


def result_or_reason(work: Callable[[], Any], folder: Path) -> Any:
    """``work()``'s result, or its one-line reason when it fails; a full disk (writing to
    ``folder``) is raised, since every output after it would fail the same way."""
    try:
        return work()
    except DiskFull:
        raise
    except MatteError as exc:
        return str(exc)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:  # PyAV's and the file system's own
            raise disk_full_error([], folder=folder) from None
        return f"{exc.filename or folder}: {exc.strerror or exc}"


def _run_video(item: BatchItem, output_dir: Path, matter: Matter, options: dict[str, Any]) -> Outcome:
    target = output_dir / item.target
    started = time.monotonic()

    def make() -> Any:
        target.parent.mkdir(parents=True, exist_ok=True)
        return matter.video(item.source, target, overwrite=True, crf=options["crf"], audio=options["audio"],
                            smooth=options["smooth"])

    result = result_or_reason(make, target.parent)
    if isinstance(result, str):
        return Outcome(str(item.source), item.kind, FAILED, options, result)
    return Outcome(str(item.source), item.kind, DONE, options, frames=result.frames,
                   seconds=round(time.monotonic() - started, 2), bytes=target.stat().st_size)
