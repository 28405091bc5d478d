"""A batch on one machine, on real files: good outputs equal single runs, broken inputs
are reported and the rest still run, and a second run resumes rather than redoes."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import decode_gray, make_clip, mean_abs_error
from trt_matte import Matter
from trt_matte.batch.local import DONE, FAILED, REPORT_NAME, SKIPPED, run_batch
from trt_matte.batch.plan import plan_batch

OPTIONS = {"model": "tiny", "precision": "auto", "stretch_floor": 0.0, "crf": 18, "audio": True, "smooth": 0,
           "cutout": False}


@pytest.fixture
def inputs(ffmpeg_exe, synthetic_frames, tmp_path):
    """Two clips (one in a sub-folder), two pictures, and three broken files."""
    shoot = tmp_path / "shoot"
    (shoot / "day2").mkdir(parents=True)
    make_clip(ffmpeg_exe, shoot / "a.mp4", size="160x120", frames=12)
    make_clip(ffmpeg_exe, shoot / "day2" / "b.mkv", size="96x72", frames=7)
    Image.fromarray(synthetic_frames[0]).save(shoot / "p.png")
    Image.fromarray(synthetic_frames[3]).save(shoot / "day2" / "q.jpg")
    (shoot / "broken.mp4").write_bytes(b"not a video at all")
    (shoot / "broken.png").write_bytes(b"not a picture")
    truncated = (shoot / "a.mp4").read_bytes()
    (shoot / "cut.mp4").write_bytes(truncated[:len(truncated) // 3])
    return shoot


@pytest.fixture(scope="module")
def matter(tiny_model):
    with Matter(tiny_model, backend="onnxruntime", device="cpu") as opened:
        yield opened


def _statuses(report):
    return {name: outcome.status for name, outcome in report.outcomes.items()}


def test_a_mixed_batch_writes_every_good_output_and_reports_every_broken_one(ffmpeg_exe, inputs, matter, tmp_path):
    out = tmp_path / "out"
    report = run_batch(plan_batch([inputs], out, recursive=True), out, matter, OPTIONS, progress=False)
    assert _statuses(report) == {
        "shoot/a.matte.mp4": DONE, "shoot/day2/b.matte.mp4": DONE, "shoot/p.png": DONE, "shoot/day2/q.png": DONE,
        "shoot/broken.matte.mp4": FAILED, "shoot/broken.png": FAILED, "shoot/cut.matte.mp4": FAILED}
    reasons = dict(report.failures())
    assert "not a readable video" in reasons[str(inputs / "broken.mp4")]
    assert "not a readable image" in reasons[str(inputs / "broken.png")]
    assert reasons[str(inputs / "cut.mp4")]  # named, in one line
    assert all("\n" not in reason for reason in reasons.values())
    # The same masks as single runs of the same model.
    single = matter.video(inputs / "a.mp4", tmp_path / "single.mp4", crf=OPTIONS["crf"])
    assert single.frames == 12 == report.outcomes["shoot/a.matte.mp4"].frames
    assert mean_abs_error(decode_gray(ffmpeg_exe, out / "shoot" / "a.matte.mp4"),
                          decode_gray(ffmpeg_exe, single.output)) == 0
    folder = matter.images(inputs, tmp_path / "single-images", recursive=True)
    assert folder.processed == 2
    for name in ("p.png", "day2/q.png"):
        np.testing.assert_array_equal(np.asarray(Image.open(out / "shoot" / name)),
                                      np.asarray(Image.open(tmp_path / "single-images" / name)))
    stored = json.loads((out / REPORT_NAME).read_text())
    assert stored["outputs"]["shoot/a.matte.mp4"]["options"] == OPTIONS
    assert sorted(path.name for path in out.rglob("*") if path.is_file()) == \
        sorted(["a.matte.mp4", "b.matte.mp4", "p.png", "q.png", REPORT_NAME])  # nothing half-written


def test_a_second_run_skips_what_is_done_and_redoes_what_changed(inputs, matter, tmp_path):
    out = tmp_path / "out"
    items = plan_batch([inputs], out, recursive=True)
    run_batch(items, out, matter, OPTIONS, progress=False)
    again = run_batch(items, out, matter, OPTIONS, progress=False)
    assert again.count(SKIPPED) == 4 and again.count(DONE) == 0 and again.count(FAILED) == 3
    # An output cut short since, and options that changed, are made again.
    (out / "shoot" / "p.png").write_bytes((out / "shoot" / "p.png").read_bytes()[:100])
    redone = run_batch(items, out, matter, OPTIONS, progress=False)
    assert _statuses(redone)["shoot/p.png"] == DONE and redone.count(SKIPPED) == 3
    other = run_batch(items, out, matter, {**OPTIONS, "crf": 30}, progress=False)
    assert other.count(DONE) == 4 and other.count(SKIPPED) == 0
    forced = run_batch(items, out, matter, {**OPTIONS, "crf": 30}, overwrite=True, progress=False)
    assert forced.count(DONE) == 4


def test_an_output_no_batch_made_is_kept_and_named(inputs, matter, tmp_path):
    out = tmp_path / "out"
    (out / "shoot").mkdir(parents=True)
    (out / "shoot" / "p.png").write_bytes(b"the user's own file")
    report = run_batch(plan_batch([inputs / "p.png"], out / "shoot", recursive=False), out / "shoot", matter,
                       OPTIONS, progress=False)
    assert report.failures() == [(str(inputs / "p.png"), f"{out / 'shoot' / 'p.png'} exists and no batch made it "
                                                         "(--overwrite replaces it)")]
    assert (out / "shoot" / "p.png").read_bytes() == b"the user's own file"


def test_the_cli_sums_up_and_fails_when_an_input_failed(inputs, tiny_model, tmp_path):
    listing = tmp_path / "todo.txt"
    listing.write_text(f"# two good, one broken\n{inputs / 'a.mp4'}\n{inputs / 'broken.mp4'}\n")
    command = [sys.executable, "-m", "trt_matte", "batch", str(inputs / "p.png"), "--from-list", str(listing),
               "-o", str(tmp_path / "out"), "--model", str(tiny_model), "--backend", "onnxruntime"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "batch: 2 done, 0 skipped (made before with these options), 1 failed" in done.stderr
    assert f"failed {inputs / 'broken.mp4'}: " in done.stderr
    good = subprocess.run([*command[:5], "-o", str(tmp_path / "out"), "--model", str(tiny_model),
                           "--backend", "onnxruntime", "-q"], capture_output=True, text=True, timeout=300)
    assert good.returncode == 0 and good.stderr == ""


def _stop_after(monkeypatch, method: str, calls: int) -> None:
    """Matter.<method> as the batch calls it, with a Ctrl-C landing as call ``calls``
    returns: its outputs have taken their names (a Ctrl-C held through the renames is
    raised then), but the batch has not recorded them."""
    real = getattr(Matter, method)
    made = []

    def then_ctrl_c(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        made.append(result)
        if len(made) == calls:
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(Matter, method, then_ctrl_c)


@pytest.mark.parametrize("method", ["video", "image_jobs"])
def test_outputs_in_place_when_the_batch_stopped_are_recorded_and_the_next_run_skips_them(inputs, matter, tmp_path,
                                                                                         monkeypatch, method):
    out = tmp_path / "out"
    items = plan_batch([inputs / "a.mp4", inputs / "p.png", inputs / "day2" / "q.jpg"], out, recursive=False)
    stopped_on = [item.name for item in items if (item.kind == "video") == (method == "video")]
    _stop_after(monkeypatch, method, calls=1)
    with pytest.raises(KeyboardInterrupt):
        run_batch(items, out, matter, OPTIONS, progress=False)
    made = [item.name for item in items if (out / item.name).exists()]  # the images go first
    assert set(stopped_on) <= set(made)
    stored = json.loads((out / REPORT_NAME).read_text())["outputs"]
    assert {name: record["status"] for name, record in stored.items()} == {name: DONE for name in made}
    assert all(stored[name]["bytes"] == (out / name).stat().st_size for name in made)
    monkeypatch.undo()
    again = run_batch(items, out, matter, OPTIONS, progress=False)
    assert _statuses(again) == {item.name: SKIPPED if item.name in made else DONE for item in items}


def test_a_batch_stopped_before_it_remade_an_output_keeps_that_output_s_record(inputs, matter, tmp_path,
                                                                              monkeypatch):
    """New options remake every output; stopped after the first, the second is still the
    old options' output, and the next run remakes it rather than refusing it as not the
    batch's own."""
    out = tmp_path / "out"
    items = plan_batch([inputs / "a.mp4", inputs / "day2" / "b.mkv"], out, recursive=False)
    run_batch(items, out, matter, OPTIONS, progress=False)
    changed = {**OPTIONS, "crf": 30}
    _stop_after(monkeypatch, "video", calls=1)
    with pytest.raises(KeyboardInterrupt):
        run_batch(items, out, matter, changed, progress=False)
    stored = json.loads((out / REPORT_NAME).read_text())["outputs"]
    assert [stored[item.name]["options"]["crf"] for item in items] == [30, 18]
    monkeypatch.undo()
    again = run_batch(items, out, matter, changed, progress=False)
    assert _statuses(again) == {items[0].name: SKIPPED, items[1].name: DONE}
