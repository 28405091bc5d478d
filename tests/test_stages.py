"""run_overlapped(source, compute, sink): order, completeness, failure in any stage,
bounded lead of the source over the sink, and Ctrl-C inside compute.

Every call runs under a time guard: a stage that fails must release the others, so a
hang here is a bug, reported as a test failure rather than a stuck test run.
"""
from __future__ import annotations

import faulthandler
import itertools
import os
import signal
import threading
import time

import pytest

from trt_matte.runtime.stages import QUEUE_DEPTH, run_overlapped

# Generous: a healthy call returns within a few queue polls (0.1 s each).
GUARD_SECONDS = 10.0
# How long a stage failure may take to stop the others and surface in the caller:
# each blocked stage notices within one _POLL_SECONDS (0.1 s) of its queue wait.
PROMPT_SECONDS = 2.0


class Boom(Exception):
    pass


def run_guarded(source, compute, sink, timeout: float = GUARD_SECONDS) -> tuple[BaseException | None, float]:
    """Run run_overlapped in a helper thread; return (what it raised, seconds taken).

    Fails the test (instead of hanging it) when the call does not return in ``timeout``.
    """
    outcome: dict[str, BaseException | None] = {"raised": None}

    def target() -> None:
        try:
            run_overlapped(source, compute, sink)
        except BaseException as exc:  # noqa: BLE001 - the test inspects whatever came out
            outcome["raised"] = exc

    started = time.monotonic()
    caller = threading.Thread(target=target, daemon=True)
    caller.start()
    caller.join(timeout)
    elapsed = time.monotonic() - started
    assert not caller.is_alive(), f"run_overlapped did not return within {timeout} s (hang)"
    return outcome["raised"], elapsed


def stage_threads_alive(before: set[threading.Thread]) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread not in before and thread.is_alive()]


def counting_source(limit: int | None, counter: dict, fail_at: int | None = None, error: BaseException | None = None,
                    delay: float = 0.0):
    """Yield 0, 1, 2, ... (forever when ``limit`` is None), counting every item handed out."""
    for index in (itertools.count() if limit is None else range(limit)):
        if fail_at is not None and index == fail_at:
            raise error
        if delay:
            time.sleep(delay)
        counter["pulled"] = index + 1
        yield index


def test_results_arrive_in_order_and_complete():
    caller = {}
    results: list[int] = []

    def compute(item: int) -> int:
        caller.setdefault("threads", set()).add(threading.current_thread())
        time.sleep(0.001 * (item % 3))  # uneven compute times must not reorder anything
        return item * item

    def sink(result: int) -> None:
        time.sleep(0.001 * (result % 2))
        results.append(result)

    before = set(threading.enumerate())
    raised, _ = run_guarded(iter(range(200)), compute, sink)
    assert raised is None
    assert results == [item * item for item in range(200)]
    # compute runs in the calling thread (where ONNX Runtime / Ctrl-C live), one thread only.
    assert len(caller["threads"]) == 1
    assert not stage_threads_alive(before)


@pytest.mark.parametrize("source", [[], [7]], ids=["empty", "one-item"])
def test_short_sources(source):
    results = []
    raised, _ = run_guarded(iter(source), lambda item: item + 1, results.append)
    assert raised is None
    assert results == [item + 1 for item in source]


def test_source_exception_propagates_as_the_same_object():
    error = Boom("source broke")
    counter = {"pulled": 0}
    results = []
    before = set(threading.enumerate())
    raised, elapsed = run_guarded(counting_source(None, counter, fail_at=5, error=error), lambda x: x, results.append)
    assert raised is error
    assert elapsed < PROMPT_SECONDS
    # A failure anywhere abandons the run: queued items may be dropped, but what did
    # reach the sink came in order and nothing after the failure point was invented.
    assert results == list(range(len(results))) and len(results) <= 5
    assert not stage_threads_alive(before)


