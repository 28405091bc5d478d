"""Ctrl-C and SIGTERM held over stretches that must not be cut: they take effect right
after, through the handler they had, and nothing is held outside the main thread."""
from __future__ import annotations

import os
import signal
import sys
import threading
import types

import pytest

from trt_matte import interrupts
from trt_matte.interrupts import held_signals, import_held, uninterrupted


class Terminated(KeyboardInterrupt):
    """As cli.Terminated: SIGTERM handled like Ctrl-C."""


def _terminate(signum, frame):
    raise Terminated


@pytest.fixture
def handlers(ctrl_c_raises):
    previous = signal.signal(signal.SIGTERM, _terminate)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("signum, raised", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)])
def test_a_signal_inside_takes_effect_after_the_block_through_its_own_handler(handlers, signum, raised):
    finished = []
    with pytest.raises(raised):
        with held_signals():
            signal.raise_signal(signum)
            finished.append("the rest of the block ran")
    assert finished == ["the rest of the block ran"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is _terminate


def test_a_block_without_a_signal_leaves_the_handlers_as_they_were(handlers):
    with held_signals():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is _terminate


def test_an_ignored_signal_stays_ignored(handlers):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the fixture puts the default back
    with held_signals():
        signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_a_ctrl_c_while_a_module_loads_takes_effect_once_it_is_loaded(handlers, tmp_path, monkeypatch):
    (tmp_path / "slow_native_module.py").write_text(
        "import signal\nsignal.raise_signal(signal.SIGINT)\nLOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "slow_native_module", raising=False)
    with pytest.raises(KeyboardInterrupt):
        import_held("slow_native_module")
    assert sys.modules["slow_native_module"].LOADED
    assert import_held("slow_native_module") is sys.modules["slow_native_module"]


def test_a_module_marked_absent_is_still_an_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ImportError):
        import_held("tensorrt")


def test_nothing_is_held_outside_the_main_thread(handlers):
    seen = []

    def in_a_thread():
        with held_signals():
            seen.append(signal.getsignal(signal.SIGINT))

    worker = threading.Thread(target=in_a_thread)
    worker.start()
    worker.join(timeout=30)
    assert seen == [signal.default_int_handler]


def _signal_once_after_swap(monkeypatch, swapped: int, holding: bool, send: int) -> None:
    """The signal module as interrupts uses it, with signal ``send`` arriving once, right
    after ``swapped``'s handler became the holding one (``holding``) or its own again."""
    sent = []
    own = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: _terminate}

    def swap(signum, handler):
        previous = signal.signal(signum, handler)
        if signum == swapped and (handler is not own[signum]) == holding and not sent:
            sent.append(send)
            os.kill(os.getpid(), send)
        return previous

    fake = types.SimpleNamespace(**{name: getattr(signal, name) for name in dir(signal) if not name.startswith("_")})
    fake.signal = swap
    monkeypatch.setattr(interrupts, "signal", fake)


def _handlers_are_back() -> bool:
    return signal.getsignal(signal.SIGINT) is signal.default_int_handler and signal.getsignal(
        signal.SIGTERM) is _terminate


@pytest.mark.parametrize("holding, send, raised", [
    (True, signal.SIGTERM, Terminated),  # between the two swaps that hold
    (False, signal.SIGINT, KeyboardInterrupt),  # between the two that put the handlers back
], ids=["while-holding", "while-releasing"])
def test_a_signal_while_the_handlers_are_swapped_leaves_every_handler_its_own(handlers, monkeypatch, holding, send,
                                                                              raised):
    _signal_once_after_swap(monkeypatch, signal.SIGINT, holding, send)
    with pytest.raises(raised):
        with held_signals():
            pass
    monkeypatch.undo()
    assert _handlers_are_back()


def test_a_cleanup_a_ctrl_c_cut_short_before_the_hold_runs_again_to_its_end(handlers, monkeypatch):
    _signal_once_after_swap(monkeypatch, signal.SIGINT, True, signal.SIGTERM)  # before the hold is whole
    removed = []
    with pytest.raises(Terminated):
        uninterrupted(lambda: removed.append("temporary removed"))
    monkeypatch.undo()
    assert removed == ["temporary removed"] and _handlers_are_back()
