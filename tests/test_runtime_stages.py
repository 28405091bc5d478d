"""run_overlapped(source, compute, sink, stop=..., release=...): order, completeness,
failure in any stage, bounded lead of the source over the sink, Ctrl-C, stalls, and
the teardown contract: ``stop`` only on failure and before the threads are joined,
``release`` exactly once and only after every stage thread has ended.

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

from trt_matte.errors import MatteError
from trt_matte.runtime import stages
from trt_matte.runtime.stages import QUEUE_DEPTH, StagesStuck, run_overlapped

# Generous: a healthy call returns within a few queue polls (0.1 s each).
GUARD_SECONDS = 10.0
# How long a stage failure may take to stop the others and surface in the caller:
# each blocked stage notices within one POLL_SECONDS (0.1 s) of its queue wait.
PROMPT_SECONDS = 2.0


class Boom(Exception):
    pass


class Teardown:
    """Records the calls run_overlapped makes to ``stop`` and ``release``, and which stage
    threads were alive at each."""

    def __init__(self, on_stop=lambda: None):
        self.stops: list[int] = []
        self.releases: list[int] = []
        self._on_stop = on_stop

    def stop(self) -> None:
        self.stops.append(len(stage_threads_alive()))
        self._on_stop()

    def release(self) -> None:
        self.releases.append(len(stage_threads_alive()))


def stage_threads_alive() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("trt-matte-") and thread.is_alive()]


def run_guarded(source, compute, sink, teardown: Teardown | None = None,
                timeout: float = GUARD_SECONDS) -> tuple[BaseException | None, float]:
    """Run run_overlapped in a helper thread; return (what it raised, seconds taken).

    Fails the test (instead of hanging it) when the call does not return in ``timeout``.
    """
    teardown = teardown or Teardown()
    outcome: dict[str, BaseException | None] = {"raised": None}

    def target() -> None:
        try:
            run_overlapped(source, compute, sink, stop=teardown.stop, release=teardown.release)
        except BaseException as exc:  # noqa: BLE001 - the test inspects whatever came out
            outcome["raised"] = exc

    started = time.monotonic()
    caller = threading.Thread(target=target, daemon=True)
    caller.start()
    caller.join(timeout)
    elapsed = time.monotonic() - started
    assert not caller.is_alive(), f"run_overlapped did not return within {timeout} s (hang)"
    return outcome["raised"], elapsed


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
    threads_used = set()
    results: list[int] = []

    def compute(item: int) -> int:
        threads_used.add(threading.current_thread())
        time.sleep(0.001 * (item % 3))  # uneven compute times must not reorder anything
        return item * item

    def sink(result: int) -> None:
        time.sleep(0.001 * (result % 2))
        results.append(result)

    teardown = Teardown()
    raised, _ = run_guarded(iter(range(200)), compute, sink, teardown)
    assert raised is None
    assert results == [item * item for item in range(200)]
    # compute runs in one thread of its own, never the caller's.
    assert len(threads_used) == 1 and threading.main_thread() not in threads_used
    assert not stage_threads_alive()
    # A clean run stops nothing (the caller still finishes the encoder) and releases once, after the threads.
    assert teardown.stops == [] and teardown.releases == [0]


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
    teardown = Teardown()
    raised, elapsed = run_guarded(counting_source(None, counter, fail_at=5, error=error), lambda x: x, results.append,
                                  teardown)
    assert raised is error
    assert elapsed < PROMPT_SECONDS
    # A failure anywhere abandons the run: queued items may be dropped, but what did
    # reach the sink came in order and nothing after the failure point was invented.
    assert results == list(range(len(results))) and len(results) <= 5
    assert not stage_threads_alive()
    assert len(teardown.stops) == 1 and teardown.releases == [0]


def test_compute_exception_propagates_and_stops_the_source():
    error = Boom("compute broke")
    counter = {"pulled": 0}
    results = []

    def compute(item: int) -> int:
        if item == 3:
            raise error
        return item

    raised, elapsed = run_guarded(counting_source(None, counter), compute, results.append)
    assert raised is error
    assert elapsed < PROMPT_SECONDS
    assert results == list(range(len(results))) and len(results) <= 3
    assert not stage_threads_alive()
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

    raised, elapsed = run_guarded(counting_source(None, counter), compute, sink)
    assert raised is error
    assert elapsed < PROMPT_SECONDS
    assert not stage_threads_alive()
    pulled, computed_count = counter["pulled"], len(computed)
    time.sleep(0.3)
    assert (counter["pulled"], len(computed)) == (pulled, computed_count)


def test_first_error_wins_when_a_later_stage_also_fails():
    """compute fails first; the sink then fails too, on the item computed before it."""
    first, later = Boom("compute broke first"), Boom("sink broke later")
    sink_started = threading.Event()

    def compute(item: int) -> int:
        if item == 1:
            sink_started.wait(GUARD_SECONDS)
            raise first
        return item

    def sink(result: int) -> None:
        sink_started.set()
        time.sleep(0.3)  # still sinking item 0 when compute fails on item 1
        raise later

    raised, _ = run_guarded(iter(range(10)), compute, sink)
    assert sink_started.is_set(), "the scenario needs the sink to be running when compute fails"
    assert raised is first


def test_stop_unblocks_a_sink_stuck_in_io_before_the_threads_are_joined():
    """The sink blocks (an encoder that stopped reading its pipe) until ``stop`` runs, as
    killing the process turns a blocked pipe write into an error; compute fails meanwhile."""
    error = Boom("compute broke while the sink was stuck")
    unblocked = threading.Event()
    sink_calls = []

    def compute(item: int) -> int:
        if item == 2:
            time.sleep(0.05)
            raise error
        return item

    def sink(result: int) -> None:
        sink_calls.append(result)
        if not unblocked.wait(GUARD_SECONDS):
            raise AssertionError("stop() was never called")
        raise BrokenPipeError

    teardown = Teardown(on_stop=unblocked.set)
    raised, elapsed = run_guarded(iter(range(100)), compute, sink, teardown)
    assert raised is error
    assert elapsed < PROMPT_SECONDS
    assert sink_calls == [0]
    # stop ran while the writer was still alive (it is what freed it); release after all ended.
    assert teardown.stops[0] >= 1 and teardown.releases == [0]


def test_a_stalled_sink_ends_the_run_with_a_one_line_error(monkeypatch):
    monkeypatch.setattr(stages, "STALL_SECONDS", 0.5)
    unblocked = threading.Event()

    def sink(result: int) -> None:
        unblocked.wait(GUARD_SECONDS)
        raise BrokenPipeError

    teardown = Teardown(on_stop=unblocked.set)
    raised, elapsed = run_guarded(iter(range(100)), lambda item: item, sink, teardown)
    assert isinstance(raised, MatteError)
    assert str(raised).startswith("no progress for 0.5 s while writing the outputs")
    assert "\n" not in str(raised)
    assert 0.5 <= elapsed < 0.5 + PROMPT_SECONDS
    assert teardown.releases == [0]


def test_a_stalled_source_ends_the_run_with_a_one_line_error(monkeypatch):
    monkeypatch.setattr(stages, "STALL_SECONDS", 0.5)
    unblocked = threading.Event()

    def stalling_source():
        yield 0
        unblocked.wait(GUARD_SECONDS)  # a decoder that stopped writing its pipe
        raise OSError("pipe closed")

    raised, elapsed = run_guarded(stalling_source(), lambda item: item, lambda result: None,
                                  Teardown(on_stop=unblocked.set))
    assert isinstance(raised, MatteError)
    assert str(raised).startswith("no progress for 0.5 s while reading frames")
    assert elapsed < 0.5 + PROMPT_SECONDS


def test_a_stage_that_ignores_stop_keeps_its_memory(monkeypatch):
    """A thread still alive after the join bound may still use what ``release`` would free:
    release is skipped and the run fails with StagesStuck, naming the stage."""
    monkeypatch.setattr(stages, "JOIN_SECONDS", 0.5)
    error = Boom("compute broke")
    never, sinking = threading.Event(), threading.Event()

    def compute(item: int) -> int:
        if item == 1:
            sinking.wait(GUARD_SECONDS)
            raise error
        return item

    def sink(result: int) -> None:
        sinking.set()
        never.wait(3.0)  # deaf to stop(): a DALI or driver call that does not return

    teardown = Teardown()
    raised, elapsed = run_guarded(iter(range(10)), compute, sink, teardown)
    never.set()
    assert isinstance(raised, StagesStuck)
    assert "writer" in str(raised) and "compute broke" in str(raised)
    assert teardown.releases == []
    assert elapsed < 0.5 + PROMPT_SECONDS


def test_memory_is_bounded_by_the_queues():
    """A lazy, endless source feeding a slow sink never runs more than a fixed number of
    items ahead of it.

    Items the source has yielded but whose sink call has not started can only be:
      1 in the reader thread's hand (blocked in to_compute.put),
      QUEUE_DEPTH waiting in to_compute,
      1 in the inference thread (being computed, or its result blocked in to_sink.put),
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
    counter = {"pulled": 0}
    sunk = []

    def compute(item: int) -> int:
        if item == 5:
            raise KeyboardInterrupt
        return item

    raised, elapsed = run_guarded(counting_source(None, counter), compute, sunk.append)
    assert isinstance(raised, KeyboardInterrupt)
    assert elapsed < PROMPT_SECONDS
    assert sunk == list(range(len(sunk))) and len(sunk) <= 5
    assert not stage_threads_alive(), "a stage thread outlived the interrupted run"
    pulled = counter["pulled"]
    time.sleep(0.3)
    assert counter["pulled"] == pulled, "the source was still being consumed after Ctrl-C"


