"""A batch over a Ray cluster: ``trt-matte batch --ray`` (or ``--ray-address ADDR``, or
``RAY_ADDRESS``).

Ray Core actors rather than Ray Data's ``map_batches``: each file is a task of its own
length (a two-hour video beside a thumbnail), a broken file must fail alone with its
reason while the rest go on, and the outputs are files the workers write themselves, so
there is no dataset to stream back. Each actor holds one ``Matter`` (one loaded backend:
on GPU nodes one actor per GPU, ``num_gpus=1``, its engine built or loaded once; on CPU
nodes actors of ``--threads`` CPUs each). The driver keeps at most ``IN_FLIGHT_PER_WORKER``
tasks queued per actor (backpressure) and hands the next one to whichever actor
finishes; Ray restarts an actor whose process dies and runs the task it had again
(``max_restarts``, ``max_task_retries``). Outputs are written under a temporary name and
renamed, so a task run twice leaves neither a duplicate nor a half file. Inputs and the
output folder must be on a filesystem every node sees, by the same paths.
"""
from __future__ import annotations

import collections
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import MatteError
from ..files import note_kept_output, remove_stale_temporaries
from ..interrupts import import_held
from ..media.mux import check_timing_fits
from ..media.probe import probe_video
from .local import (DONE, FAILED, BatchReport, Outcome, Throughput, keep_what_finished, matte_group,
                    output_versions, prepare, progress_bar, result_or_reason, task_groups)
from .plan import VIDEO, BatchItem
from .split import Job, Outcomes, SplitVideo, plan_segments

# Images per task: enough for batched inference, few enough to spread over the workers.
IMAGES_PER_TASK = 32
IN_FLIGHT_PER_WORKER = 2
# A worker that dies is started again, and its task run again, this many times.
RESTARTS = 3
# Ray's switch for clusters beyond one machine; off, every Ray process stays on 127.0.0.1.
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@dataclass(frozen=True)
class RayOptions:
    address: str | None  # None: RAY_ADDRESS, else a Ray of this machine's own
    threads: int | None  # CPUs per CPU actor (default 1)


def _worker_class(ray: Any) -> Any:
    @ray.remote(max_restarts=RESTARTS, max_task_retries=RESTARTS)
    class MatteWorker:
        """One loaded backend on one node, matting the groups of files it is handed."""

        def __init__(self, matter_options: dict[str, Any]):
            from ..api import Matter  # on the worker, at start
            # A model or backend that cannot load is said by ``describe``, in one line:
            # an error raised here would reach the driver as Ray's own, with a traceback.
            self._matter, self._error = None, ""
            try:
                self._matter = Matter(**matter_options)
            except MatteError as exc:
                self._error = str(exc)

        def describe(self) -> str:
            if self._matter is None:
                raise MatteError(self._error)
            return f"{self._matter.describe()} (pid {os.getpid()})"

        def matte(self, group: list[BatchItem], output_dir: Path, options: dict[str, Any]) -> list:
            from tqdm import tqdm
            with tqdm(disable=True) as bar:
                return matte_group(group, output_dir, self._matter, options, bar)

        def matte_segment(self, source: Path, target: Path, first: int, count: int, info: Any) -> Any:
            """A split video's segment (``runtime.segments.Segment``), or why it failed."""
            return result_or_reason(lambda: self._matter.segment(source, target, first, count, info), target.parent)

        def join(self, source: Path, target: Path, segments: list, options: dict[str, Any], info: Any) -> Any:
            """A split video's output from its segments: the frames written, or why it failed."""
            return result_or_reason(lambda: self._matter.join(source, target, segments, crf=options["crf"],
                                                        audio=options["audio"], smooth=options["smooth"],
                                                        info=info).frame_count, target.parent)

    return MatteWorker


def _import_ray(address: str | None) -> Any:
    """Ray, set up before its import for a Ray of this machine's own (no address): Ray
    reads these once, at import. Its processes then listen on 127.0.0.1 only and dial
    no other address (by default Ray swaps 127.0.0.1 for the host's own address), and
    send no usage statistics."""
    if not address and "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_ONLY, "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        return import_held("ray")
    except ImportError:
        raise MatteError("--ray needs Ray: pip install 'trt-matte[ray]'") from None


def _connect(ray: Any, address: str | None) -> None:
    """``ray.init``, with the SIGTERM handler the CLI had (Ray's own exits at once, with
    no line and status 15, where the CLI cleans up as for Ctrl-C)."""
    on_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        if address:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        else:  # "local": a new instance, even where another Ray runs on this machine
            ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
                     logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local Ray instance"
        raise MatteError(f"cannot start or reach {where}: {str(exc).splitlines()[0]}") from None
    finally:
        if on_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_sigterm)


