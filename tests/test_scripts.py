"""The benchmark scripts' own logic on the CPU: the shared frame-by-frame peer, and the
GPU check's behaviour where there is no GPU. (Their GPU stages run only on a GPU.)"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import decode_rgb, gpu_visible, make_clip, mean_abs_error, rembg_mask

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))

from bench_cpu import peer_matte, peer_session, run_peer  # noqa: E402
from gpu_check import Report, classify_skips, final_verdict, steps_list  # noqa: E402


@pytest.mark.skipif(gpu_visible(), reason="a machine with a GPU runs the whole check instead")
def test_gpu_check_without_a_gpu_says_so_in_one_line():
    """No GPU: exit 2 and one line. Without cuda-bindings (the light test extra) the check
    cannot even ask CUDA: exit 1 and one line naming the package."""
    import importlib.util
    done = subprocess.run([sys.executable, str(SCRIPTS / "gpu_check.py")], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    if importlib.util.find_spec("cuda") is None or importlib.util.find_spec("cuda.bindings") is None:
        assert done.returncode == 1 and "cuda-bindings" in done.stderr
    else:
        assert done.returncode == 2 and done.stderr.startswith("gpu_check: CUDA sees no GPU")


def test_gpu_check_steps_are_validated():
    assert steps_list("bench, accuracy") == ("bench", "accuracy")
    with pytest.raises(Exception, match="comma list"):
        steps_list("tests,benchmarks")


def test_a_run_whose_targets_were_not_measured_does_not_pass(tmp_path, capsys):
    report = Report(debug=False, json_path=tmp_path / "check.json", config={})
    report.add("1 gpu", "PASS", "a GPU")
    assert final_verdict(report, ("tests",)) == 0  # no benchmark asked for: nothing missing
    assert final_verdict(report, ("bench",)) == 1
    assert "e2e / slowest not measured; e2e / frame-by-frame not measured -> INCOMPLETE" in capsys.readouterr().out
    assert '"status": "PASS"' in (tmp_path / "check.json").read_text()  # saved after the step


def test_the_peer_encodes_every_frame_it_reads(tmp_path, ffmpeg_exe, tiny_model):
    clip = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", size="160x120", frames=12)
    session, input_name = peer_session(str(tiny_model), ["CPUExecutionProvider"], 1)
    frames, seconds = run_peer(session, input_name, clip, 160, 120, "25", tmp_path / "peer.mp4", frames=5)
    assert frames == 5 and seconds > 0
    assert decode_rgb(ffmpeg_exe, tmp_path / "peer.mp4").shape == (5, 120, 160, 3)


def test_the_peer_computes_rembgs_masks(rembg_session, u2netp_path, ffmpeg_exe, carphone_path):
    session, input_name = peer_session(str(u2netp_path), ["CPUExecutionProvider"], None)
    for frame in decode_rgb(ffmpeg_exe, carphone_path, frames=31)[::15]:
        ours = peer_matte(session, input_name, frame)
        theirs = rembg_mask(rembg_session, frame)
        assert ours.shape == theirs.shape and mean_abs_error(ours, theirs) <= 0.5


def test_the_gpu_tests_step_cannot_pass_by_skipping():
    lines = [
        "SKIPPED [3] tests/conftest.py:31: needs /x/models/u2netp.onnx (the real U²-Net-p weights; set "
        "TRT_MATTE_SHARED)",
        "SKIPPED [1] tests/test_runtime_gpu_images.py:19: could not import 'nvidia.dali': No module named 'nvidia'",
        "SKIPPED [4] tests/test_gpu.py:22: could not import 'tensorrt': No module named 'tensorrt'",
        "SKIPPED [1] tests/test_gpu.py:111: needs onnxruntime-gpu",
        "12 passed, 9 skipped in 80.12s",
    ]
    fatal, tensorrt, optional = classify_skips(lines)
    assert [line.split(":")[0] for line in fatal] == ["[3] tests/conftest.py", "[1] tests/test_runtime_gpu_images.py"]
    assert len(tensorrt) == 1 and "tensorrt" in tensorrt[0]
    assert optional == ["[1] tests/test_gpu.py:111: needs onnxruntime-gpu"]


def test_without_tensorrt_the_check_is_incomplete_not_passed(tmp_path, capsys):
    report = Report(debug=False, json_path=None, config={})
    report.add("1 gpu", "PASS", "a GPU")
    assert final_verdict(report, ("tests",), tensorrt=False) == 1
    assert "INCOMPLETE: TensorRT is not installed" in capsys.readouterr().out


def test_the_precision_studys_clips_split_the_person_and_add_subjectless_ones(tmp_path, ffmpeg_exe):
    from precision_study import PATTERN_FRAMES, PATTERNS, make_clips
    source = make_clip(ffmpeg_exe, tmp_path / "person.mp4", size="160x120", frames=21)
    clips = make_clips(source, tmp_path)
    frames = {name: len(decode_rgb(ffmpeg_exe, path)) for name, path in clips.items()}
    assert frames["first half"] == 10 and frames["second half"] == 11
    assert frames["crowd"] == frames["small"] == 21
    assert all(frames[name] == PATTERN_FRAMES for name in PATTERNS)
    assert decode_rgb(ffmpeg_exe, clips["crowd"], frames=1).shape == (1, 240, 320, 3)
