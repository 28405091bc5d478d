"""Outputs that appear complete or not at all: a temporary name beside the target,
renamed on success, removed (with any folders made for it) on failure or Ctrl-C."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import pytest

from conftest import ctrl_c_after_rename
from trt_matte import files
from trt_matte.errors import INTERRUPTED_LINE, KEPT_LINE, MatteError
from trt_matte.files import (atomic_folder, atomic_output, atomic_write_bytes, file_digest, interrupted_line,
                             outputs_together, scratch_path)


def test_atomic_output_appears_only_on_success(tmp_path):
    target = tmp_path / "out.mp4"
    with atomic_output(target) as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith(".") and temporary.suffix == ".mp4"
        temporary.write_bytes(b"done")
        assert not target.exists()
    assert target.read_bytes() == b"done"
    assert os.listdir(tmp_path) == ["out.mp4"]


@pytest.mark.parametrize("interruption", [RuntimeError("failed"), KeyboardInterrupt()])
def test_a_failure_leaves_nothing_not_even_the_folders_it_made(tmp_path, interruption):
    target = tmp_path / "new" / "deeper" / "out.mp4"
    with pytest.raises(type(interruption)):
        with atomic_output(target) as temporary:
            temporary.write_bytes(b"half")
            raise interruption
    assert os.listdir(tmp_path) == []


def test_a_previous_output_survives_a_failed_run(tmp_path):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as temporary:
            temporary.write_bytes(b"half")
            raise RuntimeError
    assert target.read_bytes() == b"previous" and os.listdir(tmp_path) == ["out.mp4"]


def test_atomic_folder_replaces_a_previous_folder_only_when_complete(tmp_path):
    target = tmp_path / "frames"
    target.mkdir()
    (target / "old.png").write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as temporary:
            (temporary / "new.png").write_bytes(b"new")
            raise RuntimeError
    assert os.listdir(target) == ["old.png"]
    with atomic_folder(target) as temporary:
        (temporary / "new.png").write_bytes(b"new")
    assert os.listdir(target) == ["new.png"] and os.listdir(tmp_path) == ["frames"]


def test_an_unwritable_place_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("a regular file")
    with pytest.raises(MatteError, match="cannot write .*file/out.mp4: .*file is not a directory"):
        with atomic_output(tmp_path / "file" / "out.mp4"):
            pass


def test_scratch_path_is_removed_in_every_case(tmp_path):
    with pytest.raises(RuntimeError):
        with scratch_path(tmp_path / "out.mp4", ".mkv") as scratch:
            assert scratch.suffix == ".mkv"
            scratch.write_bytes(b"intermediate")
            raise RuntimeError
    assert os.listdir(tmp_path) == []


def test_file_digest_follows_the_content(tmp_path):
    path = tmp_path / "model.onnx"
    atomic_write_bytes(path, b"first")
    first = file_digest(path)
    assert first == "a7937b64b8caa58f03721bb6bacf5c78cb235febe0e70b1b84cd99541461a08e"  # sha256("first")
    time.sleep(0.01)
    atomic_write_bytes(path, b"second")
    assert file_digest(path) != first


def test_stale_temporaries_of_this_host_are_removed_and_no_others(tmp_path):
    import subprocess
    import sys
    from trt_matte.files import _boot, _host, _temporary_name, remove_stale_temporaries

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = _temporary_name(tmp_path / "live.mp4", "partial")  # this very process: running
    other_boot = "f" * 8 if _boot() != "f" * 8 else "e" * 8
    names = {
        "dead": f".clip.trtm-{_host()}-{_boot()}-{dead.pid}-0123abcd.partial.mp4",
        "dead-folder": f".clip.trtm-{_host()}-{_boot()}-{dead.pid}-4567abcd.partial.png",
        "rebooted": f".clip.trtm-{_host()}-{other_boot}-{os.getpid()}-89abcdef.scratch.mkv",
        "other-boot-busy": f".take.trtm-{_host()}-{other_boot}-{os.getpid()}-89abcdef.partial.mov",
        "other-host": f".clip.trtm-{_host()}x-{_boot()}-{dead.pid}-0123abcd.partial.mp4",
        "running": mine.name,
        "user-file": ".clip.mp4",
    }
    for key, name in names.items():
        if key == "dead-folder":
            (tmp_path / name).mkdir()
            (tmp_path / name / "000001.png").write_bytes(b"png")
        else:
            (tmp_path / name).write_bytes(b"half")
    # Another boot's (or namespace's) file goes only once untouched for an hour: a cloned
    # machine with this host name may still be writing a recent one.
    old = time.time() - 2 * 3600
    os.utime(tmp_path / names["rebooted"], (old, old))
    notes: list[str] = []
    assert remove_stale_temporaries([tmp_path, tmp_path], notes.append) == 3
    assert sorted(os.listdir(tmp_path)) == sorted(names[key] for key in ("other-host", "running", "user-file",
                                                                        "other-boot-busy"))
    assert notes == ["removed 3 temporary files left by an interrupted run"]
    assert remove_stale_temporaries([tmp_path], notes.append) == 0 and len(notes) == 1


def test_a_set_aside_previous_output_is_put_back_not_deleted(tmp_path):
    """Killed between setting the old output aside and putting the new one in place: the
    old one is the user's only copy, and goes back to its name."""
    import subprocess
    import sys
    from trt_matte.files import _boot, _host, remove_stale_temporaries

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    aside = tmp_path / f".clip.trtm-{_host()}-{_boot()}-{dead.pid}-0123abcd.previous.png"
    aside.mkdir()
    (aside / "000001.png").write_bytes(b"frame")
    assert remove_stale_temporaries([tmp_path], lambda note: None) == 0
    assert os.listdir(tmp_path) == ["clip.png"] and os.listdir(tmp_path / "clip.png") == ["000001.png"]


