"""Output files that appear complete or not at all."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import MatteError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(final_path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final_path``; rename it into place on success.

    The temporary name keeps the real suffix (ffmpeg picks the muxer from it) and
    sits in the destination directory, so the final rename never crosses devices.
    On any exception, Ctrl-C included, the temporary file is removed.
    """
    final_path = Path(final_path)
    try:
        final_path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{final_path.stem}.",
                                             suffix=f".partial{final_path.suffix}", dir=final_path.parent)
    except OSError as exc:
        raise MatteError(f"cannot write {final_path}: {exc.strerror or exc}") from None
    os.close(handle)
    temp_path = Path(temp_name)
    # mkstemp creates 0600; published files get the permissions the user's umask gives.
    temp_path.chmod(0o666 & ~_current_umask())
    try:
        yield temp_path
        os.replace(temp_path, final_path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(final_path: Path, data: bytes) -> None:
    with atomic_output(final_path) as temp_path:
        temp_path.write_bytes(data)
