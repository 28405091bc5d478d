"""The batch plan: inputs mirrored under the output folder, decided before any model loads."""
from __future__ import annotations

from pathlib import Path

import pytest

from trt_matte.batch.plan import IMAGE, VIDEO, listed_paths, plan_batch
from trt_matte.errors import MatteError


def _touch(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_files_and_folders_are_mirrored_under_the_output_folder(tmp_path):
    shoot = tmp_path / "shoot"
    _touch(shoot / "a.mp4", shoot / "b.JPG", shoot / "notes.txt", shoot / "day2" / "c.mov", tmp_path / "solo.mkv",
           tmp_path / "still.png")
    items = plan_batch([shoot, tmp_path / "solo.mkv", tmp_path / "still.png"], tmp_path / "out", recursive=True)
    assert [(item.target.as_posix(), item.kind) for item in items] == [
        ("shoot/a.matte.mp4", VIDEO), ("shoot/b.png", IMAGE), ("shoot/day2/c.matte.mp4", VIDEO),
        ("solo.matte.mp4", VIDEO), ("still.png", IMAGE)]
    shallow = plan_batch([shoot], tmp_path / "out", recursive=False)
    assert [item.target.as_posix() for item in shallow] == ["shoot/a.matte.mp4", "shoot/b.png"]


def test_an_output_folder_inside_an_input_folder_is_not_read(tmp_path):
    _touch(tmp_path / "in" / "a.mp4", tmp_path / "in" / "out" / "in" / "a.matte.mp4")
    items = plan_batch([tmp_path / "in"], tmp_path / "in" / "out", recursive=True)
    assert [item.source.name for item in items] == ["a.mp4"]


def test_two_inputs_with_one_output_fail_before_anything_runs(tmp_path):
    _touch(tmp_path / "one" / "a.jpg", tmp_path / "two" / "a.png")
    with pytest.raises(MatteError, match="would both write a.png"):
        plan_batch([tmp_path / "one" / "a.jpg", tmp_path / "two" / "a.png"], tmp_path / "out", recursive=False)
    # The same file named twice is matted once.
    items = plan_batch([tmp_path / "one" / "a.jpg", tmp_path / "one" / ".." / "one" / "a.jpg"], tmp_path / "out",
                       recursive=False)
    assert len(items) == 1


def test_missing_inputs_and_empty_folders_are_one_line_errors(tmp_path):
    with pytest.raises(MatteError, match="input not found"):
        plan_batch([tmp_path / "nope.mp4"], tmp_path / "out", recursive=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MatteError, match="no videos or images"):
        plan_batch([tmp_path / "empty"], tmp_path / "out", recursive=True)


def test_a_list_names_paths_relative_to_its_folder(tmp_path):
    listing = tmp_path / "lists" / "todo.txt"
    listing.parent.mkdir()
    listing.write_text("# the shoot\n../a.mp4\n\n  /abs/b.mp4  \n")
    assert listed_paths(listing) == [tmp_path / "lists" / ".." / "a.mp4", Path("/abs/b.mp4")]
    with pytest.raises(MatteError, match="cannot read the list"):
        listed_paths(tmp_path / "missing.txt")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(MatteError, match="not a text file"):
        listed_paths(binary)