needs_main_thread_signals = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread() or os.name != "posix",
    reason="needs POSIX signals delivered to the main thread")


@needs_main_thread_signals
def test_real_sigint_while_waiting_for_a_slow_source():
    """A real SIGINT arriving while the calling thread supervises a slow decoder."""
    counter = {"pulled": 0}
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is not mapped to KeyboardInterrupt in this process")

    def slow_source():
        for index in itertools.count():
            time.sleep(0.05 if index < 3 else 0.5)
            counter["pulled"] = index + 1
            yield index

    sunk = []
    teardown = Teardown()
    timer = threading.Timer(0.4, os.kill, (os.getpid(), signal.SIGINT))
    faulthandler.dump_traceback_later(GUARD_SECONDS, exit=True)
    started = time.monotonic()
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            run_overlapped(slow_source(), lambda item: item, sunk.append, stop=teardown.stop,
                           release=teardown.release)
    finally:
        timer.cancel()
        faulthandler.cancel_dump_traceback_later()
    # The reader may be inside one 0.5 s next() when the signal lands; the join waits for it.
    assert time.monotonic() - started < 0.4 + 0.5 + PROMPT_SECONDS
    assert sunk == list(range(len(sunk)))
    timer.join()
    assert not stage_threads_alive()
    assert len(teardown.stops) == 1 and teardown.releases == [0]
    pulled = counter["pulled"]
    time.sleep(0.7)
    assert counter["pulled"] == pulled


