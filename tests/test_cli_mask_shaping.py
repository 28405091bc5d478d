"""Mask shaping from the command line, on a real clip and real pictures (U²-Net-p):
read back with ffmpeg and Pillow, compared frame by frame with the unshaped matte."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import decode_gray

CLI = [sys.executable, "-m", "trt_matte"]


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([*CLI, *args, "-q"], cwd=cwd, env=dict(os.environ), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def second_of_carphone(ffmpeg_exe, carphone_path, tmp_path_factory) -> Path:
    clip = tmp_path_factory.mktemp("shaping") / "carphone1s.mp4"
    subprocess.run([ffmpeg_exe, "-v", "error", "-i", str(carphone_path), "-t", "1", "-c:v", "libx264", "-crf", "10",
                    str(clip)], check=True)
    return clip


@pytest.fixture(scope="module")
def mattes(second_of_carphone, u2netp_path, ffmpeg_exe):
    """Each option's matte, decoded: name -> uint8 [N,H,W]."""
    options = {"plain": [], "threshold": ["--threshold", "128"], "erode": ["--erode", "3"],
               "dilate": ["--dilate", "3"], "feather": ["--threshold", "128", "--feather", "3", "--crf", "0"]}
    decoded = {}
    for name, extra in options.items():
        target = second_of_carphone.with_name(f"{name}.mp4")
        run_cli(["video", str(second_of_carphone), "-o", str(target), "--model", str(u2netp_path), *extra],
                second_of_carphone.parent)
        decoded[name] = decode_gray(ffmpeg_exe, target)
    return decoded


def foreground(masks: np.ndarray) -> np.ndarray:
    return (masks >= 128).sum(axis=(1, 2))


def test_threshold_writes_only_0_and_255(mattes):
    assert len(mattes["threshold"]) == len(mattes["plain"]) == 30
    assert set(np.unique(mattes["threshold"])) == {0, 255}
    # The same subject: the hard matte is the plain one cut at 128, up to x264's rounding of the plain one.
    agree = (mattes["threshold"] == 255) == (mattes["plain"] >= 128)
    assert agree.mean() >= 0.995


def test_erode_shrinks_and_dilate_grows_every_frame(mattes):
    assert (foreground(mattes["erode"]) < foreground(mattes["plain"])).all()
    assert (foreground(mattes["dilate"]) > foreground(mattes["plain"])).all()


def test_feather_adds_levels_only_near_the_edges(mattes):
    hard, feathered = mattes["threshold"] == 255, mattes["feather"]
    soft = (feathered > 0) & (feathered < 255)
    assert soft.mean() > 0.005
    near = np.zeros_like(hard)
    for dy in range(-3, 4):  # within 3 pixels of a pixel on the other side of the edge
        for dx in range(-3, 4):
            moved = np.roll(hard, (dy, dx), axis=(1, 2))
            near |= moved != hard
    assert not (soft & ~near).any()


def test_images_get_hard_masks_at_their_own_size(carphone_path, ffmpeg_exe, u2netp_path, tmp_path):
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for name, size in (("small.png", "176x144"), ("large.jpg", "640x480")):
        subprocess.run([ffmpeg_exe, "-v", "error", "-ss", "1", "-i", str(carphone_path), "-frames:v", "1", "-s", size,
                        str(pictures / name)], check=True)
    run_cli(["images", str(pictures), "--model", str(u2netp_path), "--threshold", "128", "--dilate", "2"], tmp_path)
    for name, size in (("small.png", (176, 144)), ("large.png", (640, 480))):
        mask = Image.open(tmp_path / "pictures.masks" / name)
        assert mask.size == size and set(np.unique(np.asarray(mask))) == {0, 255}
