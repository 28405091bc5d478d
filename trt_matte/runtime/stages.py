"""Run a read -> compute -> write chain with the three stages overlapping.

The reader and the writer each get a thread and a small bounded queue, so memory
stays at a few batches whatever the input length, while the compute stage (which
releases the GIL in ONNX Runtime or TensorRT) runs in the calling thread.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

QUEUE_DEPTH = 2
_POLL_SECONDS = 0.1
_END = object()


class _Stopped(Exception):
    """Another stage failed; this one gives up quietly so the first error is reported."""


class _Channel:
    """A bounded queue whose blocking calls give up as soon as any stage has failed."""

    def __init__(self, failed: threading.Event):
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
        self._failed = failed

    def put(self, item) -> None:
        while not self._failed.is_set():
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
                return
            except queue.Full:
                continue
        raise _Stopped

    def get(self):
        while not self._failed.is_set():
            try:
                return self._queue.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
        raise _Stopped


def run_overlapped(source: Iterable[Item], compute: Callable[[Item], Result],
                   sink: Callable[[Result], None]) -> None:
    """Feed every item of ``source`` through ``compute`` into ``sink``, in order.

    The first exception raised by any stage stops all three and is re-raised here.
    """
    failed = threading.Event()
    errors: list[BaseException] = []
    to_compute, to_sink = _Channel(failed), _Channel(failed)

    def guarded(stage: Callable[[], None], finished: threading.Event | None = None) -> Callable[[], None]:
        def run() -> None:
            try:
                stage()
            except _Stopped:
                pass
            except BaseException as exc:  # handed to the calling thread, never lost
                errors.append(exc)
                failed.set()
            finally:
                if finished is not None:
                    finished.set()
        return run

    def read() -> None:
        for item in source:
            to_compute.put(item)
        to_compute.put(_END)

    def write() -> None:
        while (result := to_sink.get()) is not _END:
            sink(result)

    # Each thread reports its end on an event: after a Thread.join() interrupted by a
    # signal, a second join() can return while the thread still runs (CPython).
    finished = [threading.Event(), threading.Event()]
    for stage, done in zip((read, write), finished):
        threading.Thread(target=guarded(stage, done), daemon=True).start()
    # Ctrl-C lands in this thread; guarded() records it like any failure, which
    # releases the other stages from their queues so the waits below return.
    guarded(lambda: _compute_all(to_compute, compute, to_sink))()
    try:
        for done in finished:
            done.wait()
    except BaseException:
        # Ctrl-C while waiting for the writer: stop it before the caller frees what it reads.
        failed.set()
        for done in finished:
            done.wait()
        raise
    if errors:
        raise errors[0]


def _compute_all(inbox: _Channel, compute: Callable, outbox: _Channel) -> None:
    while (item := inbox.get()) is not _END:
        outbox.put(compute(item))
    outbox.put(_END)