@needs_main_thread_signals
def test_a_second_ctrl_c_while_joining_does_not_free_memory_under_the_writer():
    """Ctrl-C, then Ctrl-C again while the writer finishes its current item: the call
    still waits for the writer, releases only after it, and raises KeyboardInterrupt."""
    written: list[float] = []
    teardown = Teardown()

    def slow_sink(item: int) -> None:
        time.sleep(0.6)  # deaf to stop(), but short
        written.append(time.monotonic())

    release_times: list[float] = []
    previous = signal.signal(signal.SIGALRM, lambda *args: (_ for _ in ()).throw(KeyboardInterrupt()))
    faulthandler.dump_traceback_later(GUARD_SECONDS, exit=True)
    try:
        # The first alarm at 0.2 s lands while the main thread supervises; the second, at
        # 0.5 s, while it joins the writer, which finishes its first item at ~0.6 s.
        signal.setitimer(signal.ITIMER_REAL, 0.2, 0.3)
        with pytest.raises(KeyboardInterrupt):
            run_overlapped(iter(range(5)), lambda item: item, slow_sink, stop=teardown.stop,
                           release=lambda: (release_times.append(time.monotonic()), teardown.release()))
        signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()
    assert len(written) == 1
    assert teardown.releases == [0] and release_times[0] >= written[0]
