"""The Python API, and the README's examples run as written."""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT, decode_gray, decode_rgb, gpu_visible, mask_iou, mean_abs_error, rembg_mask
from trt_matte import Matter, MatteError


@pytest.fixture(scope="module")
def matter(u2netp_path, tmp_path_factory):
    home = tmp_path_factory.mktemp("rembg_home")
    shutil.copy(u2netp_path, home / "u2netp.onnx")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("U2NET_HOME", str(home))  # found in rembg's cache, never downloaded
        yield Matter(model="u2netp", device="cpu")


@pytest.fixture(scope="module")
def short_clip(ffmpeg_exe, carphone_path, tmp_path_factory):
    """The first 10 frames of the real clip: the model costs ~0.25 s a frame here."""
    clip = tmp_path_factory.mktemp("short") / "short.mp4"
    subprocess.run([ffmpeg_exe, "-v", "error", "-i", str(carphone_path), "-frames:v", "10", "-c:v", "libx264",
                    "-crf", "12", str(clip)], check=True)
    return clip


def test_mask_matches_rembg_for_pil_and_numpy(matter, rembg_session, ffmpeg_exe, carphone_path):
    frames = decode_rgb(ffmpeg_exe, carphone_path, frames=61)[::30]
    for frame in frames:
        from_numpy = matter.mask(frame)
        from_pil = matter.mask(Image.fromarray(frame))
        rgba = matter.mask(np.dstack([frame, np.full(frame.shape[:2], 255, np.uint8)]))
        assert from_numpy.shape == frame.shape[:2] and from_numpy.dtype == np.uint8
        assert np.array_equal(from_numpy, from_pil) and np.array_equal(from_numpy, rgba)
        reference = rembg_mask(rembg_session, frame)
        assert mask_iou(from_numpy, reference) >= 0.98
        assert mean_abs_error(from_numpy, reference) <= 2


def test_mask_rejects_other_arrays(matter):
    with pytest.raises(MatteError, match="uint8"):
        matter.mask(np.zeros((10, 10, 3), np.float32))


def test_frames_pairs_every_frame_with_its_mask(matter, ffmpeg_exe, short_clip, tmp_path):
    pairs = list(matter.frames(short_clip))
    source = decode_rgb(ffmpeg_exe, short_clip)
    assert [frame.shape for frame, _ in pairs] == [(144, 176, 3)] * 10
    for (frame, mask), expected in zip(pairs, source):
        assert np.array_equal(frame, expected)
        assert mask.shape == (144, 176)
    matte = decode_gray(ffmpeg_exe, matter.video(short_clip, tmp_path / "matte.mp4").output)
    assert np.mean([mask_iou(mask, matte[index]) for index, (_, mask) in enumerate(pairs)]) >= 0.97
    assert np.mean([mean_abs_error(mask, matte[index]) for index, (_, mask) in enumerate(pairs)]) <= 3


def readme_examples() -> list[str]:
    section = (REPO_ROOT / "README.md").read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_readme_examples_run(u2netp_path, ffmpeg_exe, carphone_path, short_clip, tmp_path, monkeypatch):
    examples = readme_examples()
    assert len(examples) >= 2
    home = tmp_path / "rembg_home"
    home.mkdir()
    shutil.copy(u2netp_path, home / "u2netp.onnx")
    monkeypatch.setenv("U2NET_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    shutil.copy(short_clip, tmp_path / "clip.mp4")
    (tmp_path / "photos").mkdir()
    Image.fromarray(decode_rgb(ffmpeg_exe, carphone_path, frames=1)[0]).save(tmp_path / "photos" / "portrait.png")
    namespace: dict = {}
    for example in examples:
        exec(compile(example, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert (tmp_path / "clip.matte.mp4").is_file()
    assert Image.open(tmp_path / "photos.masks" / "portrait.png").mode == "RGBA"


def test_leaving_a_matter_frees_the_backend_unless_a_stage_is_stuck(tiny_model, monkeypatch):
    from trt_matte.runtime.stages import StagesStuck

    closes = []
    with Matter(tiny_model, device="cpu") as matter:
        monkeypatch.setattr(matter.backend, "close", lambda: closes.append("closed"))
    assert closes == ["closed"]
    with pytest.raises(StagesStuck):
        with Matter(tiny_model, device="cpu") as matter:
            monkeypatch.setattr(matter.backend, "close", lambda: closes.append("closed under a stuck thread"))
            raise StagesStuck("the writer did not stop")
    assert closes == ["closed"]  # its memory stays for the process exit to free


@pytest.mark.parametrize("text, parsed", [("auto", ("auto", None)), ("cpu", ("cpu", None)), ("cuda", ("cuda", None)),
                                          ("cuda:0", ("cuda", 0)), ("cuda:12", ("cuda", 12))])
def test_devices_as_users_write_them(text, parsed):
    from trt_matte.api import parse_device
    assert parse_device(text) == parsed


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:one", "cpu:0", "cuda:-1", "cuda:1:2"])
def test_other_devices_are_one_line(text):
    from trt_matte.api import parse_device
    with pytest.raises(MatteError, match="--device takes auto, cpu, cuda or cuda:N"):
        parse_device(text)


def test_a_gpu_that_is_not_there_is_named_with_those_that_are(monkeypatch):
    from trt_matte import api
    monkeypatch.setattr(api.cuda, "runtime_api", lambda: None)  # as if cuda-python were installed
    monkeypatch.setattr(api, "gpu_names", lambda: ["NVIDIA A100-SXM4-40GB", "NVIDIA H100 80GB HBM3"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    api.check_gpu(1)
    with pytest.raises(MatteError) as missing:
        api.check_gpu(2)
    assert str(missing.value) == ("there is no GPU cuda:2 here: CUDA sees cuda:0 (NVIDIA A100-SXM4-40GB), "
                                  "cuda:1 (NVIDIA H100 80GB HBM3) (CUDA_VISIBLE_DEVICES=2,5)")


@pytest.mark.skipif(gpu_visible(), reason="a GPU is here: cuda:7 might exist")
def test_asking_for_a_gpu_on_a_machine_without_one_is_one_line_before_any_model(tmp_path, monkeypatch):
    pytest.importorskip("cuda.bindings", reason="GPUs are listed with cuda-python (the gpu and test-full extras)")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(MatteError, match=r"^there is no GPU cuda:7 here: CUDA sees no GPU$"):
        Matter(tmp_path / "never-read.onnx", device="cuda:7")
