"""Run a read -> compute -> write chain with the three stages overlapping, and own its
teardown.

Each stage runs in a thread of its own, joined by small bounded queues, so memory stays
at a few batches whatever the input length; the calling thread only supervises. The
reader and writer talk to child processes (ffmpeg) or DALI, and either can stop making
progress: a process that stops reading its stdin leaves the writer blocked in a pipe
write, one that stops writing leaves the reader blocked in a read. So one function owns
the way out, whatever ends the run (an error in any stage, a stall, Ctrl-C):

1. ``stop()`` (the caller's) kills the child processes and closes their pipes, which
   turns every blocked read or write into an error at once;
2. the threads are joined, for at most JOIN_SECONDS together; a second Ctrl-C during
   that wait is held until it ends;
3. ``release()`` (the caller's) frees what the threads used (device buffers, pinned
   memory) only once every thread has ended. A thread still alive after the bound keeps
   its memory (freeing it could crash the process) and the run fails with StagesStuck.
"""
from __future__ import annotations

import contextlib
import queue
import threading
import time
from typing import Callable, Iterable, Iterator, TypeVar

from ..errors import MatteError

Item = TypeVar("Item")
Result = TypeVar("Result")

QUEUE_DEPTH = 2
POLL_SECONDS = 0.1
# After a failure the stages get this long, together, to end once their I/O was stopped.
JOIN_SECONDS = 10.0
# Reading one batch or writing one should take seconds; this long means the process
# on the other end of the pipe stopped. Generous, for 4K batches on slow disks.
STALL_SECONDS = 300.0
_END = object()


class StagesStuck(MatteError):
    """A stage did not end within JOIN_SECONDS of being stopped; what it holds stays allocated."""


class _Stopped(Exception):
    """Another stage failed; this one gives up quietly so the first error is reported."""


class _Channel:
    """A bounded queue whose blocking calls give up as soon as any stage has failed."""

    def __init__(self, failed: threading.Event):
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
        self._failed = failed

    def put(self, item: object) -> None:
        while not self._failed.is_set():
            try:
                self._queue.put(item, timeout=POLL_SECONDS)
                return
            except queue.Full:
                continue
        raise _Stopped

    def get(self) -> object:
        while not self._failed.is_set():
            try:
                return self._queue.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
        raise _Stopped


class _Activity:
    """When an I/O stage entered its current read or write, to tell a stall from slowness."""

    def __init__(self, what: str):
        self.what = what
        self._since: float | None = None

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        self._since = time.monotonic()
        try:
            yield
        finally:
            self._since = None

    def stalled_for(self, now: float) -> float:
        since = self._since
        return 0.0 if since is None else now - since


def run_overlapped(source: Iterable[Item], compute: Callable[[Item], Result], sink: Callable[[Result], None], *,
                   stop: Callable[[], None], release: Callable[[], None] = lambda: None) -> None:
    """Feed every item of ``source`` through ``compute`` into ``sink``, in order.

    The first exception raised by any stage, a stall of the reader or writer longer than
    STALL_SECONDS, or Ctrl-C stops all three (``stop`` first, see the module doc) and
    is re-raised here. ``release`` runs once every stage thread has ended.
    """
    failed = threading.Event()
    errors: list[BaseException] = []
    to_compute, to_sink = _Channel(failed), _Channel(failed)
    reading, writing = _Activity("reading frames"), _Activity("writing the outputs")

    def guarded(stage: Callable[[], None], ended: threading.Event) -> Callable[[], None]:
        def run() -> None:
            try:
                stage()
            except _Stopped:
                pass
            except BaseException as exc:  # handed to the calling thread, never lost
                errors.append(exc)
                failed.set()
            finally:
                ended.set()
        return run

    def read() -> None:
        items = iter(source)
        while True:
            with reading.busy():
                item = next(items, _END)
            to_compute.put(item)
            if item is _END:
                return

    def compute_all() -> None:
        while (item := to_compute.get()) is not _END:
            to_sink.put(compute(item))
        to_sink.put(_END)

    def write() -> None:
        while (result := to_sink.get()) is not _END:
            with writing.busy():
                sink(result)

    # Each stage reports its end on an event: after a Thread.join() interrupted by a
    # signal, is_alive() can say False while the thread still runs (CPython).
    stage_ends = {name: threading.Event() for name in ("reader", "inference", "writer")}
    threads = [threading.Thread(target=guarded(stage, ended), name=f"trt-matte-{name}", daemon=True)
               for stage, (name, ended) in zip((read, compute_all, write), stage_ends.items())]
    try:
        for thread in threads:
            thread.start()
        _supervise(stage_ends, failed, (reading, writing), STALL_SECONDS)
    except BaseException as exc:  # a stall, or Ctrl-C (which lands in this thread)
        errors.append(exc)
        failed.set()
    for thread, ended in zip(threads, stage_ends.values()):
        if thread.ident is None:
            ended.set()  # never started (Ctrl-C during start-up): nothing to wait for
    interrupted = False
    if failed.is_set():
        try:
            stop()
        except KeyboardInterrupt:
            interrupted = True  # held, like one during the wait below
        except Exception as exc:  # noqa: BLE001 -- the first error is the one to report
            errors.append(exc)
    stuck, interrupted_waiting = _wait_for_ends(stage_ends, JOIN_SECONDS)
    interrupted = interrupted or interrupted_waiting
    if not stuck:
        try:
            release()
        except Exception as exc:  # noqa: BLE001 -- reported after the error that ended the run
            errors.append(exc)
    if interrupted and not errors:
        errors.append(KeyboardInterrupt())
    if stuck:
        raise StagesStuck(f"the {', '.join(stuck)} did not stop within {JOIN_SECONDS:.0f} s of the run "
                          f"ending ({_describe(errors[0]) if errors else 'no error'})")
    if errors:
        raise errors[0]


def _supervise(stage_ends: dict[str, threading.Event], failed: threading.Event,
               activities: tuple[_Activity, ...], stall_seconds: float) -> None:
    """Wait until every stage has ended or one failed; raise on a stalled read or write."""
    while not failed.is_set() and not all(ended.is_set() for ended in stage_ends.values()):
        failed.wait(POLL_SECONDS)
        now = time.monotonic()
        for activity in activities:
            if activity.stalled_for(now) > stall_seconds:
                raise MatteError(f"no progress for {stall_seconds:g} s while {activity.what}: "
                                 "the ffmpeg or DALI process stopped responding")


def _wait_for_ends(stage_ends: dict[str, threading.Event], seconds: float) -> tuple[list[str], bool]:
    """Wait up to ``seconds`` in all for every stage to end: (the stages still running,
    whether Ctrl-C came meanwhile). Ctrl-C is held until the wait ends, so nothing is
    freed under a running thread."""
    deadline = time.monotonic() + seconds
    interrupted = False
    for ended in stage_ends.values():
        while not ended.is_set() and time.monotonic() < deadline:
            try:
                ended.wait(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
            except KeyboardInterrupt:
                interrupted = True
    return [name for name, ended in stage_ends.items() if not ended.is_set()], interrupted


def _describe(error: BaseException) -> str:
    return "interrupted" if isinstance(error, KeyboardInterrupt) else str(error) or type(error).__name__