def _two_outputs(stack: contextlib.ExitStack, folder) -> None:
    stack.enter_context(atomic_output(folder / "clip.matte.mp4", deliverable=True)).write_bytes(b"video")
    (stack.enter_context(atomic_folder(folder / "clip.png", deliverable=True)) / "000001.png").write_bytes(b"frame")


def test_a_ctrl_c_between_renames_waits_until_every_output_of_the_set_is_in_place(tmp_path, monkeypatch,
                                                                                 ctrl_c_raises):
    renamed = ctrl_c_after_rename(monkeypatch, after=1)
    with pytest.raises(KeyboardInterrupt):
        with outputs_together() as stack:
            _two_outputs(stack, tmp_path)
    assert renamed == ["clip.png", "clip.matte.mp4"]
    assert sorted(os.listdir(tmp_path)) == ["clip.matte.mp4", "clip.png"]
    assert (tmp_path / "clip.matte.mp4").read_bytes() == b"video"
    assert os.listdir(tmp_path / "clip.png") == ["000001.png"]


def test_without_holding_the_set_a_ctrl_c_between_renames_leaves_half_of_it(tmp_path, monkeypatch, ctrl_c_raises):
    """What ``outputs_together`` prevents: the same set in a plain ExitStack."""
    ctrl_c_after_rename(monkeypatch, after=1)
    with pytest.raises(KeyboardInterrupt):
        with contextlib.ExitStack() as stack:
            _two_outputs(stack, tmp_path)
    assert os.listdir(tmp_path) == ["clip.png"]


def test_a_second_ctrl_c_during_the_cleanup_does_not_cut_it_short(tmp_path, monkeypatch, ctrl_c_raises):
    real_rmtree = files.shutil.rmtree

    def rmtree_then_ctrl_c(path, ignore_errors=False):
        real_rmtree(path, ignore_errors=ignore_errors)
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(files.shutil, "rmtree", rmtree_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        with outputs_together() as stack:
            _two_outputs(stack, tmp_path / "new")
            raise RuntimeError("the encoder failed")
    assert os.listdir(tmp_path) == []


def test_signals_are_held_only_where_python_runs_their_handlers(tmp_path):
    outcome = []

    def publish_in_a_thread():
        with outputs_together() as stack:
            _two_outputs(stack, tmp_path)
        outcome.append(signal.getsignal(signal.SIGINT))

    before = signal.getsignal(signal.SIGINT)
    worker = threading.Thread(target=publish_in_a_thread)
    worker.start()
    worker.join(timeout=30)
    assert outcome == [before] and sorted(os.listdir(tmp_path)) == ["clip.matte.mp4", "clip.png"]


def test_the_interrupted_line_says_whether_finished_outputs_were_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_published", threading.Event())
    assert interrupted_line() == INTERRUPTED_LINE
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(tmp_path / "never.mp4"):
            raise KeyboardInterrupt
    assert interrupted_line() == INTERRUPTED_LINE
    atomic_write_bytes(tmp_path / "graph.onnx", b"a cache file is no output of the user's")
    assert interrupted_line() == INTERRUPTED_LINE
    with atomic_output(tmp_path / "done.png", deliverable=True) as temporary:
        temporary.write_bytes(b"mask")
    assert interrupted_line() == KEPT_LINE
