"""Output files that appear complete or not at all.

Every temporary name carries its owner: ``.<stem>.trtm-<host>-<boot>-<pid>-<random>.<tag><suffix>``
(host name; 8 hex digits of a hash of the kernel's boot id and the process-id namespace,
so a pid means one process; process id). A process killed outright (SIGKILL, the OOM
killer, a power cut) cannot remove its temporary files; ``remove_stale_temporaries``
lets a later run in the same folder remove those whose owner on this host is gone, and
never another host's (folders may be shared by a cluster). A file from another boot or
namespace under this host's name (a reboot; or a cloned machine, a container with the
same host name) is removed only once nobody has written it for STALE_AFTER_SECONDS.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import re
import secrets
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .errors import INTERRUPTED_LINE, KEPT_LINE, MatteError
from .interrupts import HeldSignals, held_signals, uninterrupted

TEMPORARY_TAGS = ("partial", "scratch", "previous")
# A temporary file from another boot or namespace is left alone until untouched this long.
STALE_AFTER_SECONDS = 3600
# How ffmpeg and the C library say ENOSPC.
NO_SPACE = os.strerror(errno.ENOSPC)
_OWNED = re.compile(r"^\.(?P<stem>.*)\.trtm-(?P<host>[A-Za-z0-9-]+)-(?P<boot>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{8}"
                    r"\.(?P<tag>" + "|".join(TEMPORARY_TAGS) + r")(?P<suffix>(?:\.[^.]*)?)$")


# Whether this process has put any of the user's outputs (masks, mattes, cutouts) in
# place, not cache files: what an interrupted run says it kept.
_published = threading.Event()


def interrupted_line() -> str:
    """The one line an interrupted run prints: outputs it finished stay, partial ones never do."""
    return KEPT_LINE if _published.is_set() else INTERRUPTED_LINE


def note_kept_output() -> None:
    """An output of this run was put in place by another process (a Ray worker)."""
    _published.set()


@contextlib.contextmanager
def outputs_together() -> Iterator[contextlib.ExitStack]:
    """An ExitStack for several ``atomic_output``/``atomic_folder`` entries that take
    their final names as one: a Ctrl-C while the first is renamed waits until the last
    is, so a run leaves all of them or none."""
    held = HeldSignals()
    try:
        with contextlib.ExitStack() as stack:
            try:
                yield stack
            finally:
                held.hold()  # before the stack unwinds into the renames (or the removals)
    finally:
        held.release()


@functools.cache
def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname()).strip("-")[:48] or "host"


@functools.cache
def _boot() -> str:
    """This boot and process-id namespace (Linux); elsewhere a constant, so only the
    process id tells owners apart."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return "0" * 8
    return hashlib.sha256(f"{boot} {namespace}".encode()).hexdigest()[:8]


def _temporary_name(final_path: Path, tag: str) -> Path:
    # Hidden, unique, in the destination folder (the final rename never crosses
    # devices) and ending in the real suffix (ffmpeg picks the muxer from it).
    owner = f"trtm-{_host()}-{_boot()}-{os.getpid()}-{secrets.token_hex(4)}"
    return final_path.with_name(f".{final_path.stem}.{owner}.{tag}{final_path.suffix}")


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def remove_stale_temporaries(folders: Iterable[Path], announce: Callable[[str], None]) -> int:
    """Remove the temporary files and folders in ``folders`` that runs on this host left
    when they were killed (the process is gone, or the machine rebooted since), say how
    many, and return that count. Other hosts' and running processes' are left alone."""
    removed = sum(_remove_stale_in(Path(folder)) for folder in set(folders))
    if removed:
        announce(f"removed {removed} temporary file{'s' if removed > 1 else ''} left by an interrupted run")
    return removed


