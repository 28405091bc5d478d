"""What a batch will do, worked out before any model is loaded: every input file, whether
it is a video or an image, and where its output goes under the output folder.

Inputs are files, folders (their files; with ``recursive`` their sub-folders' too) and
the lines of ``--from-list`` files (one path per line, relative to the list's folder;
blank lines and ``#`` comments are passed over). A file given by name is an image when
its suffix is an image's and a video otherwise (a file that is neither fails when its
turn comes, with the reason); in folders, only files with an image or video suffix count.

Outputs mirror the inputs under the output folder: a file ``clip.mp4`` given by name
becomes ``OUT/clip.matte.mp4``, a folder ``shoot/`` becomes ``OUT/shoot/...`` with its
tree; an image's output is its mask (or cutout) PNG. Two inputs that would write the same
output are an error before anything runs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import MatteError
from ..media.outputs import MATTE, default_path
from ..media.pictures import IMAGE_SUFFIXES, files_below
from ..runtime.images import MASK_SUFFIX

VIDEO = "video"
IMAGE = "image"
# Suffixes a folder's videos are recognised by (files named on the command line need none).
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts",
                            ".m2ts", ".flv", ".wmv", ".3gp", ".ogv", ".mxf", ".y4m"})


@dataclass(frozen=True)
class BatchItem:
    source: Path
    target: Path
    kind: str  # VIDEO or IMAGE

    @property
    def name(self) -> str:
        """The output's path below the output folder: the report's key."""
        return self.target.as_posix()


def listed_paths(list_file: Path) -> list[Path]:
    """The paths a ``--from-list`` file names, relative ones taken from its folder."""
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise MatteError(f"cannot read the list {list_file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise MatteError(f"{list_file} is not a text file of paths, one per line") from None
    entries = (line.strip() for line in lines)
    return [list_file.parent / entry for entry in entries if entry and not entry.startswith("#")]


def plan_batch(inputs: Sequence[Path], output_dir: Path, recursive: bool) -> list[BatchItem]:
    """Every input's outputs, relative to ``output_dir``; a one-line MatteError for a
    missing input, an empty batch, or two inputs with one output."""
    items: list[BatchItem] = []
    for given in inputs:
        if not given.exists():
            raise MatteError(f"input not found: {given}")
        if given.is_dir():
            items += _folder_items(given, output_dir, recursive)
        else:
            items.append(BatchItem(given, _target(given, Path(given.name)), _kind(given)))
    if not items:
        raise MatteError("no videos or images to matte in the inputs given")
    return _unique(items)


def _folder_items(folder: Path, output_dir: Path, recursive: bool) -> list[BatchItem]:
    base = Path(os.path.abspath(folder)).name
    return [BatchItem(path, _target(path, Path(base, path.relative_to(folder))), _kind(path))
            for path in files_below(folder, output_dir, recursive)
            if path.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES]


def _kind(path: Path) -> str:
    return IMAGE if path.suffix.lower() in IMAGE_SUFFIXES else VIDEO


def _target(source: Path, mirrored: Path) -> Path:
    """The output below the output folder: the matte's default name for a video, the
    mask's for an image, where ``mirrored`` (the input's path as mirrored) sits."""
    if _kind(source) == IMAGE:
        return mirrored.with_suffix(MASK_SUFFIX)
    return mirrored.parent / default_path(source, MATTE).name


def _unique(items: list[BatchItem]) -> list[BatchItem]:
    """The items once each (a file named twice is matted once); two files with one output
    are an error."""
    owners: dict[Path, BatchItem] = {}
    for item in items:
        earlier = owners.setdefault(item.target, item)
        if earlier.source.resolve() != item.source.resolve():
            raise MatteError(f"{earlier.source} and {item.source} would both write {item.target}; "
                             "rename one, or give their folders instead")
    return list(owners.values())