def test_compute_exception_propagates_and_stops_the_source():
    error = Boom("compute broke")
    counter = {"pulled": 0}
    results = []

    def compute(item: int) -> int:
        if item == 3:
            raise error
        return item

    before = set(threading.enumerate())
    raised, elapsed = run_guarded(counting_source(None, counter), compute, results.append)
    assert raised is error
    assert elapsed < PROMPT_SECONDS
    assert results == list(range(len(results))) and len(results) <= 3
    assert not stage_threads_alive(before)
    # The infinite source was abandoned: nothing pulls from it after the call returned.
    pulled = counter["pulled"]
    time.sleep(0.3)
    assert counter["pulled"] == pulled
    assert pulled <= 3 + 1 + QUEUE_DEPTH + 1  # the failed item, what was queued, and one in the reader's hand


def test_sink_exception_propagates_and_stops_the_other_stages():
    error = Boom("sink broke")
    counter = {"pulled": 0}
    computed = []

    def compute(item: int) -> int:
        computed.append(item)
        return item

    def sink(result: int) -> None:
        if result == 4:
            raise error

    before = set(threading.enumerate())
    raised, elapsed = run_guarded(counting_source(None, counter), compute, sink)
    assert raised is error
    assert elapsed < PROMPT_SECONDS
    assert not stage_threads_alive(before)
    pulled, computed_count = counter["pulled"], len(computed)
    time.sleep(0.3)
    assert (counter["pulled"], len(computed)) == (pulled, computed_count)


def test_first_error_wins_when_a_later_stage_also_fails():
    first = Boom("compute broke first")

    def compute(item: int) -> int:
        raise first

    def sink(result: int) -> None:  # never reached
        raise AssertionError("sink called after compute failed")

    raised, _ = run_guarded(iter(range(10)), compute, sink)
    assert raised is first


def test_a_slow_sink_call_is_waited_for_but_nothing_more_is_sunk():
    """The sink is stuck for 1 s on its first item (an encoder that stalls); compute fails
    meanwhile. run_overlapped waits for that one sink call to return (it cannot interrupt
    it), then comes back with compute's error without sinking the queued results."""
    error = Boom("compute broke while the sink was stuck")
    sink_calls = []

    def compute(item: int) -> int:
        if item == 2:
            time.sleep(0.05)
            raise error
        return item

    def sink(result: int) -> None:
        sink_calls.append(result)
        time.sleep(1.0)

    raised, elapsed = run_guarded(iter(range(100)), compute, sink)
    assert raised is error
    assert elapsed < 1.0 + PROMPT_SECONDS
    assert sink_calls == [0]


def test_memory_is_bounded_by_the_queues():
    """A lazy, endless source feeding a slow sink never runs more than a fixed number of
    items ahead of it.

    Items the source has yielded but whose sink call has not started can only be:
      1 in the reader thread's hand (blocked in to_compute.put),
      QUEUE_DEPTH waiting in to_compute,
      1 in the calling thread (being computed, or its result blocked in to_sink.put),
      QUEUE_DEPTH waiting in to_sink.
    So the lead is at most 2 * QUEUE_DEPTH + 2 (6 with QUEUE_DEPTH = 2), whatever the
    source's length; with a slow sink the pipeline fills up and reaches that bound.
    """
    bound = 2 * QUEUE_DEPTH + 2
    state = {"pulled": 0, "sunk": 0, "max_lead": 0}
    lock = threading.Lock()
    enough = Boom("enough")

    def note_lead() -> None:
        with lock:
            state["max_lead"] = max(state["max_lead"], state["pulled"] - state["sunk"])

    def endless():
        for index in itertools.count():
            with lock:
                state["pulled"] += 1
            note_lead()
            yield index

    def sink(result: int) -> None:
        with lock:
            state["sunk"] += 1
        note_lead()
        time.sleep(0.01)  # the slow stage: the others run ahead until the queues are full
        note_lead()
        if state["sunk"] == 40:
            raise enough

    raised, _ = run_guarded(endless(), lambda item: item, sink)
    assert raised is enough
    assert state["max_lead"] <= bound, f"source ran {state['max_lead']} items ahead of the sink"
    # The stages really overlap: the reader and compute filled the queues ahead of the sink.
    assert state["max_lead"] > QUEUE_DEPTH


