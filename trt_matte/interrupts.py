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
from typing import Iterator

# The signals a run turns into KeyboardInterrupt (SIGTERM: see cli.Terminated).
HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class HeldSignals:
    """A signal of HELD_SIGNALS arriving between ``hold`` and ``release`` takes effect at
    ``release``, through the handler it had before. Python runs signal handlers in the
    main thread only: elsewhere there is nothing to hold."""

    def __init__(self) -> None:
        self._previous: dict[int, object] = {}
        self._caught: list[int] = []

    def hold(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in HELD_SIGNALS:
            if signal.getsignal(signum) is not None:  # None: set outside Python, so it cannot be put back
                self._previous[signum] = signal.signal(signum, lambda number, frame: self._caught.append(number))

    def release(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        caught, self._caught = self._caught, []
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)  # its own handler now: KeyboardInterrupt, Terminated, or the default


@contextlib.contextmanager
def held_signals() -> Iterator[None]:
    held = HeldSignals()
    held.hold()
    try:
        yield
    finally:
        held.release()


def import_held(name: str) -> ModuleType:
    """``importlib.import_module(name)``, its first loading in this process held."""
    with contextlib.nullcontext() if name in sys.modules else held_signals():
        return importlib.import_module(name)
