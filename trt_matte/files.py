"""Output files that appear complete or not at all."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import secrets
import shutil
from pathlib import Path
from typing import Callable, Iterator

from .errors import MatteError


def _temporary_name(final_path: Path, tag: str) -> Path:
    # Hidden, unique, in the destination folder (the final rename never crosses
    # devices) and ending in the real suffix (ffmpeg picks the muxer from it).
    return final_path.with_name(f".{final_path.stem}.{secrets.token_hex(4)}.{tag}{final_path.suffix}")


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
            discard: Callable[[Path], None]) -> Iterator[Path]:
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
        publish(temp_path, final_path)
    except BaseException:
        discard(temp_path)
        _remove_if_empty(created_folders)
        raise


def _claim_file(path: Path) -> None:
    with open(path, "xb"):  # creates it with the user's umask; fails if it exists
        pass


def atomic_output(final_path: Path) -> contextlib.AbstractContextManager[Path]:
    """Yield a temporary path beside ``final_path``; rename it into place on success.

    On any exception, Ctrl-C included, the temporary file and any folders made for
    it are removed, so a failed run leaves nothing behind. The name is chosen before
    anything is created, so an interrupt at any point is covered by the cleanup.
    """
    return _atomic(final_path, _claim_file, os.replace, _remove_file)


def _remove_file(path: Path) -> None:
    # Cleanup must not replace the error being handled: a path that cannot exist is no leftover.
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        path.unlink()


def atomic_folder(final_path: Path) -> contextlib.AbstractContextManager[Path]:
    """Like ``atomic_output``, for a folder of files: an empty temporary folder beside
    ``final_path`` is yielded, and on success it takes the final name; a folder (or
    file) already there is replaced only then. On any exception the temporary folder
    and its contents are removed."""
    return _atomic(final_path, Path.mkdir, _replace_with_folder,
                   lambda path: shutil.rmtree(path, ignore_errors=True))


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
