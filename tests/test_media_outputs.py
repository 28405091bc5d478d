"""Deliverables beyond the matte (--output green|prores|webm|png): alpha equals the
matte, composites follow the formula, every output keeps the source's frames,
timestamps and audio, and failures leave nothing behind."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from conftest import (ExplodingBackend, ctrl_c_after_rename, decode_gray, decode_rgb, leftovers, make_clip, packet_times,
                      video_size, with_display_rotation)
from trt_matte.errors import MatteError
from trt_matte.media.probe import probe_video
from trt_matte.media.outputs import (Background, check_output_paths, output_paths, parse_background, parse_outputs,
                                     staged_outputs)
from trt_matte.media.encoder import MatteEncoder
from trt_matte.runtime.video import matte_video

ALL_KINDS = ["matte", "green", "prores", "webm", "png"]
# 25 fps for 10 frames, then 10 fps, then 50 fps, starting 2 s in (as in test_video).
VFR = "settb=1/1000,setpts='(if(lt(N,10),N*0.04,if(lt(N,20),0.4+(N-10)*0.1,1.4+(N-20)*0.02))+2)/TB'"
VFR_FRAMES = 30


def decode_alpha(ffmpeg: str, path: Path, decoder: tuple[str, ...] = ()) -> np.ndarray:
    """The alpha plane of every frame, uint8 [N,H,W]. ProRes's decoder hands out alpha as
    10 bits; it is rounded back to 8 here, since ffmpeg 5.1's alphaextract truncates it
    (one level low on about half the pixels, where 6.0 and later are exact)."""
    width, height = video_size(ffmpeg, path)
    if path.suffix == ".mov":
        out = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-fps_mode", "passthrough", "-f", "rawvideo",
                              "-pix_fmt", "yuva444p10le", "-"], capture_output=True, check=True)
        alpha = np.frombuffer(out.stdout, "<u2").reshape(-1, 4, height, width)[:, 3]
        return np.round(alpha * (255 / 1023)).astype(np.uint8)
    out = subprocess.run([ffmpeg, "-v", "error", *decoder, "-i", str(path), "-vf", "alphaextract",
                          "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                         capture_output=True, check=True)
    return np.frombuffer(out.stdout, np.uint8).reshape(-1, height, width)


def read_sequence(folder: Path) -> np.ndarray:
    names = sorted(name for name in os.listdir(folder) if name.endswith(".png"))
    assert names == [f"{index:06d}.png" for index in range(1, len(names) + 1)]
    frames = []
    for name in names:
        with Image.open(folder / name) as picture:
            assert picture.mode == "RGBA"
            frames.append(np.asarray(picture))
    return np.stack(frames)


def composite_error(ffmpeg: str, source: Path, matte: np.ndarray, green: Path,
                    backdrop: np.ndarray | list[np.ndarray], frames: list[int]) -> float:
    """Mean |green - (source*a + backdrop*(1-a))| over ``frames``, in 1/255 units;
    ``backdrop`` is one colour/picture, or one picture per frame."""
    pictures, shown = decode_rgb(ffmpeg, source).astype(np.float64), decode_rgb(ffmpeg, green).astype(np.float64)
    errors = []
    for index in frames:
        alpha = matte[index][..., None] / 255.0
        behind = backdrop[index] if isinstance(backdrop, list) else backdrop
        expected = pictures[index] * alpha + behind * (1 - alpha)
        errors.append(np.abs(shown[index] - expected).mean())
    return float(np.mean(errors))


def audio_span(path: Path) -> tuple[str, float]:
    """(codec, seconds from the first audio packet's start to the last one's end)."""
    with av.open(str(path)) as container:
        (stream,) = container.streams.audio
        packets = [packet for packet in container.demux(stream) if packet.size and packet.pts is not None]
        start = min(packet.pts for packet in packets)
        end = max(packet.pts + packet.duration for packet in packets)
        return stream.codec_context.name, float((end - start) * stream.time_base)


@pytest.fixture(scope="module")
def vfr_with_audio(ffmpeg_exe, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("vfr")
    video = make_clip(ffmpeg_exe, folder / "video.mp4", frames=VFR_FRAMES,
                      extra_output=["-vf", VFR, "-fps_mode", "passthrough", "-enc_time_base", "1:1000"])
    source = folder / "take.mkv"
    # -copyts keeps the 2 s start; the tone lasts as long as the video.
    subprocess.run([ffmpeg_exe, "-v", "error", "-copyts", "-i", str(video), "-f", "lavfi",
                    "-i", "sine=frequency=440:duration=1.6", "-map", "0:v", "-map", "1:a", "-c:v", "copy",
                    "-c:a", "aac", str(source)], check=True)
    return source


@pytest.fixture(scope="module")
def all_outputs(vfr_with_audio, tiny_backend) -> dict[str, Path]:
    """One run, every deliverable, lossless matte (crf 0) so alpha can be compared exactly."""
    result = matte_video(vfr_with_audio, None, tiny_backend, batch_size=4, progress=False, crf=0,
                         outputs=["matte,green", "prores", "webm", "png"])
    assert result.frames == VFR_FRAMES
    assert list(result.outputs) == ALL_KINDS
    return result.outputs


def test_default_names_beside_the_source(all_outputs, vfr_with_audio):
    folder = vfr_with_audio.parent
    assert {kind: path.name for kind, path in all_outputs.items()} == {
        "matte": "take.matte.mp4", "green": "take.green.mp4", "prores": "take.alpha.mov",
        "webm": "take.alpha.webm", "png": "take.png"}
    assert all(path.parent == folder and path.exists() for path in all_outputs.values())
    assert leftovers(folder) == []


def test_prores_and_png_alpha_equal_the_matte_exactly(ffmpeg_exe, all_outputs):
    matte = decode_gray(ffmpeg_exe, all_outputs["matte"])
    assert matte.shape == (VFR_FRAMES, 120, 160) and matte.std() > 20  # a real matte, not a constant
    with av.open(str(all_outputs["prores"])) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "prores" and stream.codec_context.codec_tag == "ap4h"
    # 8-bit ProRes alpha and PNG alpha are lossless: every level comes back as it was.
    assert np.array_equal(decode_alpha(ffmpeg_exe, all_outputs["prores"]), matte)
    assert np.array_equal(read_sequence(all_outputs["png"])[..., 3], matte)


def test_webm_alpha_is_close_to_the_matte(ffmpeg_exe, all_outputs):
    matte = decode_gray(ffmpeg_exe, all_outputs["matte"]).astype(np.int16)
    alpha = decode_alpha(ffmpeg_exe, all_outputs["webm"], decoder=("-c:v", "libvpx-vp9"))
    # Measured 1.3/255 on this detailed brightness matte (VP9 crf 30 is lossy).
    assert np.abs(alpha - matte).mean() <= 2.0
    # ffmpeg's native vp9 decoder ignores the alpha layer, as the README warns.
    with av.open(str(all_outputs["webm"])) as container:
        assert next(container.decode(video=0)).format.name == "yuv420p"


def test_pictures_match_the_source(ffmpeg_exe, vfr_with_audio, all_outputs):
    source = decode_rgb(ffmpeg_exe, vfr_with_audio).astype(np.int16)
    assert np.abs(read_sequence(all_outputs["png"])[..., :3] - source).mean() <= 1.0
    # ProRes and VP9 pictures: luma, since ffmpeg upsamples 4:2:0 chroma differently on
    # the way to 4:4:4 than on the way to RGB (4.5/255 apart on this sharp test pattern).
    source_luma = decode_gray(ffmpeg_exe, vfr_with_audio).astype(np.int16)
    for kind, limit in (("prores", 0.5), ("webm", 2.0)):  # measured 0.28 and 1.05
        assert np.abs(decode_gray(ffmpeg_exe, all_outputs[kind]) - source_luma).mean() <= limit, kind


def test_green_composite_follows_the_formula(ffmpeg_exe, vfr_with_audio, all_outputs):
    matte = decode_gray(ffmpeg_exe, all_outputs["matte"])
    error = composite_error(ffmpeg_exe, vfr_with_audio, matte, all_outputs["green"], np.array([0, 255, 0]),
                            frames=[0, 9, 15, 29])
    assert error <= 3.0  # measured 2.1/255 (x264 lossless here: the error is 4:2:0 chroma on sharp edges)


def test_frame_counts_and_timestamps_equal_the_source(ffmpeg_exe, vfr_with_audio, all_outputs):
    source_times = packet_times(vfr_with_audio)
    # The asset starts about 2 s in (ffmpeg 5.1's -copyts remux adds the audio's 23 ms lead).
    assert set(np.round(np.diff(source_times), 2)) == {0.02, 0.04, 0.1} and source_times[0] == pytest.approx(2.0,
                                                                                                            abs=0.03)
    for kind in ("matte", "green", "prores", "webm"):
        assert packet_times(all_outputs[kind]) == pytest.approx(source_times, abs=1e-6), kind
        assert len(decode_gray(ffmpeg_exe, all_outputs[kind])) == VFR_FRAMES, kind
    sequence = all_outputs["png"]
    assert len(read_sequence(sequence)) == VFR_FRAMES
    lines = (sequence / "timestamps.txt").read_text().splitlines()
    assert lines[0] == "# timestamp format v2"
    assert [float(line) / 1000 for line in lines[1:]] == pytest.approx(source_times, abs=1e-6)


def test_audio_is_kept_in_every_video_output(vfr_with_audio, all_outputs):
    codec, seconds = audio_span(vfr_with_audio)
    assert codec == "aac" and seconds == pytest.approx(1.6, abs=0.03)
    one_frame = 0.04
    for kind, expected_codec in [("matte", "aac"), ("green", "aac"), ("prores", "aac"), ("webm", "opus")]:
        codec, kept = audio_span(all_outputs[kind])
        assert codec == expected_codec, kind  # WebM cannot hold AAC: re-encoded to Opus
        assert kept == pytest.approx(seconds, abs=one_frame), kind


def test_no_audio_drops_it_everywhere(vfr_with_audio, tiny_backend, tmp_path):
    result = matte_video(vfr_with_audio, tmp_path, tiny_backend, progress=False, audio=False,
                         outputs=["matte", "green", "prores", "webm"])
    for kind, path in result.outputs.items():
        with av.open(str(path)) as container:
            assert not container.streams.audio, kind
    assert len(packet_times(result.outputs["webm"])) == VFR_FRAMES


def test_backgrounds_colour_picture_and_looping_video(ffmpeg_exe, tiny_backend, tmp_path):
    source = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", frames=12)
    matte = decode_gray(ffmpeg_exe, matte_video(source, tmp_path / "matte.mp4", tiny_backend, progress=False,
                                                crf=0).output)
    frames = [0, 5, 11]

    colour = matte_video(source, tmp_path / "magenta.mp4", tiny_backend, progress=False, outputs=["green"],
                         background="#FF00ff", audio=False)
    assert composite_error(ffmpeg_exe, source, matte, colour.output, np.array([255, 0, 255]), frames) <= 3.0

    # A wider picture covers the frame, centred: of four 80-px stripes (320x120 for a
    # 160x120 frame) the middle two show, the left and right ones are cropped away.
    stripes = np.zeros((120, 320, 3), np.uint8)
    for index, rgb in enumerate([(255, 0, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]):
        stripes[:, index * 80:(index + 1) * 80] = rgb
    Image.fromarray(stripes).save(tmp_path / "stripes.png")
    picture = matte_video(source, tmp_path / "picture.mp4", tiny_backend, progress=False, outputs=["green"],
                          background=str(tmp_path / "stripes.png"))
    assert composite_error(ffmpeg_exe, source, matte, picture.output, stripes[:, 80:240], frames) <= 3.0

    # A shorter background video loops: frame i shows background frame i % 5.
    backdrop = make_clip(ffmpeg_exe, tmp_path / "backdrop.mp4", frames=5, extra_input=["-ss", "3"])
    backdrop_frames = list(decode_rgb(ffmpeg_exe, backdrop).astype(np.float64))
    looped = matte_video(source, tmp_path / "looped.mp4", tiny_backend, progress=False, outputs=["green"],
                         background=str(backdrop))
    per_frame = [backdrop_frames[index % 5] for index in range(12)]
    assert composite_error(ffmpeg_exe, source, matte, looped.output, per_frame, frames) <= 3.0
    assert len(decode_gray(ffmpeg_exe, looped.output)) == 12


def test_full_size_masks_become_alpha_bit_for_bit(ffmpeg_exe, tmp_path):
    """The GPU path hands over finished full-size masks: every level must survive."""
    source = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", frames=6)
    masks = np.random.default_rng(7).integers(0, 256, (6, 120, 160), dtype=np.uint8)
    masks[0] = np.arange(120 * 160).reshape(120, 160) % 256  # every level at least once
    destinations = {"matte": tmp_path / "matte.mkv", "prores": tmp_path / "alpha.mov", "png": tmp_path / "frames"}
    destinations["png"].mkdir()
    encoder = MatteEncoder(destinations, probe_video(source), crf=0, full_size=True, source=source)
    try:
        encoder.write(masks)
        encoder.finish()
    finally:
        encoder.kill()
    assert np.array_equal(decode_gray(ffmpeg_exe, destinations["matte"]), masks)
    assert np.array_equal(decode_alpha(ffmpeg_exe, destinations["prores"]), masks)
    assert np.array_equal(read_sequence(destinations["png"])[..., 3], masks)


def test_rotated_source_lines_up(ffmpeg_exe, tiny_backend, tmp_path):
    upright = make_clip(ffmpeg_exe, tmp_path / "upright.mp4", size="160x96", frames=4)
    rotated = with_display_rotation(ffmpeg_exe, upright, tmp_path / "rotated.mp4", 90)
    result = matte_video(rotated, tmp_path, tiny_backend, progress=False, crf=0, outputs=["matte", "prores", "green"])
    shown = decode_rgb(ffmpeg_exe, rotated)  # as players show it: portrait
    matte = decode_gray(ffmpeg_exe, result.outputs["matte"])
    assert matte.shape[1:] == shown.shape[1:3] == (160, 96)
    assert np.array_equal(decode_alpha(ffmpeg_exe, result.outputs["prores"]), matte)
    shown_luma = decode_gray(ffmpeg_exe, rotated).astype(np.int16)
    assert np.abs(decode_gray(ffmpeg_exe, result.outputs["prores"]) - shown_luma).mean() <= 0.5
    assert composite_error(ffmpeg_exe, rotated, matte, result.outputs["green"], np.array([0, 255, 0]),
                           [0, 3]) <= 3.0


def test_odd_size(ffmpeg_exe, tiny_backend, tmp_path):
    source = make_clip(ffmpeg_exe, tmp_path / "odd.mp4", size="176x144", frames=4, pix_fmt="yuv444p",
                       extra_output=["-vf", "format=yuv444p,crop=175:143:0:0"])
    result = matte_video(source, tmp_path, tiny_backend, progress=False, outputs=["green", "prores", "webm", "png"])
    for kind in ("green", "prores", "webm"):
        assert video_size(ffmpeg_exe, result.outputs[kind]) == (175, 143), kind
    with av.open(str(result.outputs["green"])) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv444p"
    assert read_sequence(result.outputs["png"]).shape == (4, 143, 175, 4)


def test_failure_mid_run_leaves_nothing_and_keeps_previous_outputs(ffmpeg_exe, tiny_backend, tmp_path):
    source = make_clip(ffmpeg_exe, tmp_path / "clip.mp4", frames=20)
    (tmp_path / "clip.alpha.mov").write_bytes(b"previous result")
    (tmp_path / "clip.png").mkdir()
    (tmp_path / "clip.png" / "000001.png").write_bytes(b"previous frame")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(MatteError, match="simulated"):
        matte_video(source, None, ExplodingBackend(tiny_backend), progress=False, outputs=ALL_KINDS, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == before
    assert (tmp_path / "clip.alpha.mov").read_bytes() == b"previous result"
    assert os.listdir(tmp_path / "clip.png") == ["000001.png"]

    # Into new folders: those go too.
    with pytest.raises(MatteError, match="simulated"):
        matte_video(source, tmp_path / "new" / "sub", ExplodingBackend(tiny_backend), progress=False,
                    outputs=["green", "png"])
    assert sorted(os.listdir(tmp_path)) == before

    # Success replaces them (when asked to), folder included.
    matte_video(source, None, tiny_backend, progress=False, outputs=["prores", "png"], overwrite=True)
    assert len(read_sequence(tmp_path / "clip.png")) == 20
    assert len(decode_alpha(ffmpeg_exe, tmp_path / "clip.alpha.mov")) == 20
    assert leftovers(tmp_path) == []


def test_output_and_background_options():
    assert parse_outputs(None) == ("matte",)
    assert parse_outputs(["green,prores", "png", "green"]) == ("green", "prores", "png")
    assert parse_background(None, ["matte"]) is None
    assert parse_background(None, ["green"]) == Background(colour="0x00FF00")
    assert parse_background("#00ff00", ["green"]) == Background(colour="0x00FF00")
    for values, message in [(["matte,gif"], "unknown --format 'gif'"), (["out.mp4"], "with -o")]:
        with pytest.raises(MatteError, match=message):
            parse_outputs(values)
    for value, message in [("#12345", "#RRGGBB"), ("#GG0000", "#RRGGBB"), ("no-such.png", "no such file")]:
        with pytest.raises(MatteError, match=message):
            parse_background(value, ["green"])
    with pytest.raises(MatteError, match="green only"):
        parse_background("#000000", ["matte"])


def test_where_outputs_go(tmp_path):
    source = tmp_path / "clip.mp4"
    assert output_paths(source, None, ("png",)) == {"png": tmp_path / "clip.png"}
    assert output_paths(source, tmp_path / "frames", ("png",)) == {"png": tmp_path / "frames"}
    assert output_paths(source, tmp_path / "a.mov", ("prores",)) == {"prores": tmp_path / "a.mov"}
    assert output_paths(source, tmp_path / "new", ("matte", "webm")) == {
        "matte": tmp_path / "new" / "clip.matte.mp4", "webm": tmp_path / "new" / "clip.alpha.webm"}
    with pytest.raises(MatteError, match="give a folder"):
        output_paths(source, tmp_path / "out.mp4", ("matte", "green"))
    (tmp_path / "takes.mp4").mkdir()  # a folder, whatever its name
    assert output_paths(source, tmp_path / "takes.mp4", ("matte", "green"))["green"].parent == tmp_path / "takes.mp4"
    with pytest.raises(MatteError, match="written as .mov"):
        check_output_paths(source, {"prores": tmp_path / "alpha.mp4"})


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trt_matte", *args], cwd=cwd, env=dict(os.environ),
                          capture_output=True, text=True, timeout=120)


def test_cli_takes_formats_comma_separated_and_repeated(ffmpeg_exe, tiny_model, tmp_path):
    make_clip(ffmpeg_exe, tmp_path / "IN.mp4", frames=8)
    result = run_cli(["video", "IN.mp4", "--format", "png", "--format", "webm,prores", "--output", "out", "-q",
                      "--model", str(tiny_model)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert sorted(os.listdir(tmp_path / "out")) == ["IN.alpha.mov", "IN.alpha.webm", "IN.png"]
    for name in ("IN.alpha.mov", "IN.alpha.webm"):
        assert len(packet_times(tmp_path / "out" / name)) == 8
    assert len(list((tmp_path / "out" / "IN.png").glob("*.png"))) == 8


def test_cli_bad_background_fails_first_with_one_line(ffmpeg_exe, tmp_path):
    """Before probing the input or loading a model (both absent here), nothing made."""
    (tmp_path / "notes.txt").write_text("not a picture\n")
    for args, mentions in [(["--format", "green", "--background", "notes.txt"], "notes.txt"),
                           (["--format", "green,png", "--background", "#12"], "#RRGGBB"),
                           (["--format", "matte", "--background", "blue"], "green only"),
                           (["--format", "out.mp4"], "-o")]:
        result = run_cli(["video", "missing.mp4", *args, "--model", "absent.onnx"], cwd=tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1, result.stderr
        assert lines[0].startswith("trt-matte: error:") and mentions in lines[0], lines[0]
        assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_the_old_output_kind_spelling_still_works_with_a_note(ffmpeg_exe, tiny_model, tmp_path):
    """Before 0.2 ``--output`` named the kinds; a value made only of kinds is still read so."""
    make_clip(ffmpeg_exe, tmp_path / "IN.mp4", frames=4)
    result = run_cli(["video", "IN.mp4", "--output", "prores", "--model", str(tiny_model)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "trt-matte: note: --output prores is now written --format prores" in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["IN.alpha.mov", "IN.mp4"]
    result = run_cli(["video", "IN.mp4", "--output", "mine.mp4", "-q", "--model", str(tiny_model)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(packet_times(tmp_path / "mine.mp4")) == 4  # any other value is where the matte goes


def test_a_ctrl_c_while_the_outputs_take_their_names_leaves_all_of_them(tmp_path, monkeypatch, ctrl_c_raises):
    """The matte and the PNG folder of one source are renamed one after the other: a
    Ctrl-C landing between the two renames takes effect after the second."""
    targets = {"matte": tmp_path / "out" / "clip.matte.mp4", "png": tmp_path / "out" / "clip.png"}
    renamed = ctrl_c_after_rename(monkeypatch, after=1)
    with pytest.raises(KeyboardInterrupt):
        with staged_outputs(targets) as staging:
            staging.partial["matte"].write_bytes(b"stamped matte")
            (staging.encoded["png"] / "000001.png").write_bytes(b"frame")
    assert len(renamed) == 2
    assert sorted(os.listdir(tmp_path / "out")) == ["clip.matte.mp4", "clip.png"]
    assert targets["matte"].read_bytes() == b"stamped matte"
    assert os.listdir(targets["png"]) == ["000001.png"]