def _remove_stale_in(folder: Path) -> int:
    removed = 0
    try:
        entries = list(folder.iterdir())
    except OSError:
        return 0
    for entry in entries:
        found = _OWNED.match(entry.name)
        if found is None or found["host"] != _host():
            continue
        if found["boot"] == _boot():
            if not _process_gone(int(found["pid"])):
                continue
        elif not _untouched_for(entry, STALE_AFTER_SECONDS):
            continue
        # Best effort: a leftover this user may not remove (a shared folder) stays.
        with contextlib.suppress(OSError):
            if found["tag"] == "previous" and _restore_previous(entry, found["stem"], found["suffix"]):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                _remove_file(entry)
        removed += not entry.exists()
    return removed


def _untouched_for(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.lstat().st_mtime > seconds
    except OSError:
        return False


def _restore_previous(entry: Path, stem: str, suffix: str) -> bool:
    """A previous output set aside by a run killed before it put the new one in place is
    the user's only copy: it goes back to its name (True) unless that name is taken."""
    final_path = entry.with_name(stem + suffix)
    if final_path.exists() or final_path.is_symlink():
        return False
    os.replace(entry, final_path)
    return True


def _missing_folders(folder: Path) -> list[Path]:
    """The folders mkdir(parents=True) would create for ``folder``, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _why_not_writable(final_path: Path, error: OSError) -> str:
    # mkdir says "File exists" when a folder on the way is a regular file: name that file.
    blocker = next((folder for folder in final_path.parents if folder.exists()), None)
    if blocker is not None and not blocker.is_dir():
        return f"{blocker} is not a directory"
    return error.strerror or str(error)


def _remove_if_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


@contextlib.contextmanager
def _atomic(final_path: Path, claim: Callable[[Path], None], publish: Callable[[Path, Path], None],
            discard: Callable[[Path], None], deliverable: bool) -> Iterator[Path]:
    final_path = Path(final_path)
    created_folders = _missing_folders(final_path.parent)
    temp_path = _temporary_name(final_path, "partial")
    try:
        try:
            final_path.parent.mkdir(parents=True, exist_ok=True)
            claim(temp_path)
        except OSError as exc:
            raise MatteError(f"cannot write {final_path}: {_why_not_writable(final_path, exc)}") from None
        yield temp_path
        with held_signals():
            publish(temp_path, final_path)
            if deliverable:
                _published.set()
    except BaseException:
        uninterrupted(lambda: (discard(temp_path), _remove_if_empty(created_folders)))  # a second Ctrl-C waits
        raise


def _claim_file(path: Path) -> None:
    with open(path, "xb"):  # creates it with the user's umask; fails if it exists
        pass


def atomic_output(final_path: Path, *, deliverable: bool = False) -> contextlib.AbstractContextManager[Path]:
    """Yield a temporary path beside ``final_path``; rename it into place on success.

    On any exception, Ctrl-C included, the temporary file and any folders made for
    it are removed, so a failed run leaves nothing behind. The name is chosen before
    anything is created, so an interrupt at any point is covered by the cleanup.
    A ``deliverable`` (one of the user's outputs, not a cache or scratch file) once in
    place makes ``interrupted_line`` say that finished outputs were kept.
    """
    return _atomic(final_path, _claim_file, os.replace, _remove_file, deliverable)


def _remove_file(path: Path) -> None:
    # Cleanup must not replace the error being handled: a path that cannot exist is no leftover.
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        path.unlink()


def atomic_folder(final_path: Path, *, deliverable: bool = False) -> contextlib.AbstractContextManager[Path]:
    """Like ``atomic_output``, for a folder of files: an empty temporary folder beside
    ``final_path`` is yielded, and on success it takes the final name; a folder (or
    file) already there is replaced only then. On any exception the temporary folder
    and its contents are removed."""
    return _atomic(final_path, Path.mkdir, _replace_with_folder,
                   lambda path: shutil.rmtree(path, ignore_errors=True), deliverable)


def _replace_with_folder(folder: Path, final_path: Path) -> None:
    # os.replace cannot put a folder over a non-empty one: the old one steps aside
    # under a hidden name first, and goes once the new one is in place.
    if not final_path.exists() and not final_path.is_symlink():
        os.replace(folder, final_path)
        return
    previous = _temporary_name(final_path, "previous")
    os.replace(final_path, previous)
    try:
        os.replace(folder, final_path)
    except BaseException:
        os.replace(previous, final_path)
        raise
    if previous.is_dir() and not previous.is_symlink():
        shutil.rmtree(previous, ignore_errors=True)
    else:
        previous.unlink(missing_ok=True)


@contextlib.contextmanager
def scratch_path(beside: Path, suffix: str) -> Iterator[Path]:
    """A hidden path beside ``beside`` for an intermediate file, removed in every case."""
    path = _temporary_name(Path(beside).with_suffix(suffix), "scratch")
    try:
        yield path
    finally:
        _remove_file(path)


def scratch_folder(beside: Path) -> Path:
    """A new hidden folder beside ``beside`` for intermediate files that outlive one
    function (a split video's segments); the caller removes it. Named as this process's,
    so ``remove_stale_temporaries`` removes it once the process is gone."""
    path = _temporary_name(Path(beside).with_suffix(""), "scratch")
    path.mkdir(parents=True)
    return path


def atomic_write_bytes(final_path: Path, data: bytes) -> None:
    with atomic_output(final_path) as temp_path:
        temp_path.write_bytes(data)


def file_digest(path: Path) -> str:
    """SHA-256 of a file, streamed so large models do not sit in memory twice.

    One run asks for the same model's digest several times (graph cache, INT8 folder,
    report): it is computed once per file version (path, size, modification time).
    """
    status = Path(path).stat()
    return _digest_of_version(str(Path(path).resolve()), status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest_of_version(path: str, size: int, modified_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bytes_under(path: Path) -> int:
    if path.is_dir():
        return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())
    return path.stat().st_size if path.exists() else 0


class DiskFull(MatteError):
    """The disk filled: every output after this one would fail the same way."""


def disk_full_error(written_paths: Iterable[Path], folder: Path | None = None) -> DiskFull:
    """A one-line DiskFull error for a full disk: the folder (default: the first path's), the
    space left there, and how many bytes the run had written to ``written_paths`` (files
    or folders) by then."""
    paths = [Path(path) for path in written_paths]
    written = _size(sum(_bytes_under(path) for path in paths))
    return DiskFull(f"{_full_disk(folder or paths[0].parent)}, after writing {written} of this run's output; "
                    "free some space and run it again")


def disk_full_line(filename: str | None) -> str:
    """What to say about a full disk known only from an OSError (which may name no file)."""
    if not filename:
        return "no space left on device; free some space and run it again"
    return f"{_full_disk(Path(filename).parent)}; free some space and run it again"


def _full_disk(folder: Path) -> str:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = 0
    return f"the disk holding {folder} is full: {_size(free)} free there"


def _size(count: int) -> str:
    if count < 1000:
        return f"{count} bytes"
    scaled = float(count)
    for unit in ("kB", "MB", "GB"):
        scaled /= 1000
        if scaled < 1000 or unit == "GB":
            break
    return f"{scaled:.1f} {unit}"


# Every process that reads or writes the cache holds this file's lock shared for as long
# as it does; ``trt-matte cache clean`` takes it exclusively, so it never removes a file a
# running process uses (POSIX flock; where there is none, as on Windows, nothing is locked).
CACHE_LOCK_NAME = ".in-use.lock"


class CacheInUse:
    """A shared hold on a cache folder (``release`` may be called more than once)."""

    def __init__(self, folder: Path):
        self._file = _locked(folder, exclusive=False)

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the lock
            self._file = None


@contextlib.contextmanager
def cache_for_cleaning(folder: Path) -> Iterator[None]:
    """The cache folder held exclusively; a one-line MatteError when a process uses it."""
    held = _locked(folder, exclusive=True)
    try:
        yield
    finally:
        if held is not None:
            held.close()


def _locked(folder: Path, exclusive: bool):
    try:
        import fcntl
    except ImportError:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    lock_file = open(folder / CACHE_LOCK_NAME, "a+b")
    try:
        if exclusive:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            fcntl.flock(lock_file, fcntl.LOCK_SH)
    except BlockingIOError:
        lock_file.close()
        raise MatteError(f"another trt-matte process is using {folder}; clean it when that one ends") from None
    return lock_file