def _worker_count(ray: Any, settings: RayOptions) -> tuple[int, dict[str, float]]:
    """How many actors the cluster holds, and the resources each asks for."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return gpus, {"num_gpus": 1}
    threads = settings.threads or 1
    return max(1, int(resources.get("CPU", 1)) // threads), {"num_cpus": threads}


def run_on_ray(items: list[BatchItem], output_dir: Path, matter_options: dict[str, Any], options: dict[str, Any],
               settings: RayOptions, *, overwrite: bool = False, progress: bool = True, split: bool = False,
               announce: Callable[[str], None] = lambda message: None) -> BatchReport:
    """``local.run_batch`` with the groups spread over a Ray cluster's actors; with
    ``split`` each video is cut into segments matted by several actors (``split``)."""
    address = settings.address or os.environ.get("RAY_ADDRESS")
    ray = _import_ray(address)
    report, todo = prepare(items, output_dir, options, overwrite)
    if not todo:
        report.save()
        return report
    before = output_versions(todo, output_dir)
    _connect(ray, address)
    splits: list[SplitVideo] = []
    try:
        try:
            count, resources = _worker_count(ray, settings)
            worker = _worker_class(ray).options(**resources)
            actors = [worker.remote(matter_options) for _ in range(count)]
            announce(f"{count} Ray worker(s); the first: {_first_result(ray, actors[0].describe.remote())}")
            if split:  # scratch folders a killed split run left on this host
                remove_stale_temporaries({(output_dir / item.target).parent for item in todo}, announce)
            _drive(ray, lambda: worker.remote(matter_options), actors, todo, output_dir, options, report, progress,
                   count if split else 0, splits)
        finally:
            ray.shutdown()  # no task runs after this: the scratch folders can go
            for video in splits:
                video.abandon()
    except BaseException:
        keep_what_finished(report, todo, output_dir, options, before)
        raise
    report.save()
    return report


def _first_result(ray: Any, task: Any) -> Any:
    """The task's result; a MatteError it raised (a full disk, a model that cannot load)
    is raised here as itself, in one line, not as Ray's wrapper with the worker's traceback."""
    try:
        return ray.get(task)
    except ray.exceptions.RayTaskError as error:
        if isinstance(error.cause, MatteError):
            raise error.cause from None
        raise


def _group_job(group: list[BatchItem], output_dir: Path, options: dict[str, Any]) -> Job:
    def lost(reason: str) -> Outcomes:
        return [(item.name, Outcome(str(item.source), item.kind, FAILED, options, reason)) for item in group]
    return Job(lambda actor: actor.matte.remote(group, output_dir, options), lambda outcomes: outcomes, lost)


def _jobs(todo: list[BatchItem], output_dir: Path, options: dict[str, Any], split_over: int,
          queue: Callable[[Job], None], report: BatchReport, splits: list[SplitVideo]) -> list[Job]:
    """The groups' jobs, and with ``split_over`` workers each video's segments' jobs (a
    video that cannot be probed fails here, with the reason; one too short to cut runs whole)."""
    jobs = []
    for group in task_groups(todo, IMAGES_PER_TASK):
        item = group[0]
        if not split_over or item.kind != VIDEO:
            jobs.append(_group_job(group, output_dir, options))
            continue
        try:
            info = probe_video(item.source)
            check_timing_fits(info, [output_dir / item.target])  # before any segment is matted
            bounds = plan_segments(item.source, info, split_over)
        except MatteError as exc:
            report.outcomes[item.name] = Outcome(str(item.source), item.kind, FAILED, options, str(exc))
            continue
        if len(bounds) == 1:
            jobs.append(_group_job(group, output_dir, options))
            continue
        splits.append(SplitVideo(item, output_dir, options, info, bounds, queue))
        jobs += splits[-1].segment_jobs()
    return jobs


def _drive(ray: Any, make_actor: Callable[[], Any], actors: list, todo: list[BatchItem], output_dir: Path,
           options: dict[str, Any], report: BatchReport, progress: bool, split_over: int,
           splits: list[SplitVideo]) -> None:
    """Hand jobs to idle actors, at most IN_FLIGHT_PER_WORKER each, and record each result
    as it comes in; a join is handed out before any job queued earlier. A job whose
    worker died more often than Ray restarts it fails with that reason, and a fresh
    worker takes the dead one's place. Split videos are added to ``splits``."""
    pending: collections.deque[Job] = collections.deque()
    pending.extend(_jobs(todo, output_dir, options, split_over, pending.appendleft, report, splits))
    running: dict[Any, tuple[Any, Job]] = {}  # task -> (actor, job)
    load = {actor: 0 for actor in actors}
    throughput = Throughput()
    with progress_bar(todo, progress) as bar:
        bar.update(sum(item.name in report.outcomes for item in todo))  # failed before they started
        while pending or running:
            for actor in list(load):
                while pending and load[actor] < IN_FLIGHT_PER_WORKER:
                    job = pending.popleft()
                    running[job.start(actor)] = (actor, job)
                    load[actor] += 1
            (finished,), _ = ray.wait(list(running), num_returns=1)
            actor, job = running.pop(finished)
            load[actor] -= 1
            matted = 0
            try:
                result = _first_result(ray, finished)  # a full disk stops the batch
                outcomes = job.finish(result)
                matted = job.matted(result, outcomes)
            except ray.exceptions.RayActorError:
                outcomes = job.lost(f"its worker process died {RESTARTS + 1} times on it")
                if actor in load and not load[actor]:
                    del load[actor]
                    load[make_actor()] = 0
            report.outcomes.update(outcomes)
            report.save()
            if any(outcome.status == DONE for _, outcome in outcomes):
                note_kept_output()  # a worker put it in place: an interrupt now says it stays
            bar.update(len(outcomes))
            bar.set_postfix_str(throughput.add(matted) + _segments_note(splits))


def _segments_note(splits: list[SplitVideo]) -> str:
    """How far the split videos are: their bar moves only when a join is done."""
    if not splits:
        return ""
    done, total = (sum(counts) for counts in zip(*(video.segments() for video in splits)))
    return f", segments {done}/{total}"