def test_keyboard_interrupt_in_compute_propagates_and_stops_the_reader():
    """Ctrl-C lands in the calling thread, which is the one running compute. Run in the
    main thread (where the signal would arrive), with faulthandler as the hang guard."""
    counter = {"pulled": 0}
    sunk = []

    def compute(item: int) -> int:
        if item == 5:
            raise KeyboardInterrupt
        return item

    before = set(threading.enumerate())
    faulthandler.dump_traceback_later(GUARD_SECONDS, exit=True)
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_overlapped(counting_source(None, counter), compute, sunk.append)
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert time.monotonic() - started < PROMPT_SECONDS
    assert sunk == list(range(len(sunk))) and len(sunk) <= 5
    assert not stage_threads_alive(before), "a stage thread outlived the interrupted run"
    pulled = counter["pulled"]
    time.sleep(0.3)
    assert counter["pulled"] == pulled, "the source was still being consumed after Ctrl-C"


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread() or os.name != "posix",
                    reason="needs POSIX signals delivered to the main thread")
def test_real_sigint_while_waiting_for_a_slow_source():
    """A real SIGINT arriving while the calling thread waits for input (a slow decoder)."""
    counter = {"pulled": 0}
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is not mapped to KeyboardInterrupt in this process")

    def slow_source():
        for index in itertools.count():
            time.sleep(0.05 if index < 3 else 0.5)
            counter["pulled"] = index + 1
            yield index

    sunk = []
    timer = threading.Timer(0.4, os.kill, (os.getpid(), signal.SIGINT))
    before = set(threading.enumerate()) | {timer}
    faulthandler.dump_traceback_later(GUARD_SECONDS, exit=True)
    started = time.monotonic()
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            run_overlapped(slow_source(), lambda item: item, sunk.append)
    finally:
        timer.cancel()
        faulthandler.cancel_dump_traceback_later()
    # The reader may be inside one 0.5 s next() when the signal lands; the join waits for it.
    assert time.monotonic() - started < 0.4 + 0.5 + PROMPT_SECONDS
    assert sunk == list(range(len(sunk)))
    timer.join()
    assert not stage_threads_alive(before)
    pulled = counter["pulled"]
    time.sleep(0.7)
    assert counter["pulled"] == pulled


def test_stage_error_in_caller_thread_is_not_swallowed_by_a_sink_error_race():
    """compute and sink fail at about the same time: exactly one of the two errors comes
    back, never nothing and never a hang."""
    compute_error, sink_error = Boom("compute"), Boom("sink")

    def compute(item: int) -> int:
        if item == 1:
            raise compute_error
        return item

    def sink(result: int) -> None:
        raise sink_error

    for _ in range(20):
        raised, _ = run_guarded(iter(range(10)), compute, sink)
        assert raised is compute_error or raised is sink_error


def test_interrupt_while_waiting_for_the_writer_stops_it_first():
    """Ctrl-C during the final join must not return while the writer still runs:
    the GPU path frees the buffers the writer reads as soon as this call returns."""
    written: list[int] = []

    def slow_sink(item: int) -> None:
        time.sleep(0.4)
        written.append(item)

    previous = signal.signal(signal.SIGALRM, lambda *args: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        # Three items: compute is done by ~0.4 s, the writer until ~1.2 s; the alarm at
        # 0.7 s lands while the main thread joins the writer.
        signal.setitimer(signal.ITIMER_REAL, 0.7)
        with pytest.raises(KeyboardInterrupt):
            run_overlapped(iter(range(3)), lambda item: item, slow_sink)
        count_at_return = len(written)
        time.sleep(1.0)
        assert len(written) == count_at_return  # the writer had stopped before the call returned
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
