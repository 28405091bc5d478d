"""Ctrl-C and SIGTERM held over short stretches that must not be cut in two: the renames
that put a set of outputs in place, the removal of temporaries, and the loading of native
libraries. A KeyboardInterrupt raised inside an extension module's initialisation is
seen to abort the interpreter now and then (onnx's, about 1 in 300 here), or to come out
as the library's own error (OpenVINO: ImportError); held, it takes effect right after.
"""
from __future__ import annotations

import contextlib
import importlib
import signal
import sys
import threading
from types import ModuleType
from typing import Any, Callable, Iterator

# The signals a run turns into KeyboardInterrupt (SIGTERM: see cli.Terminated).
HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class HeldSignals:
    """A signal of HELD_SIGNALS arriving between ``hold`` and ``release`` takes effect at
    ``release``, through the handler it had before. Python runs signal handlers in the
    main thread only: elsewhere there is nothing to hold.

    Handlers of signals already waiting run inside ``signal.signal`` or right after it,
    so a swap can raise: ``release`` puts every handler back all the same, after a
    ``hold`` cut short too.
    """

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}
        self._caught: list[int] = []

    def _record(self, signum: int, frame: object) -> None:
        self._caught.append(signum)

    def hold(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in HELD_SIGNALS:
            previous = signal.getsignal(signum)
            if previous is None:  # set outside Python, so it cannot be put back
                continue
            self._previous[signum] = previous  # before the swap: a handler may raise right after it
            signal.signal(signum, self._record)

    def release(self) -> None:
        arrived: BaseException | None = None  # raised by a handler already put back
        for signum, handler in self._previous.items():
            while True:
                try:
                    signal.signal(signum, handler)
                    break
                except BaseException as error:
                    arrived = arrived or error
        self._previous.clear()
        caught, self._caught = self._caught, []
        if arrived is not None:
            raise arrived
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)  # its own handler now: KeyboardInterrupt, Terminated, or the default


@contextlib.contextmanager
def held_signals() -> Iterator[None]:
    held = HeldSignals()
    try:
        held.hold()
        yield
    finally:
        held.release()


def uninterrupted(work: Callable[[], None]) -> None:
    """Run ``work`` (which must be safe to run twice: a cleanup) with signals held, and
    again when a Ctrl-C landed before the hold took; the Ctrl-C is raised once it is done."""
    interrupt: KeyboardInterrupt | None = None
    while True:
        try:
            with held_signals():
                work()
            break
        except KeyboardInterrupt as caught:
            interrupt = interrupt or caught
    if interrupt is not None:
        raise interrupt


def import_held(name: str) -> ModuleType:
    """``importlib.import_module(name)``, its first loading in this process held."""
    with contextlib.nullcontext() if name in sys.modules else held_signals():
        return importlib.import_module(name)
